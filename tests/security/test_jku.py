"""Issuer keys fetched from an allowed jku URL over HTTPS (a private CA), cached, refetched on rotation."""
from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_mod
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pytest_httpserver import HTTPServer
from werkzeug import Response

from cds_service import create_app
from tests.jwt_helpers import ISS, ec_key, issuers_file, token

from .conftest import BASE, assert_bare_401, bearer, secure_config

AUD = BASE + "/cds-services"


def self_signed(tmp_path):
    key = ec_mod.generate_private_key(ec_mod.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(ski, False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture()
def tls(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=ctx, threaded=True)
    server.start()
    server.ca = str(cert)
    server.release = threading.Event()
    yield server
    server.release.set()
    server.clear()
    server.stop()


class Jwks:
    def __init__(self, keys):
        self.keys = keys

    def __call__(self, request):
        return Response(json.dumps({"keys": [k.public_jwk() for k in self.keys]}), content_type="application/json")


def jku_app(tmp_path, tls, **over):
    jku = tls.url_for("/jwks.json")
    assert jku.startswith("https://127.0.0.1:")
    path = issuers_file(tmp_path / "jku.json", [{"iss": ISS, "jku": jku}])
    cfg = secure_config(path, jku_ca_bundle=tls.ca)
    cfg.update(over)
    return create_app(cfg), jku


def jwks_requests(tls):
    return [r for r, _ in tls.log if r.path == "/jwks.json"]


def test_jku_token_passes_and_jwks_is_cached(tmp_path, tls):
    key = ec_key("jku-1")
    tls.expect_request("/jwks.json").respond_with_handler(Jwks([key]))
    app, jku = jku_app(tmp_path, tls)
    client = app.test_client()
    assert client.get("/cds-services", headers=bearer(token(key, AUD))).status_code == 200
    assert client.get("/cds-services", headers=bearer(token(key, AUD, header={"jku": jku}))).status_code == 200
    assert len(jwks_requests(tls)) == 1


def test_jku_without_ca_bundle_is_refused(tmp_path, tls):
    key = ec_key("jku-1")
    tls.expect_request("/jwks.json").respond_with_handler(Jwks([key]))
    app, _ = jku_app(tmp_path, tls, jku_ca_bundle="")
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(token(key, AUD))))


def test_jku_rotation_refetches_on_unknown_kid(tmp_path, tls):
    old, new = ec_key("jku-old"), ec_key("jku-new")
    handler = Jwks([old])
    tls.expect_request("/jwks.json").respond_with_handler(handler)
    app, jku = jku_app(tmp_path, tls)
    client = app.test_client()
    assert client.get("/cds-services", headers=bearer(token(old, AUD))).status_code == 200
    handler.keys = [new]
    cache = app.extensions["cds_auth"].jwks_cache
    # within min_refetch an unknown kid does not make the service fetch again (no fetch flood)
    assert_bare_401(client.get("/cds-services", headers=bearer(token(new, AUD))))
    assert len(jwks_requests(tls)) == 1
    # once min_refetch has passed, an unknown kid refetches the rotated set
    fetched_at, data = cache._cache[jku]
    cache._cache[jku] = (fetched_at - cache.min_refetch - 1, data)
    assert client.get("/cds-services", headers=bearer(token(new, AUD))).status_code == 200
    assert len(jwks_requests(tls)) == 2
    assert_bare_401(client.get("/cds-services", headers=bearer(token(old, AUD))))


def test_jku_500_is_401(tmp_path, tls):
    tls.expect_request("/jwks.json").respond_with_data("boom", status=500)
    app, _ = jku_app(tmp_path, tls)
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(token(ec_key("k"), AUD))))
    assert len(jwks_requests(tls)) == 1


def test_jku_timeout_is_401(tmp_path, tls):
    key = ec_key("slow")

    def slow(request):
        tls.release.wait(3)
        return Jwks([key])(request)

    tls.expect_request("/jwks.json").respond_with_handler(slow)
    app, _ = jku_app(tmp_path, tls, jku_timeout=0.5)
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(token(key, AUD))))


def test_jku_redirect_is_not_followed(tmp_path, tls):
    key = ec_key("r")
    tls.expect_request("/jwks.json").respond_with_data("", status=302, headers={"Location": "/other.json"})
    tls.expect_request("/other.json").respond_with_handler(Jwks([key]))
    app, _ = jku_app(tmp_path, tls)
    assert_bare_401(app.test_client().get("/cds-services", headers=bearer(token(key, AUD))))
    assert [r.path for r, _ in tls.log] == ["/jwks.json"]


class Switch:
    """A jku handler whose answer the test changes: HTTP 500, or the key set; optionally slow."""

    def __init__(self, keys, fail=True, delay=0.0):
        self.keys, self.fail, self.delay = keys, fail, delay

    def __call__(self, request):
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            return Response("boom", status=500)
        return Jwks(self.keys)(request)


def test_failing_jku_is_fetched_once_within_its_backoff(tmp_path, tls):
    key = ec_key("bo-1")
    handler = Switch([key])
    tls.expect_request("/jwks.json").respond_with_handler(handler)
    app, jku = jku_app(tmp_path, tls)
    client = app.test_client()
    for _ in range(6):  # bad tokens, one after the other: one request to the failing server
        assert_bare_401(client.get("/cds-services", headers=bearer(token(key, AUD))))
    assert len(jwks_requests(tls)) == 1
    cache = app.extensions["cds_auth"].jwks_cache
    until, delay = cache._failures[jku]
    assert delay == cache.backoff_min == 5.0
    # the back-off over: fetched again; a second failure doubles it
    cache._failures[jku] = (0.0, delay)
    assert_bare_401(client.get("/cds-services", headers=bearer(token(key, AUD))))
    assert len(jwks_requests(tls)) == 2
    assert cache._failures[jku][1] == 10.0
    cache._failures[jku] = (0.0, cache.backoff_max)
    assert_bare_401(client.get("/cds-services", headers=bearer(token(key, AUD))))
    assert cache._failures[jku][1] == cache.backoff_max  # capped (5 min)
    # the server recovers: once the back-off is over, a fetch succeeds and the failures are forgotten
    handler.fail = False
    cache._failures[jku] = (0.0, cache._failures[jku][1])
    assert client.get("/cds-services", headers=bearer(token(key, AUD))).status_code == 200
    assert jku not in cache._failures
    assert len(jwks_requests(tls)) == 4


@pytest.mark.parametrize("fail", [False, True])
def test_concurrent_callers_share_one_fetch(tmp_path, tls, fail):
    key = ec_key("cc-1")
    tls.expect_request("/jwks.json").respond_with_handler(Switch([key], fail=fail, delay=0.5))
    app, _ = jku_app(tmp_path, tls)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def call():
        client = app.test_client()
        tok = token(key, AUD)
        barrier.wait(10)
        statuses.append(client.get("/cds-services", headers=bearer(tok)).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [401 if fail else 200] * 8
    assert len(jwks_requests(tls)) == 1
