"""Bone-health CDS Hooks 2.0 service."""
from __future__ import annotations

import logging
from typing import Any, Mapping

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None, *, startup_warnings: bool = True):
    """The application factory: ``config`` overrides settings read from the environment.

    ``startup_warnings`` logs the start-up warnings (authentication off, development settings, CDS_
    variables that are no setting); ``cds-service serve`` logs them once, in the gunicorn master, and
    builds each worker's app with it false, so that they are not repeated once per worker."""

    from flask import Flask
    from flask_cors import CORS

    from .api import bp
    from .api.errors import register as register_errors
    from .config import Settings, unknown_variables
    from .engine import Engine

    from . import logs

    settings = Settings.from_env(overrides=config)
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__)
    logs.install(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["CDS_SETTINGS"] = settings
    engine = Engine(settings)
    app.extensions["cds_engine"] = engine
    log = logging.getLogger("cds_service")

    def warn(message: str) -> None:  # a start-up warning, unless the caller has logged them already
        if startup_warnings:
            log.warning(message)

    for message in unknown_variables():
        warn(message)  # names only: a variable's value is never logged
    if settings.auth_disabled:
        warn("AUTHENTICATION IS OFF (CDS_AUTH_DISABLED=true): any caller gets this service's cards; "
             "for development only")
    else:
        app.extensions["cds_auth"] = _authenticator(settings, engine, warn)
    if "*" in settings.fhir_allowlist:
        warn("CDS_FHIR_SERVER_ALLOWLIST=*: any fhirServer is called with the access token; development only")
    if settings.allow_http_fhir:
        warn("CDS_ALLOW_HTTP_FHIR=true: access tokens may travel over plain http; development only")
    if settings.sandbox_issuer:
        warn("CDS_SANDBOX_ISSUER=true: tokens signed with the CDS Hooks sandbox's public private key are "
             "trusted; development only")
    origins = settings.cors_origin_list
    CORS(app, origins="*" if origins == ["*"] else origins, methods=["GET", "POST", "OPTIONS"],
         allow_headers=["Authorization", "Content-Type"], max_age=600,
         allow_private_network=settings.cors_private_network)
    app.extensions["cds_store"] = _store(settings, log)
    register_errors(app)
    app.register_blueprint(bp)
    from .api.openapi import bp as openapi_bp

    app.register_blueprint(openapi_bp)
    if settings.console:
        from .console import bp as console_bp

        app.register_blueprint(console_bp)
        warn("the card console is on at /console (CDS_CONSOLE=true): for development and review only")

    @app.after_request
    def _security_headers(resp):
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Cache-Control", "no-store")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        if settings.public_base_url.startswith("https://"):
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        return resp

    return app


def _store(settings, log):
    """The feedback and audit store, migrated to the newest schema. A database that is down at
    start-up does not stop the service: hooks still answer, and the store retries on use."""
    store = open_store(settings)
    try:
        store.migrate()
        store.purge()
    except Exception as exc:  # noqa: BLE001 - any database fault: keep serving cards
        log.error("database not ready at start-up (%s): hooks answer, audit and feedback retry", type(exc).__name__)
    return store


def open_store(settings):
    """The store of ``settings`` (not migrated). A SQLite folder that cannot be created is a
    ConfigError naming the variable it comes from."""
    from .config import ConfigError
    from .store import from_settings

    try:
        return from_settings(settings)
    except OSError as exc:
        if settings.database_url:  # the message does not repeat the URL
            raise ConfigError(f"CDS_DATABASE_URL: the folder of the SQLite file cannot be created "
                              f"({exc.strerror or type(exc).__name__})") from None
        raise ConfigError(f"CDS_DATA_DIR={settings.data_dir!r}: the folder cannot be created "
                          f"({exc.strerror or type(exc).__name__})") from None


def _authenticator(settings, engine, warn):
    import os

    from .auth import Authenticator, JwksCache, RedisReplayCache, StoreReplayCache, load_trust
    from .config import ConfigError, check_public_base_url

    trust = load_trust(settings.trusted_issuers_file or None, settings.sandbox_issuer)
    if not trust.issuers:
        warn("authentication is on but no issuer is trusted (set CDS_TRUSTED_ISSUERS_FILE or CDS_SANDBOX_ISSUER): "
             "every call will be refused with 401")
    if settings.jku_ca_bundle and not os.path.exists(settings.jku_ca_bundle):
        raise ConfigError(f"CDS_JKU_CA_BUNDLE={settings.jku_ca_bundle!r}: no such file or folder (a CA bundle in "
                          "PEM, or a folder of them)")
    check_public_base_url(settings)  # aud is never taken from the caller's Host header
    engine.trust = trust
    if settings.redis_url:
        replay = RedisReplayCache(settings.redis_url)
    else:  # the service's database, shared by every worker (SQLite) and replica (PostgreSQL)
        from flask import current_app

        replay = StoreReplayCache(lambda: current_app.extensions.get("cds_store"))
    jwks = JwksCache(settings.jwks_cache_seconds, settings.jku_timeout)
    if settings.jku_ca_bundle:
        jwks.session.verify = settings.jku_ca_bundle
    return Authenticator(trust, settings.jwt_algorithm_list, settings.jwt_clock_skew, settings.jwt_max_age,
                         replay, jwks)
