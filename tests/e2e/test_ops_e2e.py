"""Metrics across two gunicorn workers, readiness, and the structured request log of the real server."""
from __future__ import annotations

import json

import pytest
import requests

from cds_service.services.patient_view import SERVICE_ID
from tests.e2e.test_patient_view_e2e import hook_request

pytestmark = pytest.mark.e2e


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_add_up_over_both_workers(service, fhir_server):
    before = requests.get(service.url + "/metrics", timeout=10).text
    n = 12
    for _ in range(n):  # new connections: gunicorn spreads them over the workers
        r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-01"),
                         headers={"Connection": "close"})
        assert r.status_code == 200
    requests.get(service.url + "/cds-services", headers={"Authorization": "Bearer nope"}, timeout=10)
    after = requests.get(service.url + "/metrics", timeout=10).text
    key = dict(service=SERVICE_ID, endpoint="call_service", status="200")
    assert metric(after, "cds_requests_total", **key) - metric(before, "cds_requests_total", **key) == n
    assert metric(after, "cds_request_seconds_count", service=SERVICE_ID, endpoint="call_service") >= n
    assert metric(after, "cds_cards_total", topic="bmd-interpretation", indicator="critical") >= n
    assert metric(after, "cds_fhir_fetches_total", key="patient", outcome="ok") >= n
    assert metric(after, "cds_jwt_failures_total", reason="malformed token") >= 1
    assert "bone-01" not in after and fhir_server.token not in after


def test_readyz_checks_database_and_knowledge(service):
    r = requests.get(service.url + "/readyz", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"knowledge": "ok", "database": "ok"}}


def test_one_json_log_line_per_request_with_request_id(service, fhir_server):
    r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-02"),
                     headers={"X-Request-ID": "req-e2e-42"})
    assert r.headers["X-Request-ID"] == "req-e2e-42"
    lines = [json.loads(x) for x in service.log.read_text().splitlines() if x.startswith("{")]
    mine = [x for x in lines if x.get("request_id") == "req-e2e-42"]
    assert len(mine) == 1
    line = mine[0]
    assert line["status"] == 200 and line["service"] == SERVICE_ID and line["hookInstance"]
    assert isinstance(line["ms"], (int, float)) and "gather_ms" in line and "rules_ms" in line
    text = json.dumps(line)
    assert fhir_server.token not in text and "−4.1" not in text and "-4.1" not in text
