"""Client authentication (CDS Hooks 2.0 "Trusting CDS Clients") through the Flask test client."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from cds_service import create_app
from cds_service.auth import ConfigurationError
from cds_service.services.patient_view import SERVICE_ID
from tests.jwt_helpers import ISS, ec_key, issuers_file, token

from .conftest import BASE, ORIGIN, assert_bare_401, b64url, bearer, claims, raw_token, secure_config

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
DISCOVERY_AUD = BASE + "/cds-services"
SERVICE_AUD = BASE + SERVICE_URL


def post(client, body, headers=None, url=SERVICE_URL):
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=headers or {})


# ---- valid tokens ----

@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_valid_token_discovery_200(secure_client, request, which):
    key = request.getfixturevalue(which)
    resp = secure_client.get("/cds-services", headers=bearer(token(key, DISCOVERY_AUD)))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["services"]


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_valid_token_service_call_200(secure_client, request, which, scenario_request):
    key = request.getfixturevalue(which)
    resp = post(secure_client, scenario_request(1), bearer(token(key, SERVICE_AUD)))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["cards"]


def test_unknown_service_without_token_is_401(secure_client, scenario_request):
    assert_bare_401(post(secure_client, scenario_request(1), url="/cds-services/no-such-service"))


def test_unknown_service_with_token_is_404(secure_client, ec, scenario_request):
    url = "/cds-services/no-such-service"
    resp = post(secure_client, scenario_request(1), bearer(token(ec, BASE + url)), url=url)
    assert resp.status_code == 404


# ---- refusals: each a bare 401 ----

def hs256_with_public_pem(key, aud):
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims(aud)).encode())
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def refusals():
    """name → function(ec, rsa) returning the Authorization header value (or None)."""
    aud = DISCOVERY_AUD
    other = ec_key("ec-1")  # same kid, different key

    def now() -> int:  # read when the token is made, not when the module is collected
        return int(time.time())

    return {
        "no header": lambda ec, rsa: None,
        "bearer garbage": lambda ec, rsa: "Bearer not.a.jwt",
        "bearer empty": lambda ec, rsa: "Bearer ",
        "basic": lambda ec, rsa: "Basic dXNlcjpwYXNz",
        "token without Bearer": lambda ec, rsa: token(ec, aud),
        "alg none": lambda ec, rsa: "Bearer " + raw_token({"alg": "none", "typ": "JWT", "kid": ec.kid},
                                                          claims(aud), None),
        "HS256 with public key PEM (ec)": lambda ec, rsa: "Bearer " + hs256_with_public_pem(ec, aud),
        "HS256 with public key PEM (rsa)": lambda ec, rsa: "Bearer " + hs256_with_public_pem(rsa, aud),
        "alg not configured (ES512)": lambda ec, rsa: "Bearer " + raw_token(
            {"alg": "ES512", "typ": "JWT", "kid": ec.kid}, claims(aud), None) + "AAAA",
        "unknown kid": lambda ec, rsa: "Bearer " + token(ec, aud, header={"kid": "nope"}),
        "unknown iss": lambda ec, rsa: "Bearer " + token(ec, aud, iss="https://evil.example"),
        "jku not allowed": lambda ec, rsa: "Bearer " + token(ec, aud, header={"jku": "https://evil.example/jwks"}),
        "wrong aud": lambda ec, rsa: "Bearer " + token(ec, "http://localhost/cds-services/other"),
        "aud without path": lambda ec, rsa: "Bearer " + token(ec, BASE),
        "aud other host": lambda ec, rsa: "Bearer " + token(ec, "http://evil.example/cds-services"),
        "expired": lambda ec, rsa: "Bearer " + token(ec, aud, claims={"iat": now() - 200, "exp": now() - 100}),
        "iat in the future": lambda ec, rsa: "Bearer " + token(ec, aud, claims={"iat": now() + 120,
                                                                                  "exp": now() + 400}),
        "iat older than 5 minutes": lambda ec, rsa: "Bearer " + token(ec, aud, claims={"iat": now() - 400,
                                                                                         "exp": now() + 100}),
        "missing jti": lambda ec, rsa: "Bearer " + token(ec, aud, drop=("jti",)),
        "empty jti": lambda ec, rsa: "Bearer " + token(ec, aud, claims={"jti": ""}),
        "missing exp": lambda ec, rsa: "Bearer " + token(ec, aud, drop=("exp",)),
        "missing iat": lambda ec, rsa: "Bearer " + token(ec, aud, drop=("iat",)),
        "missing aud": lambda ec, rsa: "Bearer " + token(ec, aud, drop=("aud",)),
        "bad signature": lambda ec, rsa: "Bearer " + token(other, aud),
        "tampered payload": lambda ec, rsa: "Bearer " + _tamper(token(ec, aud)),
        "typ missing": lambda ec, rsa: "Bearer " + token(ec, aud, header={"typ": None}),
        "typ wrong": lambda ec, rsa: "Bearer " + token(ec, aud, header={"typ": "at+jwt"}),
        "kid missing": lambda ec, rsa: "Bearer " + raw_token({"alg": "ES384", "typ": "JWT"}, claims(aud), ec),
        "kid null": lambda ec, rsa: "Bearer " + raw_token({"alg": "ES384", "typ": "JWT", "kid": None},
                                                          claims(aud), ec),
        "rsa kid with ES384 alg": lambda ec, rsa: "Bearer " + raw_token(
            {"alg": "ES384", "typ": "JWT", "kid": rsa.kid}, claims(aud), ec),
    }


def _tamper(tok: str) -> str:
    h, p, s = tok.split(".")
    payload = json.loads(jwt.utils.base64url_decode(p))
    payload["sub"] = "admin"
    return h + "." + b64url(json.dumps(payload).encode()) + "." + s


REFUSALS = refusals()
REASONS = {
    "no header": "no Bearer token", "basic": "no Bearer token", "token without Bearer": "no Bearer token",
    "bearer garbage": "malformed token", "alg none": "algorithm 'none' not allowed",
    "HS256 with public key PEM (ec)": "algorithm 'HS256' not allowed",
    "HS256 with public key PEM (rsa)": "algorithm 'HS256' not allowed",
    "alg not configured (ES512)": "algorithm 'ES512' not allowed",
    "unknown kid": "unknown kid", "unknown iss": "unknown issuer", "jku not allowed": "jku not allowed",
    "wrong aud": "wrong audience", "aud without path": "wrong audience", "aud other host": "wrong audience",
    "expired": "expired", "iat in the future": "issued in the future", "iat older than 5 minutes": "token too old",
    "missing jti": "missing claim jti", "empty jti": "missing claim jti", "missing exp": "missing claim exp",
    "missing iat": "missing claim iat", "missing aud": "missing claim aud", "bad signature": "bad signature",
    "tampered payload": "bad signature", "typ missing": "typ is not JWT", "typ wrong": "typ is not JWT",
    "kid missing": "no kid", "kid null": "malformed token",  # PyJWT refuses a non-string kid while parsing
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_with_bare_401(secure_client, ec, rsa, name, caplog):
    caplog.set_level(logging.WARNING, logger="cds_service.api")
    value = REFUSALS[name](ec, rsa)
    headers = {"Authorization": value} if value is not None else {}
    assert_bare_401(secure_client.get("/cds-services", headers=headers))
    lines = [r.getMessage() for r in caplog.records if "auth failed" in r.getMessage()]
    assert len(lines) == 1, lines
    if name in REASONS:
        assert REASONS[name] in lines[0], lines[0]


def test_refused_on_service_call_too(secure_client, ec, scenario_request):
    assert_bare_401(post(secure_client, scenario_request(1), bearer(token(ec, DISCOVERY_AUD))))  # aud of another path
    assert_bare_401(post(secure_client, scenario_request(1)))


def test_controls_the_refusal_cases_pass_when_fixed(secure_client, ec, rsa):
    """The same builders with the defect removed are accepted: the 401s above are for the defect."""
    aud = DISCOVERY_AUD
    assert secure_client.get("/cds-services", headers=bearer(raw_token(
        {"alg": "ES384", "typ": "JWT", "kid": ec.kid}, claims(aud), ec))).status_code == 200
    assert secure_client.get("/cds-services", headers=bearer(token(ec, aud, header={"jku": None}))).status_code in (200,)
    assert secure_client.get("/cds-services", headers=bearer(token(rsa, aud, header={"typ": "jwt"}))).status_code == 200


def test_replayed_jti_is_401(secure_client, ec):
    tok = token(ec, DISCOVERY_AUD)
    assert secure_client.get("/cds-services", headers=bearer(tok)).status_code == 200
    assert_bare_401(secure_client.get("/cds-services", headers=bearer(tok)))
    # the same jti from the same issuer in a new token is still a replay
    jti = jwt.decode(tok, options={"verify_signature": False})["jti"]
    assert_bare_401(secure_client.get("/cds-services", headers=bearer(token(ec, DISCOVERY_AUD,
                                                                             claims={"jti": jti}))))


def test_hs256_in_configuration_refuses_to_start(trust_file):
    with pytest.raises(ConfigurationError):
        create_app(secure_config(trust_file, jwt_algorithms="ES384,HS256"))
    with pytest.raises(ConfigurationError):
        create_app(secure_config(trust_file, jwt_algorithms="none"))


def test_hmac_or_private_key_in_issuers_file_refuses_to_start(tmp_path, ec):
    oct_file = issuers_file(tmp_path / "a.json", [{"iss": ISS, "jwks": {"keys": [
        {"kty": "oct", "k": b64url(b"secretsecretsecretsecret"), "kid": "h"}]}}])
    with pytest.raises(ConfigurationError):
        create_app(secure_config(oct_file))
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.private))
    priv_file = issuers_file(tmp_path / "b.json", [{"iss": ISS, "jwks": {"keys": [private]}}])
    with pytest.raises(ConfigurationError):
        create_app(secure_config(priv_file))
    http_jku = issuers_file(tmp_path / "c.json", [{"iss": ISS, "jku": "http://127.0.0.1/jwks.json"}])
    with pytest.raises(ConfigurationError):
        create_app(secure_config(http_jku))


def test_tenant_allowlist(tmp_path, ec):
    path = issuers_file(tmp_path / "t.json", [{"iss": ISS, "jwks": {"keys": [ec.public_jwk()]}}],
                        tenants=["tenant-a"])
    client = create_app(secure_config(path)).test_client()
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, DISCOVERY_AUD,
                                                                       claims={"tenant": "tenant-b"}))))
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, DISCOVERY_AUD))))
    ok = client.get("/cds-services", headers=bearer(token(ec, DISCOVERY_AUD, claims={"tenant": "tenant-a"})))
    assert ok.status_code == 200


@pytest.mark.parametrize("tenant", [["tenant-a"], {"id": "tenant-a"}, 7])
def test_a_tenant_claim_that_is_not_a_string_is_a_bare_401(tmp_path, ec, tenant):
    """A signed token whose tenant is a list or object was a 500 (unhashable in the allowlist)."""
    path = issuers_file(tmp_path / "t.json", [{"iss": ISS, "jwks": {"keys": [ec.public_jwk()]}}],
                        tenants=["tenant-a"])
    client = create_app(secure_config(path)).test_client()
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, DISCOVERY_AUD, claims={"tenant": tenant}))))


def test_a_jti_is_remembered_only_while_its_token_could_be_accepted(secure_client, ec):
    """A signed exp far in the future must not pin its jti in the replay cache for ever: the entry
    lasts until the token is too old by iat (max age plus clock skew)."""
    seen: list[int] = []
    auth = secure_client.application.extensions["cds_auth"]
    first_use = auth.replay.first_use
    auth.replay.first_use = lambda iss, jti, ttl: seen.append(ttl) or first_use(iss, jti, ttl)
    tok = token(ec, DISCOVERY_AUD, claims={"exp": int(time.time()) + 10**9})
    assert secure_client.get("/cds-services", headers=bearer(tok)).status_code == 200
    assert seen and seen[0] <= auth.max_age + 2 * auth.skew + 1


def test_token_within_clock_skew_passes(secure_client, ec):
    now = int(time.time())
    tok = token(ec, DISCOVERY_AUD, claims={"iat": now + 10, "exp": now + 300})
    assert secure_client.get("/cds-services", headers=bearer(tok)).status_code == 200


# ---- open endpoints, CORS ----

def test_cors_preflight_needs_no_token(secure_client):
    resp = secure_client.options(SERVICE_URL, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code != 401
    assert resp.status_code < 300
    assert resp.headers.get("Access-Control-Allow-Origin") == ORIGIN


def test_healthz_needs_no_token(secure_client):
    resp = secure_client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_401_to_allowed_origin_carries_cors_header(secure_client):
    resp = secure_client.get("/cds-services", headers={"Origin": ORIGIN})
    assert_bare_401(resp)
    assert resp.headers.get("Access-Control-Allow-Origin") == ORIGIN


def test_401_to_other_origin_has_no_cors_header(secure_client):
    resp = secure_client.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert_bare_401(resp)
    assert "Access-Control-Allow-Origin" not in resp.headers


# ---- public_base_url ----

def test_public_base_url_sets_the_audience(trust_file, ec):
    client = create_app(secure_config(trust_file, public_base_url="https://cds.example.org/base")).test_client()
    ok = client.get("/cds-services", headers=bearer(token(ec, "https://cds.example.org/base/cds-services")))
    assert ok.status_code == 200
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, "http://localhost/cds-services"))))
    assert_bare_401(client.get("/cds-services", headers=bearer(token(ec, "https://cds.example.org/cds-services"))))


def test_public_base_url_trailing_slash(trust_file, ec):
    client = create_app(secure_config(trust_file, public_base_url="https://cds.example.org/base/")).test_client()
    ok = client.get("/cds-services", headers=bearer(token(ec, "https://cds.example.org/base/cds-services")))
    assert ok.status_code == 200


def test_auth_on_without_public_base_url_refuses_to_start(trust_file):
    """aud taken from the Host header would let a token minted for another service through."""
    from cds_service.config import ConfigError

    with pytest.raises(ConfigError, match="^CDS_PUBLIC_BASE_URL"):
        create_app(secure_config(trust_file, public_base_url=""))
    with pytest.raises(ConfigError, match="^CDS_PUBLIC_BASE_URL"):
        create_app({"auth_disabled": False, "sandbox_issuer": True})
    create_app({"auth_disabled": True, "public_base_url": ""})  # development: authentication off


def test_host_header_does_not_choose_the_audience(trust_file, ec):
    client = create_app(secure_config(trust_file, public_base_url="https://cds.example.org")).test_client()
    other = token(ec, "https://other-service.example/cds-services")
    assert_bare_401(client.get("/cds-services", headers={**bearer(other), "Host": "other-service.example"},
                               base_url="https://other-service.example"))


def test_serve_without_public_base_url_exits_2(tmp_path, trust_file):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_TRUSTED_ISSUERS_FILE"] = str(trust_file)
    out = subprocess.run([exe, "serve", "--port", "1"], capture_output=True, text=True, timeout=60, env=env,
                         cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "CDS_PUBLIC_BASE_URL" in out.stderr and "Traceback" not in out.stderr


# ---- auth disabled ----

def test_auth_disabled_warns_and_serves_without_token(caplog):
    caplog.set_level(logging.WARNING)
    app = create_app({"auth_disabled": True})
    assert any("AUTHENTICATION IS OFF" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert app.test_client().get("/cds-services").status_code == 200


def test_auth_enabled_does_not_warn_auth_off(caplog, trust_file):
    caplog.set_level(logging.WARNING)
    create_app(secure_config(trust_file))
    assert not any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)
