"""Schemathesis against the real server: generated requests for every operation of /openapi.json.

The service runs as `cds-service serve` with authentication off, no fhirServer allowlist (so no
outbound call can go anywhere) and its SQLite database in the test's temporary folder. Each
operation gets positive (schema-valid) and negative (schema-violating) requests; every response
must not be a 5xx and must match the document (status code's schema, content).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from tests.e2e.conftest import start_service, stop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "fhir_samples" / "requests").glob("*.json"))
HOOK_SERVICES = {"patient-view": "bone-health-patient-view", "order-select": "bone-health-order-select",
                 "order-sign": "bone-health-order-sign"}
MIN_REQUESTS = 1000
BUDGET_SECONDS = 150  # the whole run stays under ~3 minutes
# Examples per operation and generation mode. Drawing a case costs more than answering it (about 20 ms
# for a hook request, 45 ms for a feedback batch, whose arrays are long), so the hook operations, where
# the service does the most with what it is sent, get two thirds of the requests: 6 x 120 + 6 x 60 + the
# GETs and samples is about 1,100 requests in about 30 s (it was 1,586 in 53 s with 130 for each).
EXAMPLES = {"GET": 5,  # no parameters: hypothesis soon runs out of distinct requests
            "hook": 120, "feedback": 60}


def _examples(op) -> int:
    if op.method.upper() == "GET":
        return EXAMPLES["GET"]
    return EXAMPLES["feedback" if op.path.endswith("/feedback") else "hook"]
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    svc = start_service(tmp, {"CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": str(tmp / "data")}, workers=2)
    try:
        yield svc
    finally:
        stop(svc.proc)


def test_generated_requests_conform(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", timeout=10)
    session = requests.Session()
    stats = {"requests": 0}
    per_operation: dict[str, int] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]  # schemathesis leaves out /openapi.json itself

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() - started > BUDGET_SECONDS:
                break

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=_examples(op), deadline=None, database=None,
                      derandomize=False, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                if time.monotonic() - started > BUDGET_SECONDS:
                    return
                response = case.call(base_url=server.url, session=session, timeout=15)
                stats["requests"] += 1
                per_operation[op.label] = per_operation.get(op.label, 0) + 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except Exception as exc:  # schemathesis raises a FailureGroup (an ExceptionGroup)
                    failures.append(f"{op.label} [{mode.value}] -> {response.status_code}: {str(exc)[:1500]}")

            try:
                run()
            except Unsatisfiable:
                # negative mode on an operation without parameters or body: nothing can be made invalid
                assert mode is GenerationMode.NEGATIVE and op.body.is_empty() if hasattr(op.body, "is_empty") \
                    else mode is GenerationMode.NEGATIVE

    # the sample hook requests (complete prefetch, so no fhirServer is needed) exercise the 200 card responses
    by_path = {op.path: op for op in operations}
    for sample in SAMPLES:
        body = json.loads(sample.read_text())
        sid = HOOK_SERVICES[body["hook"]]
        case = by_path[f"/cds-services/{sid}"].Case(body=body, media_type="application/json")
        response = case.call(base_url=server.url, session=session, timeout=30)
        stats["requests"] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code == 200, (sample.name, response.text[:500])
        assert response.json()["cards"], sample.name
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:
            failures.append(f"{sample.name} -> {response.status_code}: {str(exc)[:1500]}")

    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {stats['requests']} requests in {elapsed:.0f}s over {len(operations)} operations")
    for label, n in sorted(per_operation.items()):
        print(f"  {n:5d}  {label}")
    print("  status codes:", dict(sorted(statuses.items())))
    assert not failures, f"{len(failures)} failing responses:\n" + "\n\n".join(failures[:10])
    assert stats["requests"] >= MIN_REQUESTS
