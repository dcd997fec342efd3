"""Benchmark 2, long history: the typical chart plus 5,000 lab Observations (a few MB). Baseline:
json.loads of the same body, in this process. The service's processing time is the whole request
handled in this process by the Flask app (parse, validate, facts, rules, cards, audit), without
the network. Target: at most 4 x the baseline, and linear in the number of resources."""
from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time

from common import HOOK_PATH, count_resources, hook_body, typical_chart, verdict, with_lab_history


def best_of(f, repeat: int) -> float:
    """Median time of ``f``. The cyclic garbage collector is paused during each run (and run
    between them): its passes over millions of young objects make json.loads itself grow faster
    than its input, which would hide whether the service's own work is linear."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        finally:
            gc.enable()
    return statistics.median(times) * 1000


def main() -> int:
    os.environ.update({"CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": tempfile.mkdtemp(prefix="bench-data-"),
                       "CDS_LOG_LEVEL": "WARNING", "CDS_MAX_BODY_BYTES": str(64 * 1024 * 1024)})
    from cds_service import create_app

    client = create_app().test_client()
    chart = typical_chart()
    rows = []
    for n in (1250, 2500, 5000, 10000):
        body = json.dumps(hook_body(with_lab_history(chart, n)))
        raw = body.encode()
        for _ in range(2):
            client.post(HOOK_PATH, data=raw, content_type="application/json")
        base = best_of(lambda: json.loads(body), 9)
        service = best_of(lambda: client.post(HOOK_PATH, data=raw, content_type="application/json"), 9)
        rows.append((n, count_resources(json.loads(body)), len(raw), base, service))
    print("2. long history: the typical chart plus N lab Observations; median of 9 runs, in one process")
    print(f"  {'extra labs':>10} {'resources':>9} {'body':>9} {'json.loads':>11} {'service':>9} {'ratio':>6} {'us/resource':>12}")
    for n, res, size, base, service in rows:
        print(f"  {n:>10} {res:>9} {size / 1e6:>7.2f}MB {base:>9.2f}ms {service:>7.2f}ms {service / base:>6.2f} "
              f"{1000 * service / res:>12.1f}")
    at5000 = next(r for r in rows if r[0] == 5000)
    print(verdict("service / json.loads at 5,000 labs", at5000[4] / at5000[3], 4.0))
    per = [1000 * r[4] / r[1] for r in rows]
    print(verdict("cost per resource, largest / smallest (linear = 1)", per[-1] / per[0], 1.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
