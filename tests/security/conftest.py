"""Security-test fixtures: an app with authentication on, trusted test keys, token helpers."""
from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from cds_service import create_app
from tests.jwt_helpers import ISS, TestKey, ec_key, issuers_file, rsa_key

ORIGIN = "https://sandbox.cds-hooks.org"
BASE = "http://localhost"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: TestKey | None) -> str:
    """A JWT built by hand (so that headers PyJWT would refuse, e.g. kid null, can be made)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    if key is None:
        return signing_input + "."
    alg = jwt.algorithms.get_default_algorithms()[key.alg]
    return signing_input + "." + b64url(alg.sign(signing_input.encode(), key.private))


def claims(aud: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    c.update(over)
    return c


def secure_config(path: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"auth_disabled": False, "trusted_issuers_file": str(path), "fhir_server_allowlist": "",
                           "allow_http_fhir": False, "sandbox_issuer": False, "public_base_url": BASE,
                           "redis_url": "", "cors_origins": ORIGIN, "hook_deadline": 5.0}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def ec():
    return ec_key("ec-1")


@pytest.fixture(scope="session")
def rsa():
    return rsa_key("rsa-1")


@pytest.fixture()
def trust_file(tmp_path, ec, rsa):
    return issuers_file(tmp_path / "issuers.json",
                        [{"iss": ISS, "jwks": {"keys": [ec.public_jwk(), rsa.public_jwk()]}}])


@pytest.fixture()
def secure_app(trust_file):
    app = create_app(secure_config(trust_file))
    yield app
    app.extensions["cds_engine"].close()


@pytest.fixture()
def secure_client(secure_app):
    return secure_app.test_client()


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def assert_bare_401(resp) -> None:
    assert resp.status_code == 401, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.get_data() == b""
    assert resp.headers.get("WWW-Authenticate") == "Bearer"
