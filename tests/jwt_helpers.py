"""Test-only signing keys (generated per test session, never stored) and CDS client JWTs."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://ehr.test.example"


@dataclass
class TestKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[self.alg].to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


def ec_key(kid: str = "ec-1") -> TestKey:
    return TestKey(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def rsa_key(kid: str = "rsa-1") -> TestKey:
    return TestKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def issuers_file(path: Path, issuers: list[dict[str, Any]], tenants: list[str] | None = None) -> Path:
    data: dict[str, Any] = {"issuers": issuers}
    if tenants is not None:
        data["tenants"] = tenants
    path.write_text(json.dumps(data))
    return path


def token(key: TestKey, aud: str, *, iss: str = ISS, header: dict[str, Any] | None = None,
          claims: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iss": iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    payload.update(claims or {})
    for name in drop:
        payload.pop(name, None)
    head = {"typ": "JWT", "kid": key.kid}
    head.update(header or {})
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=head)
