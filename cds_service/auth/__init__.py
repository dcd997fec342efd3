"""Authentication of the CDS client (CDS Hooks 2.0, "Trusting CDS Clients").

The EHR signs a short-lived JWT with its private key; the service checks it against the keys of
the issuers it is configured to trust (a static JWK Set, or an allowed ``jku`` URL fetched over
HTTPS and cached). Only asymmetric algorithms are accepted; ``none`` and HMAC never are, whatever
the configuration says. Crypto is PyJWT's and cryptography's.

A failure raises AuthError with a reason for the log; the client gets a bare 401.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import jwt
import requests

log = logging.getLogger("cds_service.auth")

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
ASYMMETRIC = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
MAX_TOKEN_AGE = 300  # CDS Hooks: tokens are short-lived; none older than 5 minutes


class AuthError(Exception):
    """``reason`` is for the log; ``label`` names the kind of failure for the metrics, from a fixed
    set (a reason may quote what the caller sent, which must not become a label value)."""

    def __init__(self, reason: str, iss: str | None = None, jti: str | None = None, label: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.label = label or reason
        self.iss = iss
        self.jti = jti


class ConfigurationError(Exception):
    pass


@dataclass
class Issuer:
    iss: str
    jwks: dict[str, Any] | None = None
    jku: str | None = None
    fhir_servers: list[str] = field(default_factory=list)


@dataclass
class Trust:
    issuers: dict[str, Issuer]
    tenants: set[str] | None = None


def sandbox_issuer() -> Issuer:
    jwks = json.loads(resources.files("cds_service.auth").joinpath("sandbox-jwks.json").read_text())
    return Issuer(SANDBOX_ISS, jwks={"keys": jwks["keys"]}, jku=SANDBOX_JKU)


def load_trust(path: str | None, sandbox: bool) -> Trust:
    """The trusted issuers file: {"issuers": [{"iss", "jwks" | "jku", "fhir_servers"?}], "tenants"?}."""
    issuers: dict[str, Issuer] = {}
    tenants = None
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("issuers"), list):
            raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {path}: needs an \"issuers\" array")
        for i, e in enumerate(data["issuers"]):
            where = f"CDS_TRUSTED_ISSUERS_FILE {path}: issuers[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("iss"), str) or not e["iss"]:
                raise ConfigurationError(f"{where}: needs an \"iss\"")
            jwks, jku = e.get("jwks"), e.get("jku")
            if jwks is None and jku is None:
                raise ConfigurationError(f"{where}: needs \"jwks\" or \"jku\"")
            if jwks is not None:
                if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
                    raise ConfigurationError(f"{where}: \"jwks\" must be a JWK Set with \"keys\"")
                for key in jwks["keys"]:
                    try:
                        jwt.PyJWK(key)
                    except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError) as exc:
                        raise ConfigurationError(f"{where}: a key cannot be read ({exc})") from None
                    if key.get("kty") == "oct" or "d" in key:
                        raise ConfigurationError(f"{where}: only public asymmetric keys may be configured")
            if jku is not None and (not isinstance(jku, str) or not jku.startswith("https://")):
                raise ConfigurationError(f"{where}: \"jku\" must be an https URL")
            fhir = e.get("fhir_servers", [])
            if not isinstance(fhir, list) or not all(isinstance(x, str) for x in fhir):
                raise ConfigurationError(f"{where}: \"fhir_servers\" must be a list of URL prefixes")
            issuers[e["iss"]] = Issuer(e["iss"], jwks, jku, list(fhir))
        t = data.get("tenants")
        if t is not None:
            if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
                raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {path}: \"tenants\" must be a list of strings")
            tenants = set(t)
    if sandbox and SANDBOX_ISS not in issuers:
        issuers[SANDBOX_ISS] = sandbox_issuer()
    return Trust(issuers, tenants)


class JwksCache:
    """JWK Sets fetched from allowed ``jku`` URLs over HTTPS, cached; an unknown kid refetches once
    (key rotation), at most every ``min_refetch`` seconds per URL.

    A URL whose fetch failed is not fetched again until its back-off has passed (``backoff_min``
    seconds, doubling on each further failure up to ``backoff_max``, forgotten on a success): tokens
    that name it meanwhile are refused without a request, so bad tokens cannot make the service
    hammer a failing key server. One fetch at a time per URL: concurrent callers wait for it (at
    most the fetch timeout, then they are refused) and use its result."""

    def __init__(self, ttl: float, timeout: float, min_refetch: float = 30.0, session: requests.Session | None = None,
                 backoff_min: float = 5.0, backoff_max: float = 300.0):
        self.ttl = ttl
        self.timeout = timeout
        self.min_refetch = min_refetch
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.session = session or requests.Session()
        self.session.trust_env = False
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        # url -> (monotonic time before which it is not fetched again, the back-off that set it)
        self._failures: dict[str, tuple[float, float]] = {}
        self._url_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _fetch(self, url: str) -> dict[str, Any]:
        try:
            r = self.session.get(url, timeout=self.timeout, allow_redirects=False,
                                 headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise AuthError(f"jku could not be fetched ({type(exc).__name__})",
                            label="jku could not be fetched") from None
        if r.status_code != 200:
            raise AuthError(f"jku answered HTTP {r.status_code}", label="jku answered an error")
        try:
            data = r.json()
        except ValueError:
            raise AuthError("jku did not return JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise AuthError("jku did not return a JWK Set")
        return data

    def _usable(self, url: str, kid: str, now: float) -> dict[str, Any] | None:
        """The cached set when it serves (fresh, and it has the kid or was fetched too recently to
        fetch again); raises while the URL is in back-off. Called under self._lock."""
        cached = self._cache.get(url)
        if cached and now - cached[0] < self.ttl and (_find(cached[1], kid) or now - cached[0] < self.min_refetch):
            return cached[1]
        failed = self._failures.get(url)
        if failed and now < failed[0]:
            raise AuthError(f"jku failed recently; not fetched again for {failed[0] - now:.0f} s",
                            label="jku in back-off")
        return None

    def keys(self, url: str, kid: str) -> dict[str, Any]:
        with self._lock:
            data = self._usable(url, kid, time.monotonic())
            if data is not None:
                return data
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        if not url_lock.acquire(timeout=self.timeout + 1):
            raise AuthError("jku fetch in progress", label="jku fetch in progress")
        try:
            now = time.monotonic()
            with self._lock:  # another caller's fetch may have just answered (or failed)
                data = self._usable(url, kid, now)
            if data is not None:
                return data
            try:
                data = self._fetch(url)
            except AuthError:
                with self._lock:
                    prev = self._failures.get(url)
                    delay = min(prev[1] * 2, self.backoff_max) if prev else self.backoff_min
                    self._failures[url] = (time.monotonic() + delay, delay)
                log.warning("jku fetch failed; not fetched again for %.0f s", delay)
                raise
            with self._lock:
                self._cache[url] = (now, data)
                self._failures.pop(url, None)
            return data
        finally:
            url_lock.release()


def _find(jwks: dict[str, Any], kid: str) -> dict[str, Any] | None:
    for k in jwks.get("keys", []):
        if isinstance(k, dict) and k.get("kid") == kid:
            return k
    return None


class ReplayCache(Protocol):
    def first_use(self, iss: str, jti: str, ttl: int) -> bool: ...


class MemoryReplayCache:
    """Seen jti values in this process, forgotten once their token has expired."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, ttl: int) -> bool:
        now = time.monotonic()
        key = _replay_key(iss, jti)
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get(key, 0) > now:
                return False
            self._seen[key] = now + ttl
            return True


class RedisReplayCache:
    """Seen jti values shared by every worker and replica: SET NX with the token's lifetime."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def first_use(self, iss: str, jti: str, ttl: int) -> bool:
        import redis

        try:
            return bool(self.client.set(_replay_key(iss, jti), b"1", nx=True, ex=max(1, ttl)))
        except redis.RedisError as exc:
            # fail closed: without the shared cache a replay cannot be ruled out
            raise AuthError(f"replay cache unavailable ({type(exc).__name__})",
                            label="replay cache unavailable") from None


class StoreReplayCache:
    """Seen jti values in the service's database (table jti_seen), the default without Redis: the
    SQLite file is shared by the workers, PostgreSQL by the replicas. ``store`` returns the Store
    (the app's, which is opened after the authenticator)."""

    def __init__(self, store: Any):
        self._store = store

    def first_use(self, iss: str, jti: str, ttl: int) -> bool:
        from ..store import StoreUnavailable

        store = self._store() if callable(self._store) else self._store
        try:
            if store is None:
                raise StoreUnavailable("no store")
            return store.first_use(_replay_key(iss, jti)[len("cds:jti:"):], iss, ttl)
        except StoreUnavailable as exc:
            # fail closed, as with Redis down: without the shared cache a replay cannot be ruled out
            raise AuthError(f"replay cache unavailable ({exc})", label="replay cache unavailable") from None


def _replay_key(iss: str, jti: str) -> str:
    return "cds:jti:" + hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()


class Authenticator:
    def __init__(self, trust: Trust, algorithms: list[str], clock_skew: int, max_age: int,
                 replay: ReplayCache, jwks_cache: JwksCache):
        bad = [a for a in algorithms if a not in ASYMMETRIC]
        if bad:
            raise ConfigurationError(f"CDS_JWT_ALGORITHMS: {', '.join(bad)} not allowed; only asymmetric "
                                     f"algorithms ({', '.join(sorted(ASYMMETRIC))})")
        self.trust = trust
        self.algorithms = list(algorithms)
        self.skew = clock_skew
        self.max_age = min(max_age, MAX_TOKEN_AGE)
        self.replay = replay
        self.jwks_cache = jwks_cache

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("no Bearer token")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        iss = unverified.get("iss") if isinstance(unverified.get("iss"), str) else None
        jti = unverified.get("jti") if isinstance(unverified.get("jti"), str) else None
        alg = header.get("alg")
        if alg not in self.algorithms or alg not in ASYMMETRIC:
            raise AuthError(f"algorithm {str(alg)[:20]!r} not allowed", iss, jti, label="algorithm not allowed")
        if str(header.get("typ", "")).upper() != "JWT":
            raise AuthError("typ is not JWT", iss, jti)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid", iss, jti)
        if iss is None or iss not in self.trust.issuers:
            raise AuthError("unknown issuer", iss, jti)
        issuer = self.trust.issuers[iss]
        jku = header.get("jku")
        if jku is not None and jku != issuer.jku:
            raise AuthError("jku not allowed for this issuer", iss, jti)
        jwks = issuer.jwks if issuer.jwks is not None else self.jwks_cache.keys(issuer.jku or "", kid)
        jwk = _find(jwks, kid)
        if jwk is None:
            raise AuthError("unknown kid", iss, jti)
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            raise AuthError("key does not fit the algorithm", iss, jti) from None
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=audience, issuer=iss, leeway=self.skew,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", iss, jti) from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience", iss, jti) from None
        except jwt.ImmatureSignatureError:
            raise AuthError("issued in the future", iss, jti) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"missing claim {exc.claim}", iss, jti, label="missing claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature", iss, jti) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})", iss, jti, label="invalid token") from None
        now = time.time()
        iat = claims["iat"]
        if not isinstance(iat, (int, float)) or iat > now + self.skew:
            raise AuthError("issued in the future", iss, jti)
        if now - iat > self.max_age + self.skew:
            raise AuthError("token too old", iss, jti)
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise AuthError("missing claim jti", iss, jti)
        tenant = claims.get("tenant")
        if self.trust.tenants is not None and (not isinstance(tenant, str) or tenant not in self.trust.tenants):
            raise AuthError("tenant not allowed", iss, jti)
        # a jti need only be remembered while its token could still be accepted: until exp, and never
        # past the oldest acceptable iat (a signed exp far in the future must not pin the entry forever)
        ttl = int(max(min(claims["exp"] - now, iat + self.max_age - now), 0) + self.skew) + 1
        if not self.replay.first_use(iss, claims["jti"], ttl):
            raise AuthError("replayed jti", iss, jti)
        return claims
