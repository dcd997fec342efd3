"""Several replicas, as a hospital runs them: nginx (Debian's package; `make nginx` installs it) in front
of two `cds-service serve` processes that share one PostgreSQL database (feedback, audit) and Redis (the
jti replay cache). A bounded load of hook and feedback calls runs through nginx; one replica is killed
(SIGKILL of its whole process group) in the middle of it. The test shows:

* the other replica keeps answering: hook calls after the kill succeed;
* only calls in flight on the killed replica fail (nginx answers 502 for a POST already sent to it:
  POST is not idempotent, so nginx does not resend it; a POST that could not even be sent, connection
  refused, goes to the other replica), and only around the moment of the kill;
* no feedback acknowledged with 200 is lost: every one is in the PostgreSQL feedback table;
* a token already used on one replica is refused by the other (directly, and through nginx after the
  kill, when nginx can only route to the survivor).

Skipped (with the reason) when nginx, PostgreSQL or Redis is missing; CDS_TEST_REQUIRE_SERVICES=1 (CI)
turns the skip into a failure. PostgreSQL: a fresh database under CDS_TEST_DATABASE_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped at the end; Redis: CDS_TEST_REDIS_URL.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.e2e.conftest import ROOT, free_port, start_service, stop, wait_http
from tests.jwt_helpers import ISS, ec_key, issuers_file, token
from tests.store.conftest import pg_module_url  # noqa: F401 - the fresh PostgreSQL database fixture

pytestmark = pytest.mark.e2e

NGINX = "/usr/sbin/nginx"
REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
HOOK = "/cds-services/bone-health-patient-view"
FEEDBACK = HOOK + "/feedback"
REQUEST = json.loads((ROOT / "fhir_samples" / "requests" / "01-very-high-risk.hook.json").read_text())

CLIENTS = 3            # client threads
LOAD_SECONDS = 6.0     # each runs hook + feedback calls for this long
KILL_AT = 2.0          # seconds into the load, one replica is killed
FAIL_WINDOW = 1.0      # a failed call must have started before the kill + this (in flight, or just after)


def _unavailable(message: str) -> None:
    if os.environ.get("CDS_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (and CDS_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{message}: the replica test is skipped")


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL} is not reachable ({type(exc).__name__})")


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;

events {{
    worker_connections 256;
}}

http {{
    log_format upstreams '$msec $request_method $uri $status upstream=$upstream_addr '
                         'upstream_status=$upstream_status';
    access_log {tmp}/nginx-access.log upstreams;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 10s;
    client_max_body_size 5m;

    upstream cds_service {{
        # one failed connection marks a replica down for 10 s: after the kill, nginx tries the dead one
        # again only every 10 s (each time refused at once, and the call goes to the other one)
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=10s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=10s;
        keepalive 8;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cds_service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering on;       # the whole body is read before a replica sees the call
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 30s;
            # nginx's default, written out: a call that could not be sent (connection refused, connect
            # timeout) goes to the other replica; a POST already sent is not resent (non_idempotent
            # is deliberately absent: a hook call or feedback must not run twice), so it fails with 502
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


@dataclass
class Topology:
    url: str            # nginx: the URL the EHR calls (CDS_PUBLIC_BASE_URL of both replicas)
    replicas: list      # two tests.e2e.conftest.Service
    key: object
    db_url: str
    tmp: Path

    def bearer(self, path: str) -> tuple[str, dict[str, str]]:
        """A fresh token for ``path`` (aud: the nginx URL plus the path) and its header."""
        jwt_ = token(self.key, self.url + path)
        return jwt_, {"Authorization": f"Bearer {jwt_}"}


@pytest.fixture(scope="module")
def topology(tmp_path_factory, pg_module_url):  # noqa: F811 - the fixture imported above
    if not Path(NGINX).exists():
        _unavailable(f"nginx is not installed at {NGINX} (`make nginx` installs Debian's package as root)")
    _redis_or_skip()
    tmp = tmp_path_factory.mktemp("replicas")
    key = ec_key()
    trusted = issuers_file(tmp / "issuers.json", [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"CDS_TRUSTED_ISSUERS_FILE": str(trusted), "CDS_DATABASE_URL": pg_module_url, "CDS_REDIS_URL": REDIS_URL,
           "CDS_PUBLIC_BASE_URL": url}
    started: list = []
    nginx = None
    try:
        for name in ("a", "b"):
            folder = tmp / name
            folder.mkdir()
            started.append(start_service(folder, env, workers=1, key=key))
        a, b = (s.url.rsplit(":", 1)[1] for s in started)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, port_a=a, port_b=b))
        log = tmp / "nginx.out"
        with open(log, "wb") as fh:
            nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
                                     cwd=tmp, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(url + "/healthz", nginx, 20, log)
        yield Topology(url, started, key, pg_module_url, tmp)
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.terminate()       # SIGTERM to the master: fast shutdown of its workers
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(nginx.pid, signal.SIGKILL)
                nginx.wait(timeout=10)
        for svc in started:
            stop(svc.proc)


@dataclass
class Call:
    kind: str           # "hook" or "feedback"
    start: float
    end: float
    status: int | None  # None: no HTTP answer at all (an exception)
    detail: str = ""
    card: str | None = None


def _short(r: requests.Response) -> str:
    return "" if r.ok else " ".join(r.text.split())[:100]


def _client(top: Topology, stop_at: float, calls: list[Call], lock: threading.Lock) -> None:
    session = requests.Session()
    while time.monotonic() < stop_at:
        _, headers = top.bearer(HOOK)
        t0 = time.monotonic()
        try:
            r = session.post(top.url + HOOK, json=REQUEST, headers=headers, timeout=15)
            call = Call("hook", t0, time.monotonic(), r.status_code, _short(r))
        except requests.RequestException as exc:
            r, call = None, Call("hook", t0, time.monotonic(), None, repr(exc))
        with lock:
            calls.append(call)
        if r is None or r.status_code != 200:
            continue
        cards = r.json()["cards"]
        card = next((c for c in cards if c.get("suggestions")), cards[0])
        item = {"card": card["uuid"], "outcome": "accepted",
                "outcomeTimestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")}
        if card.get("suggestions"):
            item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        _, headers = top.bearer(FEEDBACK)
        t0 = time.monotonic()
        try:
            f = session.post(top.url + FEEDBACK, json={"feedback": [item]}, headers=headers, timeout=15)
            call = Call("feedback", t0, time.monotonic(), f.status_code, _short(f), card["uuid"])
        except requests.RequestException as exc:
            call = Call("feedback", t0, time.monotonic(), None, repr(exc), card["uuid"])
        with lock:
            calls.append(call)


def test_two_replicas_behind_nginx_survive_the_loss_of_one(topology):
    top = topology
    victim, survivor = top.replicas
    discovery = "/cds-services"

    # the shared replay cache, before anything is killed: a token accepted by one replica (called
    # directly, bypassing nginx) is refused by the other
    used_direct, headers = top.bearer(discovery)
    assert requests.get(victim.url + discovery, headers=headers, timeout=10).status_code == 200
    assert requests.get(survivor.url + discovery, headers=headers, timeout=10).status_code == 401
    # and one used through nginx (whichever replica took it)
    used_via_nginx, headers = top.bearer(discovery)
    assert requests.get(top.url + discovery, headers=headers, timeout=10).status_code == 200

    calls: list[Call] = []
    lock = threading.Lock()
    begin = time.monotonic()
    threads = [threading.Thread(target=_client, args=(top, begin + LOAD_SECONDS, calls, lock), daemon=True)
               for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(KILL_AT)
    killed_at = time.monotonic()
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    for t in threads:
        t.join(timeout=LOAD_SECONDS + 30)
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    hooks = [c for c in calls if c.kind == "hook"]
    failed = [c for c in calls if c.status != 200]
    before = [c for c in hooks if c.end < killed_at and c.status == 200]
    after = [c for c in hooks if c.start > killed_at + FAIL_WINDOW and c.status == 200]
    acked = {c.card for c in calls if c.kind == "feedback" and c.status == 200}
    summary = (f"{len(calls)} calls ({len(hooks)} hook, {len(calls) - len(hooks)} feedback), "
               f"{len(failed)} failed, {len(before)} hook calls answered before the kill, {len(after)} "
               f"succeeded after the kill (+{FAIL_WINDOW} s), {len(acked)} feedback acknowledged")
    failures = "\n".join(f"  {c.kind} {c.start - killed_at:+.3f}s..{c.end - killed_at:+.3f}s: {c.status} {c.detail}"
                         for c in failed)
    print(f"{summary}\n{failures}")  # shown with -s: the numbers of this run

    # nginx spread the load over both replicas
    access = (top.tmp / "nginx-access.log").read_text()
    used = {addr.strip() for tried in re.findall(r" upstream=(.*?) upstream_status=", access)
            for addr in tried.split(",")}
    assert before, summary
    assert {victim.url[len("http://"):], survivor.url[len("http://"):]} <= used, f"nginx used only {used}"

    # the survivor keeps answering through nginx
    assert len(after) >= 5, f"{summary}\n{failures}"
    # only calls in flight on the killed replica (or started just after the kill) fail, and as 502 from
    # nginx (never a connection error: nginx itself stays up); at most two per client thread (its call in
    # flight, and one sent on a kept-alive connection to the dead replica before nginx saw it close)
    for c in failed:
        assert c.start <= killed_at + FAIL_WINDOW and c.end >= killed_at, f"{summary}\n{failures}"
        assert c.status == 502, f"{summary}\n{failures}"
    assert len(failed) <= 2 * CLIENTS, f"{summary}\n{failures}"

    # no acknowledged feedback is lost: each is in PostgreSQL
    eng = create_engine(top.db_url)
    try:
        with eng.connect() as conn:
            stored = {row[0] for row in conn.execute(text("SELECT card_uuid FROM feedback WHERE outcome = 'accepted'"))}
    finally:
        eng.dispose()
    assert acked, summary
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)}"

    # replays after the kill: nginx can only route to the survivor, which refuses both tokens
    for replayed in (used_direct, used_via_nginx):
        r = requests.get(top.url + discovery, headers={"Authorization": f"Bearer {replayed}"}, timeout=10)
        assert r.status_code == 401, (r.status_code, r.text[:200])
    _, headers = top.bearer(discovery)
    assert requests.get(top.url + discovery, headers=headers, timeout=10).status_code == 200
