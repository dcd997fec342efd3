"""Replay caches, security headers, the sandbox profile and what the log must never hold."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid

import jwt
import pytest
from werkzeug import Response

from cds_service import create_app
from cds_service.auth import SANDBOX_ISS, SANDBOX_KID, AuthError, MemoryReplayCache, RedisReplayCache, sandbox_issuer
from cds_service.services.patient_view import SERVICE_ID
from tests.jwt_helpers import ISS, token

from .conftest import BASE, assert_bare_401, bearer, claims, raw_token, secure_config

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN = "redis://127.0.0.1:1/0"


def test_memory_replay_cache():
    c = MemoryReplayCache()
    jti = str(uuid.uuid4())
    assert c.first_use(ISS, jti, 60) is True
    assert c.first_use(ISS, jti, 60) is False
    assert c.first_use("https://other.example", jti, 60) is True  # per issuer


@pytest.fixture()
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        msg = f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__})"
        if os.environ.get("CDS_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return REDIS_URL


def test_redis_replay_cache_is_shared(redis_url):
    a, b = RedisReplayCache(redis_url), RedisReplayCache(redis_url)
    jti = str(uuid.uuid4())
    assert a.first_use(ISS, jti, 60) is True
    assert b.first_use(ISS, jti, 60) is False
    assert a.first_use(ISS, jti, 60) is False


def test_redis_replay_keys_expire(redis_url):
    c = RedisReplayCache(redis_url)
    jti = str(uuid.uuid4())
    assert c.first_use(ISS, jti, 1) is True
    assert c.first_use(ISS, jti, 1) is False
    time.sleep(1.5)
    assert c.first_use(ISS, jti, 1) is True


def test_redis_replay_through_two_apps(redis_url, trust_file, ec):
    """Two workers sharing Redis: a token used on one is refused on the other."""
    one = create_app(secure_config(trust_file, redis_url=redis_url)).test_client()
    two = create_app(secure_config(trust_file, redis_url=redis_url)).test_client()
    tok = token(ec, BASE + "/cds-services")
    assert one.get("/cds-services", headers=bearer(tok)).status_code == 200
    assert_bare_401(two.get("/cds-services", headers=bearer(tok)))


def test_redis_down_fails_closed():
    c = RedisReplayCache(DOWN)
    with pytest.raises(AuthError) as exc:
        c.first_use(ISS, "x", 10)
    assert "replay cache unavailable" in exc.value.reason


def test_redis_down_through_the_app_is_401(trust_file, ec):
    client = create_app(secure_config(trust_file, redis_url=DOWN)).test_client()
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, BASE + "/cds-services"))))


# ---- security headers ----

def check_headers(resp, hsts: bool):
    h = resp.headers
    assert h.get("X-Content-Type-Options") == "nosniff"
    assert h.get("Cache-Control") == "no-store"
    assert h.get("X-Frame-Options") == "DENY"
    assert h.get("Content-Security-Policy")
    assert ("Strict-Transport-Security" in h) is hsts


@pytest.mark.parametrize("base,hsts", [(BASE, False), ("https://cds.example.org", True), ("http://cds.example.org", False)])
def test_security_headers_everywhere(trust_file, ec, base, hsts):
    client = create_app(secure_config(trust_file, public_base_url=base)).test_client()
    root = base or BASE
    ok = client.get("/cds-services", headers=bearer(token(ec, root + "/cds-services")))
    assert ok.status_code == 200
    unauth = client.get("/cds-services")
    assert unauth.status_code == 401
    url = "/cds-services/no-such-service"
    missing = client.post(url, data="{}", content_type="application/json", headers=bearer(token(ec, root + url)))
    assert missing.status_code == 404 and missing.get_json()["resourceType"] == "OperationOutcome"
    health = client.get("/healthz")
    assert health.status_code == 200
    for resp in (ok, unauth, missing, health):
        check_headers(resp, hsts)


# ---- sandbox profile ----

SANDBOX_TOKEN = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6IjQ0ODIzZjNkLTBiMDEtNGE2Yy1hODBlLWI5ZDNlOGE3MjI2ZiIsImprdSI6Imh0dHBz"
    "Oi8vc2FuZGJveC5jZHMtaG9va3Mub3JnLy53ZWxsLWtub3duL2p3a3MuanNvbiJ9.eyJpc3MiOiJodHRwczovL3NhbmRib3guY2RzLWhvb2tzLm"
    "9yZyIsImF1ZCI6Imh0dHA6Ly8xMjcuMC4wLjE6ODAwMC9jZHMtc2VydmljZXMiLCJleHAiOjE1OTQyMzA5MDAsImlhdCI6MTU5NDIzMDYwMCwian"
    "RpIjoiZWZiMzc3M2QtM2EyOC00M2UyLTlmYmMtYjkzNmE5YWUzODhiIn0.Cbey3n5NkDRoCLHZ2WMFc1z_RY8Rlq5oGxdAYfbrBPMiJXLCwjbYoU0"
    "av2CQj-Olhbnpe7Vs8vzJ5oHP5gc2-0ooc5J49t4Uz9iYKpiM9KLUrqaJe0umc_klM2-ynHAI")


def test_sandbox_key_verifies_the_public_sandbox_token():
    app = create_app({"auth_disabled": False, "sandbox_issuer": True, "trusted_issuers_file": "",
                      "public_base_url": "http://127.0.0.1:8000", "fhir_server_allowlist": "",
                      "allow_http_fhir": False})
    issuer = app.extensions["cds_auth"].trust.issuers[SANDBOX_ISS]
    [jwk] = [k for k in issuer.jwks["keys"] if k.get("kid") == SANDBOX_KID]
    key = jwt.PyJWK(jwk, algorithm="ES384")
    claims = jwt.decode(SANDBOX_TOKEN, key.key, algorithms=["ES384"],
                        options={"verify_exp": False, "verify_aud": False})
    assert claims["iss"] == SANDBOX_ISS and claims["aud"] == "http://127.0.0.1:8000/cds-services"
    # a flipped signature byte does not verify: the check above is real
    bad = SANDBOX_TOKEN[:-6] + ("A" if SANDBOX_TOKEN[-6] != "A" else "B") + SANDBOX_TOKEN[-5:]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(bad, key.key, algorithms=["ES384"], options={"verify_exp": False, "verify_aud": False})
    assert sandbox_issuer().jwks == issuer.jwks


def test_sandbox_token_through_the_service_is_expired(caplog):
    caplog.set_level(logging.WARNING, logger="cds_service.api")
    app = create_app({"auth_disabled": False, "sandbox_issuer": True, "trusted_issuers_file": "",
                      "public_base_url": "http://127.0.0.1:8000", "fhir_server_allowlist": "",
                      "allow_http_fhir": False})
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(SANDBOX_TOKEN)))
    assert any("expired" in r.getMessage() for r in caplog.records)


def test_sandbox_not_trusted_unless_configured(trust_file, caplog):
    caplog.set_level(logging.WARNING, logger="cds_service.api")
    app = create_app(secure_config(trust_file, public_base_url="http://127.0.0.1:8000"))
    assert SANDBOX_ISS not in app.extensions["cds_auth"].trust.issuers
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(SANDBOX_TOKEN)))
    assert any("unknown issuer" in r.getMessage() for r in caplog.records)


# ---- logs ----

def test_tokens_never_logged(caplog, trust_file, ec, scenario_request, httpserver):
    caplog.set_level(logging.DEBUG)
    access = "access-token-SECRET-5f2a9b"
    body = scenario_request(1)
    pid = body["context"]["patientId"]
    patient = body["prefetch"].pop("patient")
    httpserver.expect_request(f"/fhir/Patient/{pid}").respond_with_handler(
        lambda r: Response(json.dumps(patient), content_type="application/fhir+json"))
    body["fhirServer"] = httpserver.url_for("/fhir")
    body["fhirAuthorization"] = {"access_token": access, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    app = create_app(secure_config(trust_file, fhir_server_allowlist=httpserver.url_for("/fhir"),
                                   allow_http_fhir=True, log_level="DEBUG"))
    client = app.test_client()
    expired = token(ec, BASE + SERVICE_URL, claims={"iat": int(time.time()) - 100, "exp": int(time.time()) - 50})
    assert_bare_401(client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json",
                                headers=bearer(expired)))
    good = token(ec, BASE + SERVICE_URL)
    resp = client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json", headers=bearer(good))
    app.extensions["cds_engine"].close()
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [(req, _)] = httpserver.log
    assert req.headers.get("Authorization") == f"Bearer {access}"
    messages = [r.getMessage() for r in caplog.records]
    assert messages
    for m in messages:
        for secret in (expired, good, access, expired.split(".")[2], good.split(".")[2]):
            assert secret not in m, m
    fails = [m for m in messages if "auth failed" in m]
    assert len(fails) == 1 and "expired" in fails[0]
    assert any("status=200" in m for m in messages)


def test_urllib3_request_lines_are_not_logged_even_at_debug():
    """urllib3 logs each request line at DEBUG, and a FHIR search URL carries the patient's id."""
    import logging

    from cds_service import logs

    logs.configure("DEBUG", "json")
    try:
        assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    finally:
        logs.configure("WARNING", "json")


def test_refusal_metrics_name_the_kind_of_failure_not_what_was_sent(secure_client, ec):
    """The algorithm a caller names is quoted in the log, never made a metrics label value."""
    from cds_service import metrics

    before = {s.labels["reason"] for m in metrics.JWT_FAILURES.collect() for s in m.samples}
    tok = raw_token({"alg": "a'1\"b", "typ": "JWT", "kid": ec.kid}, claims(BASE + "/cds-services"), ec)
    assert secure_client.get("/cds-services", headers=bearer(tok)).status_code == 401
    after = {s.labels["reason"] for m in metrics.JWT_FAILURES.collect() for s in m.samples}
    assert "algorithm not allowed" in after
    assert not any("a'1" in r or "b\"" in r for r in after - before)
