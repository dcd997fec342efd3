"""The benchmark harness counts what it claims: requests, errors, and the measured window only."""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from loadgen import run  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status = 500 if self.path == "/fail" else 200
        body = b'{"status": "ok"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_request_budget_is_spent_exactly(port):
    r = run(port, "GET", "/ok", seconds=30, processes=2, threads=2, budget_per_thread=5)
    assert (r.ok, r.errors, len(r.latencies_ms)) == (20, 0, 20)
    assert r.seconds < 30  # stopped by the budget, not the deadline


def test_non_200_answers_are_errors(port):
    r = run(port, "GET", "/fail", seconds=30, processes=1, threads=2, budget_per_thread=3)
    assert (r.ok, r.errors) == (0, 6)


def test_the_window_is_the_clients_running_time_not_process_start_up(port):
    r = run(port, "GET", "/ok", seconds=0.5, processes=2, threads=1)
    assert r.ok > 0 and r.errors == 0
    # the clients start together (a barrier) and run 0.5 s; starting the processes (about a
    # second with spawn) is outside the window, which is 0.5 s plus the last request's time
    assert 0.5 <= r.seconds < 0.5 + 1.0
