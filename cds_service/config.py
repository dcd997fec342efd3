"""One Settings object, read from the environment with safe defaults.

Every setting has an environment variable (CDS_ + the upper-case name); ``create_app(config)``
takes a mapping of the same names (lower case) to override them, which is how tests configure
an app without touching the process environment.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A setting's value is wrong: the message names its variable and says what is expected. It
    never holds a password (a database or Redis URL may carry one), so it may be printed or logged."""


# CDS_ variables that are not settings: the project's own tests and tools read them (CDS_TEST_REDIS_URL,
# CDS_TEST_DATABASE_URL, CDS_TEST_REQUIRE_SERVICES, CDS_TEST_SEKMET, ...); the service neither reads
# them nor warns about them at start-up
NOT_SETTING_PREFIXES = ("CDS_TEST_",)

DATABASE_EXAMPLE = "expected e.g. postgresql+psycopg://user@host/db or sqlite:////path/cds.db"
# database (SQLAlchemy backend) -> the drivers the service installs for it
DATABASE_DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}
REDIS_EXAMPLE = "expected e.g. redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Every field is read from CDS_ + its upper-case name; the comment beside a field says what it
    is for. Outbound FHIR reads of one hook call are bounded by ``hook_deadline`` and by
    ``fhir_max_pages`` and ``fhir_max_resources`` per search, and by ``fhir_max_medication_reads``
    (CDS_FHIR_MAX_MEDICATION_READS, default 50): the most ``Medication/{id}`` read from the
    fhirServer for the medicationReferences of the medication records that the request itself
    does not resolve (clinical rules §6.1); a reference beyond it is not read, and its record is
    listed as not used."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 2
    # largest accepted request body, bytes
    max_body_bytes: int = 5 * 1024 * 1024
    # comma-separated origins allowed by CORS; "*" allows any origin
    cors_origins: str = "https://sandbox.cds-hooks.org"
    # answer Chrome's Private Network Access preflight, so that a public page (the CDS Hooks
    # sandbox) may call a service on the developer's own machine
    cors_private_network: bool = False
    # outbound FHIR requests
    fhir_connect_timeout: float = 3.0
    fhir_read_timeout: float = 5.0
    fhir_max_pages: int = 50
    fhir_max_resources: int = 50_000
    # Medication resources read by id per hook call, for medicationReferences that the request
    # does not resolve (rules §6.1): the rest are not read, and their records are listed as not used.
    # Each read is one more request to the EHR's server within the hook deadline; 0 reads none.
    fhir_max_medication_reads: int = 50
    # largest FHIR response read, in DECODED bytes (a gzip body is counted as it inflates): past it
    # the connection is closed and the key fails like any fetch failure; 32 MiB is far above a
    # normal page (a few hundred KiB) and bounds what one hostile server can make a worker hold
    fhir_max_response_bytes: int = 32 * 1024 * 1024
    # parallel FHIR reads per worker process: at least the nine prefetch keys of one call at once
    # (with eight, the ninth key waited for a first one: benchmark 4 went from 1.1 to 2.1 times
    # one response)
    fetch_workers: int = 16
    # the whole hook, fetching included, answers within this many seconds
    hook_deadline: float = 10.0
    knowledge_dir: str = ""
    log_level: str = "INFO"
    log_format: str = "json"  # json: one JSON object per line; text: plain lines
    console: bool = False  # the card console at /console (development; `make run` turns it on)
    # client authentication (CDS Hooks JWT): on unless explicitly turned off
    auth_disabled: bool = False
    trusted_issuers_file: str = ""
    sandbox_issuer: bool = False  # trust the public CDS Hooks sandbox key: development only
    public_base_url: str = ""  # the external base URL the EHR calls; "aud" must be it plus the path
    jwt_algorithms: str = "ES384,RS384"
    jwt_clock_skew: int = 30
    jwt_max_age: int = 300
    jwks_cache_seconds: int = 3600
    jku_timeout: float = 3.0
    jku_ca_bundle: str = ""  # a CA bundle for jku URLs served under a private CA
    redis_url: str = ""  # shared jti replay cache for several workers or replicas
    # feedback and audit storage: SQLite file under data_dir unless a database URL is given
    database_url: str = ""
    data_dir: str = "var"
    audit_retention_days: int = 0  # 0 keeps every record
    audit_hash_ids: bool = False  # store an HMAC of patient and user ids instead of the ids
    audit_hash_key: str = ""
    # outbound FHIR: which fhirServer URLs may be called with the access token
    fhir_server_allowlist: str = ""
    allow_http_fhir: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = {f.name: f for f in fields(cls)}
        for name, f in names.items():
            raw = env.get("CDS_" + name.upper())
            if raw is not None and raw != "":
                values[name] = _convert(name, f.type, raw)
        for name, value in (overrides or {}).items():
            key = name.lower()
            if key not in names:
                raise ConfigError(f"unknown setting {name!r}")
            values[key] = _convert(key, names[key].type, value) if isinstance(value, str) else value
        s = cls(**values)
        s.check()
        return s

    def check(self) -> None:
        """Raises ConfigError naming the first variable whose value is wrong."""
        for name in ("port", "workers", "threads", "max_body_bytes", "fhir_max_pages", "fhir_max_resources",
                     "fetch_workers", "fhir_max_response_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"CDS_{name.upper()} must be positive")
        if self.port > 65535:
            raise ConfigError("CDS_PORT must be a TCP port, 1 to 65535")
        if self.log_format not in ("json", "text"):
            raise ConfigError("CDS_LOG_FORMAT must be json or text")
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(f"CDS_LOG_LEVEL={self.log_level!r} is not a log level: expected one of "
                              f"{', '.join(LOG_LEVELS)}")
        if self.database_url:
            _check_database_url(self.database_url)
        if self.redis_url:
            _check_redis_url(self.redis_url)
        if self.public_base_url and not _is_http_url(self.public_base_url):
            raise ConfigError("CDS_PUBLIC_BASE_URL is not an http(s) URL: expected the external base URL the EHR "
                              "calls, e.g. https://cds.hospital.org")
        for entry in self.fhir_allowlist:
            if entry != "*" and not _is_http_url(entry):
                shown = repr(entry) if "@" not in entry else "an entry"  # an entry with credentials is not echoed
                raise ConfigError(f"CDS_FHIR_SERVER_ALLOWLIST: {shown} is not an http(s) URL prefix: expected "
                                  "comma-separated prefixes such as https://ehr.hospital.org/fhir/r4, or * "
                                  "(development)")
        if self.fhir_max_medication_reads < 0:
            raise ConfigError("CDS_FHIR_MAX_MEDICATION_READS must be 0 (read none) or a positive number")
        if self.audit_retention_days < 0:
            raise ConfigError("CDS_AUDIT_RETENTION_DAYS must be 0 (keep) or a number of days")
        if self.audit_hash_ids and len(self.audit_hash_key) < 16:
            raise ConfigError("CDS_AUDIT_HASH_IDS=true needs CDS_AUDIT_HASH_KEY, a secret of at least 16 characters")
        if self.jwt_clock_skew < 0 or self.jwt_clock_skew > 300:
            raise ConfigError("CDS_JWT_CLOCK_SKEW must be between 0 and 300 seconds")
        for name in ("fhir_connect_timeout", "fhir_read_timeout", "hook_deadline", "jku_timeout", "jwt_max_age",
                     "jwks_cache_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"CDS_{name.upper()} must be positive")

    @property
    def fhir_allowlist(self) -> list[str]:
        return [u.strip() for u in self.fhir_server_allowlist.split(",") if u.strip()]

    @property
    def jwt_algorithm_list(self) -> list[str]:
        return [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def _convert(name: str, typ: Any, raw: str) -> Any:
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"CDS_{name.upper()}={raw!r} is not a valid {typ}") from None
    return raw


def check_public_base_url(settings: Settings) -> None:
    """With authentication on, a token's ``aud`` is checked against CDS_PUBLIC_BASE_URL + path; taken
    from the request's Host header instead, a token minted for another service would pass (its
    caller chooses the Host). So serving with authentication on needs it set."""
    if not settings.auth_disabled and not settings.public_base_url:
        raise ConfigError("CDS_PUBLIC_BASE_URL is not set: with authentication on, a token's aud must be the "
                          "external base URL the EHR calls (plus the path), e.g. https://cds.hospital.org/bone; "
                          "set CDS_PUBLIC_BASE_URL to it (or CDS_AUTH_DISABLED=true for development only)")


def setting_variables() -> list[str]:
    """The environment variable of every setting."""
    return ["CDS_" + f.name.upper() for f in fields(Settings)]


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per CDS_ environment variable that is no setting (a typo, or a setting of another
    version), naming it and, when one is close, the setting meant. Never a variable's value."""
    env = os.environ if environ is None else environ
    known = setting_variables()
    out = []
    for name in sorted(env):
        if not name.startswith("CDS_") or name in known or name.startswith(NOT_SETTING_PREFIXES):
            continue
        close = difflib.get_close_matches(name[4:], [k[4:] for k in known], n=1, cutoff=0.6)
        hint = f"; did you mean CDS_{close[0]}?" if close else ""
        out.append(f"{name} is not a setting of this service and is ignored{hint}")
    return out


def _is_http_url(value: str) -> bool:
    try:
        p = urlsplit(value)
        p.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return p.scheme in ("http", "https") and bool(p.hostname)


def _check_database_url(url: str) -> None:
    """An SQLAlchemy URL of a database and driver the service supports. The URL may hold a password:
    no message repeats it, nor the parser's own message."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
        backend = u.get_backend_name()
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(f"CDS_DATABASE_URL is not a database URL: {DATABASE_EXAMPLE}") from None
    if backend not in DATABASE_DRIVERS:
        shown = f" ({backend})" if backend.replace("_", "").isalnum() else ""
        raise ConfigError(f"CDS_DATABASE_URL names a database the service does not support{shown}: it stores in "
                          f"SQLite or PostgreSQL; {DATABASE_EXAMPLE}")
    try:
        driver = u.get_driver_name()
    except Exception:  # noqa: BLE001 - SQLAlchemy cannot load the driver named after "+"
        driver = ""
    if driver not in DATABASE_DRIVERS[backend]:
        raise ConfigError(f"CDS_DATABASE_URL asks for a {backend} driver the service does not install: "
                          f"use {backend}+{DATABASE_DRIVERS[backend][0]}:// ({DATABASE_EXAMPLE})")
    if backend == "sqlite" and (u.host or u.username or u.password or u.port):
        raise ConfigError("CDS_DATABASE_URL: an SQLite URL names a file, not a host: expected sqlite:////path/cds.db "
                          "(an absolute path) or sqlite:///relative/cds.db")


def _check_redis_url(url: str) -> None:
    """A URL redis-py accepts; it may hold a password, which no message repeats."""
    from redis.connection import parse_url

    try:
        parse_url(url)
    except (ValueError, TypeError):
        raise ConfigError(f"CDS_REDIS_URL is not a Redis URL: {REDIS_EXAMPLE}") from None
