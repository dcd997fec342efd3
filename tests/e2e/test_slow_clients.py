"""Availability under slow and idle clients (security review "Hardening at the edges", finding 1).

The real `cds-service serve`, exposed directly (no reverse proxy), with its default server
settings. While 4 slowloris connections (a request line, then one header byte every 2 s) or 200
idle open connections are held for about 8 s (and, a known gap marked xfail, 4 slow request bodies:
complete headers, then one body byte every 2 s), a normal GET /healthz and a patient-view hook call
must each be answered within 2 s. This is a functional bound on availability, not a speed
benchmark: on the old default (gunicorn gthread, 2 workers x 2 threads) each such connection held
one of the four threads and the normal calls timed out.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, start_service, stop

pytestmark = pytest.mark.e2e

HOOK = "/cds-services/bone-health-patient-view"
SAMPLE = ROOT / "fhir_samples" / "requests" / "01-very-high-risk.hook.json"
BOUND = 2.0  # seconds a normal call may take while the attack is held
HOLD = 8.0  # seconds the attack is held


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    s = start_service(tmp, {"CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": str(tmp / "data")})
    try:
        yield s
    finally:
        stop(s.proc)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _normal_calls(url: str) -> list[str]:
    """Both normal calls, each with its own bound; the failures, described."""
    failures = []
    body = json.loads(Path(SAMPLE).read_text(encoding="utf-8"))
    for name, call in (("GET /healthz", lambda: requests.get(url + "/healthz", timeout=BOUND)),
                       ("POST hook", lambda: requests.post(url + HOOK, json=body, timeout=BOUND))):
        t = time.monotonic()
        try:
            r = call()
            took = time.monotonic() - t
            if r.status_code != 200:
                failures.append(f"{name}: HTTP {r.status_code}")
            elif took > BOUND:
                failures.append(f"{name}: {took:.2f} s")
        except requests.RequestException as exc:
            failures.append(f"{name}: no answer within {BOUND:g} s ({type(exc).__name__})")
    return failures


def _hold(url: str, socks: list[socket.socket], drip: bool) -> list[str]:
    """Keep the attack going for HOLD seconds; make the normal calls in the middle of it."""
    stop_at = time.monotonic() + HOLD
    done = threading.Event()

    def dripper() -> None:  # one header byte every 2 s on each slowloris socket
        while not done.wait(2.0) and time.monotonic() < stop_at:
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass

    t = threading.Thread(target=dripper, daemon=True)
    if drip:
        t.start()
    try:
        time.sleep(2.5)  # the attack is established (and, for slowloris, has dripped once)
        failures = _normal_calls(url)
        time.sleep(max(0.0, stop_at - time.monotonic()))
        return failures
    finally:
        done.set()
        if drip:
            t.join(timeout=5)


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def test_slowloris_connections_do_not_stop_normal_calls(svc):
    socks: list[socket.socket] = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", _port(svc.url)), timeout=5)
            s.sendall(b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        failures = _hold(svc.url, socks, drip=True)
    finally:
        _close(socks)
    assert not failures, f"with 4 slowloris connections held: {failures}"


@pytest.mark.xfail(reason="KNOWN GAP: granian hands a request to a worker thread once its headers are in, and the "
                          "thread then waits for the body; 4 slow bodies can hold the 2 x 2 threads (it depends on "
                          "how the connections fall on the workers). Mitigated only by the reverse proxy "
                          "(docker/nginx/nginx.conf, proxy_request_buffering on): README, Deployment", strict=False)
def test_slow_request_bodies_do_not_stop_normal_calls(svc):
    """Complete headers, then the body one byte every 2 s (slow POST)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", _port(svc.url)), timeout=5)
            s.sendall(b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{")
            socks.append(s)
        failures = _hold(svc.url, socks, drip=True)
    finally:
        _close(socks)
    assert not failures, f"with 4 slow request bodies held: {failures}"


def test_idle_connections_do_not_stop_normal_calls(svc):
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", _port(svc.url)), timeout=5))
        failures = _hold(svc.url, socks, drip=False)
    finally:
        _close(socks)
    assert not failures, f"with 200 idle connections held: {failures}"


def test_service_answers_after_the_attacks(svc):
    assert _normal_calls(svc.url) == []
