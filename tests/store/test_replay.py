"""The jti replay cache in the service's database (no CDS_REDIS_URL): shared by every worker and
replica, purged of expired tokens, and failing closed when the database is down."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from cds_service import create_app
from cds_service.auth import AuthError, StoreReplayCache
from cds_service.store import Store, utcnow
from tests.jwt_helpers import ec_key, issuers_file, token

from .conftest import count

BASE = "http://localhost"
DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/none"


@pytest.fixture(scope="module")
def key():
    return ec_key("replay-1")


def secure_app(url, tmp_path, key):
    from tests.jwt_helpers import ISS

    trusted = issuers_file(tmp_path / "issuers.json", [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}])
    return create_app({"auth_disabled": False, "trusted_issuers_file": str(trusted), "public_base_url": BASE,
                       "redis_url": "", "database_url": url, "hook_deadline": 5.0})


def test_a_replayed_token_is_refused_by_another_worker(store_url, tmp_path, key):
    """Two apps on one database stand for two gunicorn workers (or replicas): with a per-process
    cache each would accept the token once."""
    first, second = secure_app(store_url, tmp_path, key), secure_app(store_url, tmp_path, key)
    tok = token(key, BASE + "/cds-services")
    auth = {"Authorization": f"Bearer {tok}"}
    assert first.test_client().get("/cds-services", headers=auth).status_code == 200
    assert second.test_client().get("/cds-services", headers=auth).status_code == 401
    assert first.test_client().get("/cds-services", headers=auth).status_code == 401
    other = {"Authorization": f"Bearer {token(key, BASE + '/cds-services')}"}
    assert second.test_client().get("/cds-services", headers=other).status_code == 200
    assert count(store_url, "jti_seen") == 2
    for app in (first, second):
        app.extensions["cds_store"].dispose()


def test_two_stores_share_the_cache_and_expired_entries_are_purged(store_url):
    a, b = Store(store_url), Store(store_url)
    try:
        a.migrate()
        cache_a, cache_b = StoreReplayCache(a), StoreReplayCache(lambda: b)
        assert cache_a.first_use("iss", "jti-1", 60) is True
        assert cache_b.first_use("iss", "jti-1", 60) is False
        assert cache_b.first_use("other-iss", "jti-1", 60) is True  # the issuer is part of the key
        assert cache_a.first_use("iss", "jti-2", 1) is True
        assert count(store_url, "jti_seen") == 3
        # an entry past its expiry: purged, and no longer blocks the key
        assert a.purge_jti(utcnow() + timedelta(seconds=30)) == 1
        assert count(store_url, "jti_seen") == 2
        assert cache_b.first_use("iss", "jti-1", 60) is False
        # an expired row not purged yet does not count as seen
        with a.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE jti_seen SET expires_at = '2000-01-01 00:00:00'")
        assert cache_b.first_use("iss", "jti-1", 60) is True
        assert cache_a.first_use("iss", "jti-1", 60) is False
    finally:
        a.dispose()
        b.dispose()


def test_expired_entries_are_purged_on_use(store_url):
    store = Store(store_url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO jti_seen (jti_hash, issuer, expires_at) "
                                 "VALUES ('old', 'iss', '2000-01-01 00:00:00')")
        assert StoreReplayCache(store).first_use("iss", "new", 60) is True  # the first use purges
        assert count(store_url, "jti_seen") == 1
    finally:
        store.dispose()


def test_database_down_refuses_the_token(tmp_path, key, caplog):
    caplog.set_level(logging.WARNING, logger="cds_service.api")
    app = secure_app(DOWN, tmp_path, key)
    r = app.test_client().get("/cds-services", headers={"Authorization": f"Bearer {token(key, BASE + '/cds-services')}"})
    assert r.status_code == 401 and r.get_data() == b""
    assert any("replay cache unavailable" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(AuthError, match="replay cache unavailable"):
        StoreReplayCache(lambda: None).first_use("iss", "jti", 60)
