"""Shared pieces of the benchmarks: the real server, request bodies, percentiles, the verdict line.

Every server started here binds 127.0.0.1, runs with a temporary data folder, and is stopped by
its process group at the end. Every load loop is bounded in count and time.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.cli import bundle_to_request  # noqa: E402
from cds_service.knowledge import load_knowledge  # noqa: E402
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates  # noqa: E402
from fhir_samples import scenarios  # noqa: E402
from fhir_samples.scenarios import SCENARIOS, Builder  # noqa: E402

HOOK_PATH = f"/cds-services/{SERVICE_ID}"
# the configuration the README recommends for one 2-core machine (see README, Benchmarks)
WORKERS, THREADS = 2, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def verdict(name: str, ratio: float, target: float, lower_is_better: bool = True) -> str:
    ok = ratio <= target if lower_is_better else ratio >= target
    sign = "<=" if lower_is_better else ">="
    return f"  {name} = {ratio:.2f}  (target {sign} {target:g}: {'met' if ok else 'NOT met'})"


class Server:
    """`cds-service serve` as a process: its default HTTP server (granian), the given settings, killed by process group."""

    def __init__(self, env: dict[str, str] | None = None, workers: int = WORKERS, threads: int = THREADS,
                 server: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="bench-data-")
        exe = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
        self.log = open(os.path.join(self.data, "server.log"), "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        # the recommended settings, with their INFO request log (one JSON line per call, to server.log)
        full_env.update({"CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": self.data})
        full_env.update(env or {})
        self.started = time.perf_counter()
        # `server`, or BENCH_SERVER=gthread (or gevent): another HTTP server of `serve`, measured the same way
        server = server or os.environ.get("BENCH_SERVER")
        choice = ["--server", server] if server else []
        self.proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(workers), "--threads", str(threads), *choice],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=full_env)
        self.ready_seconds = self._wait()

    def _wait(self) -> float:
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: see {self.log.name}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit("server did not start in 30 s")

    def worker_pids(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def typical_chart(as_of: date | None = None) -> dict[str, Any]:
    """Example patient 1 with a realistic history: about 60 resources across the prefetch keys."""
    as_of = as_of or date.today()
    b = Builder(SCENARIOS[0], as_of)
    SCENARIOS[0].build(b)
    for years in (1.5, 3, 4.5, 6, 7.5):  # older lab panels
        b.labs(b.ago(years=years))
    for years in (2, 4):  # older DXA exams
        b.dxa("38267-1", -3.2 - years / 10, b.ago(years=years))
        b.dxa("38264-8", -2.5 - years / 10, b.ago(years=years))
    for rxcui, name in (("314076", "lisinopril 10 MG Oral Tablet"), ("617310", "atorvastatin 20 MG Oral Tablet"),
                        ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
                        ("197361", "amlodipine 5 MG Oral Tablet"), ("310798", "hydrochlorothiazide 25 MG Oral Tablet")):
        b.med_request(rxcui, name, b.ago(years=3))
    for code, name in (("I10", "Essential hypertension"), ("E11.9", "Type 2 diabetes mellitus"),
                       ("E78.5", "Hyperlipidemia"), ("M17.11", "Primary osteoarthritis, right knee"),
                       ("H25.9", "Age-related cataract")):
        b.condition(code, name, b.ago(years=5))
    return b.bundle()


def hook_body(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle_to_request(bundle, None, prefetch_templates(load_knowledge()), "patient-view")


def count_resources(body: dict[str, Any]) -> int:
    n = 0
    for v in body["prefetch"].values():
        if v is None:
            continue
        n += len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1
    return n


def with_lab_history(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    """The bundle plus ``n`` lab Observations spread over ten years (a long history)."""
    out = json.loads(json.dumps(bundle))
    pid = next(e["resource"]["id"] for e in out["entry"] if e["resource"]["resourceType"] == "Patient")
    keys = list(scenarios.LABS)
    today = date.today()
    for i in range(n):
        key = keys[i % len(keys)]
        code, display, unit = scenarios.LABS[key]
        when = (today - timedelta(days=30 + (i * 3650 // max(n, 1)))).isoformat()
        out["entry"].append({"resource": {
            "resourceType": "Observation", "id": f"{pid}-hist-{i}", "status": "final",
            "code": {"coding": [{"system": scenarios.LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": scenarios.RECENT_LABS[key], "unit": unit, "system": scenarios.UCUM,
                              "code": unit}}})
    return out
