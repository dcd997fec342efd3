"""A hostile fhirServer (issue "Hardening at the edges"): a gzip bomb, an endless body, reads that
would run on past the hook's deadline, JSON nested too deeply. Each is a fetch failure like the
faults of test_faults.py: a card naming an optional key, a 412 naming a required one; never a 500,
never a worker that grows, never a read that outlives the call.
"""
from __future__ import annotations

import json
import threading
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from werkzeug import Response

from cds_service import create_app
from tests.http.fake_fhir import SERVICE_URL, TOKEN, FakeFhir, serve, with_server
from tests.http.test_faults import expect_412_naming, expect_card_naming

MiB = 1024 * 1024
DEADLINE = 2.0
MARGIN = 1.0


@pytest.fixture(scope="module")
def make_httpserver():
    yield from serve()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros, built 1 MiB at a time."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    zeros = bytes(MiB)
    body = b"".join(c.compress(zeros) for _ in range(1024)) + c.flush()
    assert len(body) < 2 * MiB
    return body


def make_client(**config):
    app = create_app({"max_body_bytes": 200_000, "hook_deadline": DEADLINE, "fhir_read_timeout": 5.0, **config})
    return app, app.test_client()


@pytest.fixture()
def app_client():
    made = []

    def make(**config):
        app, client = make_client(**config)
        made.append(app)
        return client

    yield make
    for app in made:
        app.extensions["cds_engine"].close()


def post(client, body, deadline: float = DEADLINE):
    start = time.monotonic()
    resp = client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json")
    elapsed = time.monotonic() - start
    text = resp.get_data(as_text=True)
    assert resp.status_code != 500, text
    assert "Traceback" not in text and TOKEN not in text
    return resp, elapsed


class Streams:
    """Bodies streamed by the fake server, counted while they are being sent: a stream ends when
    the client closes the connection (the next write fails), or when the test releases it."""

    def __init__(self, fhir: FakeFhir):
        self.fhir = fhir
        self.active = 0
        self.lock = threading.Lock()

    def body(self, first: bytes, each: bytes, every: float, total: int | None = None):
        def gen():
            with self.lock:
                self.active += 1
            try:
                yield first
                sent = 0
                while total is None or sent < total:
                    if every and self.fhir.release.wait(every):
                        return
                    if self.fhir.release.is_set():
                        return
                    yield each
                    sent += len(each)
            finally:
                with self.lock:
                    self.active -= 1
        return gen()

    def wait_idle(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        while self.active and time.monotonic() < end:
            time.sleep(0.05)
        return self.active


# ---- 1. size: a gzip bomb, an endless body ----

@pytest.mark.parametrize("key", ["labs", "dxa"])
def test_gzip_bomb_is_cut_at_the_cap_and_the_worker_does_not_grow(app_client, fhir, gzip_bomb, key):
    client = app_client()  # the default cap, CDS_FHIR_MAX_RESPONSE_BYTES = 32 MiB
    fhir.faults[key] = lambda request: Response(gzip_bomb, status=200, content_type="application/fhir+json",
                                                headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        resp, elapsed = post(client, with_server(fhir, drop=(key,)))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 100 * MiB, f"the worker grew by {peak / MiB:.0f} MiB"
    assert elapsed < DEADLINE, f"answered after {elapsed:.2f} s"
    if key == "dxa":
        issue = expect_412_naming(resp, key)
        assert "larger than" in issue["diagnostics"] and "CDS_FHIR_MAX_RESPONSE_BYTES" in issue["diagnostics"]
    else:
        expect_card_naming(resp, key)


@pytest.mark.parametrize("framing", ["chunked", "content-length-lies"])
@pytest.mark.parametrize("key", ["labs", "dxa"])
def test_endless_body_is_cut_at_the_cap(app_client, fhir, key, framing):
    client = app_client(fhir_max_response_bytes=4 * MiB)
    streams = Streams(fhir)
    headers = {"Content-Length": str(50 * 1024 * MiB)} if framing == "content-length-lies" else {}

    def endless(request):
        body = streams.body(b'{"resourceType": "Bundle", "type": "searchset", "entry": [', b" " * 65536, 0)
        return Response(body, status=200, content_type="application/fhir+json", headers=headers,
                        direct_passthrough=True)

    fhir.faults[key] = endless
    resp, elapsed = post(client, with_server(fhir, drop=(key,)))
    assert elapsed < DEADLINE, f"answered after {elapsed:.2f} s"
    if key == "dxa":
        issue = expect_412_naming(resp, key)
        assert "larger than 4194304 bytes" in issue["diagnostics"], issue
    else:
        expect_card_naming(resp, key)
    assert streams.wait_idle(2.0) == 0, "the connection was not closed past the cap"


def test_a_normal_gzip_answer_is_read(app_client, fhir):
    import gzip

    client = app_client()
    fhir.faults["labs"] = lambda request: Response(gzip.compress(json.dumps(fhir.data["labs"]).encode()),
                                                   status=200, content_type="application/fhir+json",
                                                   headers={"Content-Encoding": "gzip"})
    resp, _ = post(client, with_server(fhir, drop=("labs",)))
    assert resp.status_code == 200
    assert "could not be read" not in json.dumps(resp.get_json())


# ---- 2. the deadline holds inside every read; a call holds no thread after it answers ----

SLOW_KEYS = ("labs", "conditions", "medicationRequests", "medicationStatements")


def test_reads_stop_at_the_deadline_and_the_pool_stays_free(app_client, fhir):
    # a read timeout longer than the hook deadline, a pool of 10 threads, and four keys that
    # trickle a byte every 0.2 s (each byte within the read timeout) for a minute
    client = app_client(hook_deadline=1.0, fhir_read_timeout=5.0, fetch_workers=10)
    streams = Streams(fhir)

    def trickle(request):
        body = streams.body(b'{"resourceType": "Bundle", "type": "searchset", "entry": [', b" ", 0.2, total=300)
        return Response(body, status=200, content_type="application/fhir+json", direct_passthrough=True)

    for key in SLOW_KEYS:
        fhir.faults[key] = trickle
    for n in range(4):  # several calls in a row while the slow keys are still being asked for
        resp, elapsed = post(client, with_server(fhir, drop=SLOW_KEYS))
        assert elapsed < 1.0 + 0.5, f"call {n} answered after {elapsed:.2f} s"
        assert resp.status_code == 200, f"call {n}: {resp.get_data(as_text=True)}"
        for key in SLOW_KEYS:
            expect_card_naming(resp, key)
    assert streams.wait_idle(1.5) == 0, f"{streams.active} reads went on after the calls answered"
    # the next call to a healthy server is answered in full
    fhir.faults.clear()
    resp, elapsed = post(client, with_server(fhir, drop=SLOW_KEYS))
    assert resp.status_code == 200 and elapsed < 1.0
    assert "could not be read" not in json.dumps(resp.get_json())


def test_a_call_holds_at_most_its_share_of_the_pool(app_client, fhir):
    client = app_client(hook_deadline=1.0, fetch_workers=4)  # a share of 3 threads for the 9 keys
    engine = client.application.extensions["cds_engine"]
    assert engine.fetches_per_call == 3
    resp, _ = post(client, with_server(fhir, drop=tuple(fhir.data)))  # every key fetched, in waves
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "could not be read" not in json.dumps(resp.get_json())


# ---- 3. JSON nested too deeply ----

DEEP = 100_000
NESTED = {
    "bare-arrays": b"[" * DEEP + b"]" * DEEP,
    "inside-a-bundle": (b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": '
                        b'{"resourceType": "Observation", "id": "x", "extension": '
                        + b"[" * DEEP + b"]" * DEEP + b"}}]}"),
    "objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
}


@pytest.mark.parametrize("shape", NESTED)
@pytest.mark.parametrize("key", ["labs", "patient", "dxa"])
def test_deeply_nested_json_is_a_malformed_body(app_client, fhir, key, shape):
    client = app_client()
    fhir.faults[key] = lambda request: Response(NESTED[shape], status=200, content_type="application/fhir+json")
    resp, elapsed = post(client, with_server(fhir, drop=(key,)))
    assert elapsed < DEADLINE + MARGIN
    if key == "labs":
        expect_card_naming(resp, key)
    else:
        issue = expect_412_naming(resp, key)
        assert "not valid JSON" in issue["diagnostics"], issue


def test_deeply_nested_error_body_is_no_500(app_client, fhir):
    client = app_client()
    fhir.faults["dxa"] = lambda request: Response(NESTED["bare-arrays"], status=500,
                                                  content_type="application/fhir+json")
    resp, _ = post(client, with_server(fhir, drop=("dxa",)))
    assert "HTTP 500" in expect_412_naming(resp, "dxa")["diagnostics"]


@pytest.mark.parametrize("step", [7, 1000, 65536, 10**7])
@pytest.mark.parametrize("shape", ["gzip", "deflate", "two-members", "trailing-bytes"])
def test_decoder_gives_the_body_back_whatever_the_reads(shape, step):
    import gzip
    import random

    from cds_service.fhir.client import CHUNK, _decoder

    rnd = random.Random(1)
    raw = bytes(rnd.getrandbits(8) for _ in range(2000)) * 100  # 200 kB, in more than one CHUNK
    comp = {"gzip": gzip.compress(raw), "deflate": zlib.compress(raw),
            "two-members": gzip.compress(raw[:70_001]) + gzip.compress(raw[70_001:]),
            "trailing-bytes": gzip.compress(raw) + b"\0\0 trailing"}[shape]
    decode = _decoder("deflate" if shape == "deflate" else "gzip")
    pieces = [p for i in range(0, len(comp), step) for p in decode(comp[i:i + step])]
    assert b"".join(pieces) == raw
    assert max(len(p) for p in pieces) <= CHUNK


def test_json_nested_within_orjsons_limit_is_read(app_client, fhir):
    # 1000 levels (orjson refuses beyond 1024): read, and nothing on the facts path recurses on it
    client = app_client()
    data = json.loads(json.dumps(fhir.data["dxa"]))
    data["entry"][0]["resource"]["extension"] = "@@"
    body = json.dumps(data).replace('"@@"', "[" * 1000 + "]" * 1000).encode()
    fhir.faults["dxa"] = lambda request: Response(body, status=200, content_type="application/fhir+json")
    resp, _ = post(client, with_server(fhir, drop=("dxa",)))
    assert resp.status_code == 200, resp.get_data(as_text=True)


# ---- 4. a server that trickles its status line and headers: no read outlives the call ----

class TrickledHeaders:
    """A raw HTTP server that answers every request with "HTTP/1.1 200 OK" and then one header byte
    every ``every`` seconds, forever (each byte within the read timeout); or, ``chunked``, with its
    headers and then a chunk-size line one byte at a time; ``open`` counts the connections the
    client has not closed."""

    def __init__(self, every: float = 0.3, chunked: bool = False):
        import socket

        self.every = every
        self.chunked = chunked
        self.open = 0
        self.accepted = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}/fhir"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                self.open += 1
                self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn) -> None:
        import select

        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            if self.chunked:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                trickled = b"10;slow=" + b"a" * 60_000  # a chunk extension within http.client's line limit
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                trickled = b"X-Slow: " + b"a" * 100_000
            for byte in trickled:
                if self.stop.is_set():
                    return
                readable, _, _ = select.select([conn], [], [], self.every)
                if readable and not conn.recv(4096):
                    return  # the client closed the connection
                conn.sendall(bytes([byte]))
        except OSError:
            return
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def wait_closed(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        while self.open and time.monotonic() < end:
            time.sleep(0.05)
        return self.open

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=2)


@pytest.fixture(params=["headers", "chunk-size"])
def trickled_headers(request):
    server = TrickledHeaders(chunked=request.param == "chunk-size")
    yield server
    server.close()


def test_reads_of_headers_stop_when_the_call_answers(app_client, fhir, trickled_headers):
    # a read timeout longer than the hook deadline: each header byte comes within it, so only the
    # call's deadline can end the read
    client = app_client(hook_deadline=1.0, fhir_read_timeout=5.0)
    body = with_server(fhir, drop=("labs", "conditions"))
    body["fhirServer"] = trickled_headers.base
    resp, elapsed = post(client, body)
    assert elapsed < 1.0 + 0.5, f"answered after {elapsed:.2f} s"
    assert resp.status_code == 200, resp.get_data(as_text=True)
    for key in ("labs", "conditions"):
        expect_card_naming(resp, key)
    assert trickled_headers.accepted >= 2
    assert trickled_headers.wait_closed(1.5) == 0, \
        f"{trickled_headers.open} reads went on after the call answered"


def test_a_healthy_server_keeps_one_connection_for_sequential_fetches():
    # an HTTP/1.1 server that keeps its connections (pytest-httpserver closes each one)
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cds_service.fhir.client import FhirClient, Limits, new_session
    from cds_service.fhir.prefetch import CallPool

    ports = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            ports.append(self.client_address[1])
            body = json.dumps({"resourceType": "Patient", "id": "p"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    session = new_session()
    try:
        fc = FhirClient(f"http://127.0.0.1:{server.server_address[1]}/fhir", TOKEN, session, Limits())
        for _ in range(2):  # each in a call of its own, through its CallPool, as the engine does
            deadline = time.monotonic() + 5
            pool = CallPool(ThreadPoolExecutor(1), 1, deadline)
            try:
                assert pool.submit(fc.read, "Patient/p", deadline).result(timeout=5)["id"] == "p"
            finally:
                pool.cancel()
    finally:
        session.close()
        server.shutdown()
        server.server_close()
    assert len(ports) == 2 and ports[0] == ports[1], f"two connections: {ports}"


def test_a_connection_reused_within_a_call_stays_watched_after_the_first_request_is_done():
    """Two fetches of one call: the first's connection goes back to the pool when its answer has been
    read, the second takes it before the first has detached the socket. The first's detach must not
    leave the second unwatched, which read as "cut by the deadline" and failed a healthy fetch (an
    extra card in tests/e2e/test_orders_e2e.py, once in CI)."""
    import socket

    from cds_service.fhir.client import ReadWatch, _Request

    watch = ReadWatch()
    a, b = socket.socketpair()
    try:
        first, second = _Request(watch), _Request(watch)
        first.attach(a)
        second.attach(a)  # the same connection, taken from the pool
        first.done()
        assert not second.cut and watch.holds(a)
        second.done()
        assert not second.cut and not watch.holds(a)
        third = _Request(watch)
        third.attach(a)
        watch.cut()
        assert third.cut
    finally:
        a.close()
        b.close()
