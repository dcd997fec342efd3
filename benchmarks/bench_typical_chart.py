"""Benchmark 1, typical chart: the patient-view hook for the first example patient with a realistic
history (about 60 resources), all prefetch filled, one keep-alive client on 127.0.0.1, against a
baseline on the same server in the same run: GET /healthz, a fixed small JSON body.
Target: hook p50 <= 3 x baseline p50. Requests interleave in blocks so both see the same machine."""
from __future__ import annotations

import argparse
import json
import statistics
import time

import requests

from common import HOOK_PATH, THREADS, WORKERS, Server, count_resources, hook_body, percentile, typical_chart, verdict


def timed(session: requests.Session, method: str, url: str, n: int, **kw) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.request(method, url, **kw)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{method} {url}: HTTP {r.status_code}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    a = ap.parse_args()
    body = hook_body(typical_chart())
    data = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    with Server() as srv:
        s = requests.Session()
        timed(s, "GET", srv.url + "/healthz", 50)
        timed(s, "POST", srv.url + HOOK_PATH, 50, data=data, headers=headers)
        base, hook = [], []
        for _ in range(max(1, a.requests // 50)):
            base += timed(s, "GET", srv.url + "/healthz", 50)
            hook += timed(s, "POST", srv.url + HOOK_PATH, 50, data=data, headers=headers)
    b50, h50 = statistics.median(base), statistics.median(hook)
    print(f"1. typical chart: {count_resources(body)} resources in prefetch, {len(data) // 1024} KiB request, "
          f"cds-service serve (its default server) {WORKERS} workers x {THREADS} threads, {len(hook)} requests each, one keep-alive client")
    print(f"  baseline GET /healthz  p50 {b50:.2f} ms  p99 {percentile(base, 99):.2f} ms")
    print(f"  patient-view hook      p50 {h50:.2f} ms  p99 {percentile(hook, 99):.2f} ms")
    print(verdict("hook p50 / baseline p50", h50 / b50, 3.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
