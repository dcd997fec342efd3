"""Benchmark 3, throughput: 16 concurrent keep-alive clients (4 processes x 4 threads) for 30 s on
the recommended server settings, against the minimal endpoint on the same server in the same run.
Targets: at least 40% of the baseline's throughput, zero errors, p99 at most 10 x p50.

The load generator runs on the same 2 cores as the server, so both figures are lower than on a
machine with a separate client; the ratio compares like with like."""
from __future__ import annotations

import argparse
import json
import statistics

from common import HOOK_PATH, THREADS, WORKERS, Server, cpu_seconds, hook_body, percentile, typical_chart, verdict
from loadgen import run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--threads", type=int, default=THREADS)
    a = ap.parse_args()
    body = json.dumps(hook_body(typical_chart())).encode()
    with Server(workers=a.workers, threads=a.threads) as srv:
        run(srv.port, "GET", "/healthz", seconds=2)  # warm-up
        run(srv.port, "POST", HOOK_PATH, body, {"Content-Type": "application/json"}, seconds=2)
        pids = srv.worker_pids()
        c0 = cpu_seconds(pids)
        base = run(srv.port, "GET", "/healthz", seconds=a.seconds)
        c1 = cpu_seconds(pids)
        hook = run(srv.port, "POST", HOOK_PATH, body, {"Content-Type": "application/json"}, seconds=a.seconds)
        c2 = cpu_seconds(pids)
    print(f"3. throughput: 16 keep-alive clients for {a.seconds:g} s each, `cds-service serve` (default "
          f"server) {a.workers} workers x {a.threads} threads")
    for name, r, cpu in (("baseline GET /healthz", base, c1 - c0), ("patient-view hook", hook, c2 - c1)):
        p50, p99 = statistics.median(r.latencies_ms), percentile(r.latencies_ms, 99)
        print(f"  {name:22s} {r.throughput:8.1f} req/s  ok {r.ok}  errors {r.errors}  p50 {p50:.2f} ms  "
              f"p99 {p99:.2f} ms  p99/p50 {p99 / p50:.1f}  workers' CPU {1000 * cpu / max(r.ok, 1):.2f} ms/request")
    print(verdict("hook throughput / baseline throughput", hook.throughput / base.throughput, 0.40,
                  lower_is_better=False))
    print(f"  errors: {hook.errors + base.errors}  (target 0: {'met' if hook.errors + base.errors == 0 else 'NOT met'})")
    p50, p99 = statistics.median(hook.latencies_ms), percentile(hook.latencies_ms, 99)
    print(verdict("hook p99 / p50", p99 / p50, 10.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
