"""A small closed-loop load generator: P processes x T threads, each thread one keep-alive HTTP/1.1
connection to 127.0.0.1, sending the same request until a deadline or a request budget is spent."""
from __future__ import annotations

import http.client
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass


@dataclass
class Result:
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def _thread(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], deadline: float,
            budget: int, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ok = errors = 0
    lat: list[float] = []
    while time.monotonic() < deadline and ok + errors < budget:
        t = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                ok += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    out.append((ok, errors, lat))


_start: "mp.synchronize.Barrier | None" = None


def _init(barrier) -> None:
    global _start
    _start = barrier


def _process(args: tuple) -> tuple[int, int, list[float], float, float]:
    port, method, path, body, headers, seconds, budget, threads = args
    assert _start is not None
    _start.wait(timeout=120)  # every process starts together, whenever the slowest is ready
    began = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    deadline = began + seconds
    out: list = []
    ts = [threading.Thread(target=_thread, args=(port, method, path, body, headers, deadline, budget, out))
          for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(o[0] for o in out), sum(o[1] for o in out), [x for o in out for x in o[2]], began, time.monotonic()


def run(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        seconds: float = 30.0, processes: int = 4, threads: int = 4, budget_per_thread: int = 10**9) -> Result:
    headers = dict(headers or {})
    ctx = mp.get_context("spawn")
    args = (port, method, path, body, headers, seconds, budget_per_thread, threads)
    # each process takes exactly one task: it blocks at the barrier until all have theirs
    with ctx.Pool(processes, initializer=_init, initargs=(ctx.Barrier(processes),)) as pool:
        parts = pool.map(_process, [args] * processes, chunksize=1)
    # the measured window: from the clients' common start to the last one's end, without the
    # time it takes to start the processes
    elapsed = max(p[4] for p in parts) - min(p[3] for p in parts)
    return Result(sum(p[0] for p in parts), sum(p[1] for p in parts), max(elapsed, 1e-9), [x for p in parts for x in p[2]])
