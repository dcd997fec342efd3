"""Client JWTs against the real server process: the replay cache shared by two gunicorn workers
through Redis, and bare 401s."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import start_service, stop
from tests.jwt_helpers import ISS, ec_key, issuers_file, token

pytestmark = pytest.mark.e2e
REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CDS_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required here (CDS_TEST_REQUIRE_SERVICES=1) but not reachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: the shared replay-cache test is skipped")


@pytest.fixture(scope="module")
def redis_service(tmp_path_factory):
    redis_or_skip()
    tmp = tmp_path_factory.mktemp("cds-redis")
    key = ec_key()
    trusted = issuers_file(tmp / "issuers.json", [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}])
    svc = start_service(tmp, {"CDS_TRUSTED_ISSUERS_FILE": str(trusted), "CDS_REDIS_URL": REDIS_URL}, workers=2, key=key)
    yield svc
    stop(svc.proc)


def test_a_replayed_token_is_refused_across_two_workers(redis_service):
    """16 clients send the same token at once, 5 times over: both workers are busy, so with a
    per-process cache each worker would accept it once (seen here: 2 of 16 in 4 of 5 trials).
    With the Redis cache exactly one request in each trial gets through."""
    url = redis_service.url + "/cds-services"
    for _ in range(5):
        jwt_ = token(redis_service.key, url)
        barrier = threading.Barrier(16)

        def call(_: int) -> int:
            barrier.wait()
            return requests.get(url, headers={"Authorization": f"Bearer {jwt_}", "Connection": "close"},
                                timeout=10).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(16)))
        assert statuses.count(200) == 1 and statuses.count(401) == 15, statuses
    log = redis_service.log.read_text()
    assert "replayed jti" in log
    assert jwt_ not in log


def test_no_token_is_a_bare_401(service):
    r = requests.post(service.url + "/cds-services/bone-health-patient-view", json={}, timeout=10)
    assert r.status_code == 401
    assert r.content == b""
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(service.url + "/healthz", timeout=10).status_code == 200
