"""Benchmark 5, memory and leaks: resident memory of each worker after 1,000 and after 20,000 hook
calls (target: growth under 10%), and start-up time (the server until it answers, and one worker's
application start: knowledge, schemas, database)."""
from __future__ import annotations

import json
import subprocess
import sys

from common import HOOK_PATH, Server, hook_body, rss_kib, typical_chart, verdict
from loadgen import run


def main() -> int:
    body = json.dumps(hook_body(typical_chart())).encode()
    headers = {"Content-Type": "application/json"}
    with Server() as srv:
        workers = srv.worker_pids()
        ready = srv.ready_seconds
        start = {p: rss_kib(p) for p in workers}
        first = run(srv.port, "POST", HOOK_PATH, body, headers, seconds=300, processes=1, threads=4,
                    budget_per_thread=250)
        after_1k = {p: rss_kib(p) for p in workers}
        rest = run(srv.port, "POST", HOOK_PATH, body, headers, seconds=600, processes=1, threads=4,
                   budget_per_thread=4750)
        after_20k = {p: rss_kib(p) for p in workers}
        alive = srv.worker_pids()
    app_start = subprocess.run(
        [sys.executable, "-c", "import os, tempfile, time; os.environ.update(CDS_AUTH_DISABLED='true', "
         "CDS_DATA_DIR=tempfile.mkdtemp(), CDS_LOG_LEVEL='WARNING'); t = time.perf_counter(); "
         "from cds_service import create_app; create_app(); print(time.perf_counter() - t)"],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    total = first.ok + rest.ok
    print(f"5. memory: {total} hook calls ({first.errors + rest.errors} errors), cds-service serve (its default server), 2 workers; "
          f"same worker pids throughout: {alive == workers}")
    growth = []
    for p in workers:
        g = (after_20k[p] - after_1k[p]) / after_1k[p]
        growth.append(g)
        print(f"  worker {p}: RSS at start {start[p] / 1024:.1f} MiB, after 1,000 {after_1k[p] / 1024:.1f} MiB, "
              f"after 20,000 {after_20k[p] / 1024:.1f} MiB ({100 * g:+.1f}%)")
    print(verdict("largest RSS growth from 1,000 to 20,000 calls (%)", 100 * max(growth), 10.0))
    print(f"  start-up: server answering after {ready:.2f} s; one worker's application start {float(app_start):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
