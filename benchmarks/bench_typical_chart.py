"""Benchmark 1, typical chart: the patient-view hook for the first example patient with all prefetch
filled, against a baseline measured in the same run on the same server: GET /healthz, a minimal
endpoint returning a fixed small JSON body. One keep-alive client on 127.0.0.1.

Prints the absolute figures and the ratio of the p50s (target: hook p50 ≤ 3 × baseline p50).
Bounded: a fixed number of requests, only to 127.0.0.1, and the server is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.cli import bundle_to_request  # noqa: E402
from cds_service.knowledge import load_knowledge  # noqa: E402
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates  # noqa: E402
from fhir_samples import scenarios  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


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
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()

    body = json.dumps(bundle_to_request(scenarios.build(1, date.today()), None, prefetch_templates(load_knowledge()),
                                        "patient-view"))
    n_resources = sum(len(v.get("entry", [])) if v and v.get("resourceType") == "Bundle" else 1
                      for v in json.loads(body)["prefetch"].values() if v)
    port = free_port()
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    env = {**os.environ, "CDS_LOG_LEVEL": "WARNING", "CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": tempfile.mkdtemp(prefix="bench-data-")}
    proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(a.workers),
                             "--threads", str(a.threads)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        s = requests.Session()
        hook_url = f"{base}/cds-services/{SERVICE_ID}"
        headers = {"Content-Type": "application/json"}
        timed(s, "GET", f"{base}/healthz", 30)  # warm-up, both workers
        timed(s, "POST", hook_url, 30, data=body, headers=headers)
        baseline, hook = [], []
        for _ in range(a.requests // 50):  # interleaved, so both see the same machine state
            baseline += timed(s, "GET", f"{base}/healthz", 50)
            hook += timed(s, "POST", hook_url, 50, data=body, headers=headers)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    b50, h50 = statistics.median(baseline), statistics.median(hook)
    ratio = h50 / b50
    print(f"typical chart: scenario 1, {n_resources} resources in prefetch, {len(body) // 1024} KiB request, "
          f"gunicorn {a.workers} workers x {a.threads} threads, {len(hook)} requests each")
    print(f"  baseline GET /healthz  p50 {b50:.2f} ms  p99 {percentile(baseline, 99):.2f} ms")
    print(f"  patient-view hook      p50 {h50:.2f} ms  p99 {percentile(hook, 99):.2f} ms")
    print(f"  ratio hook p50 / baseline p50 = {ratio:.2f}  (target <= 3.0: {'met' if ratio <= 3.0 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
