"""Prometheus metrics (prometheus_client), correct under several gunicorn workers.

`cds-service serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start and
marks each exited worker dead; GET /metrics then adds up every worker's values. Without that
variable (tests, `flask run`) the process's own registry is used. Labels only take values from
small fixed sets: no ids, no clinical values.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("cds_requests_total", "Service calls, feedback and discovery by service and HTTP status",
                   ["service", "endpoint", "status"])
LATENCY_SECONDS = Histogram("cds_request_seconds", "Time to answer, by service and endpoint",
                            ["service", "endpoint"], buckets=LATENCY)
FHIR_FETCHES = Counter("cds_fhir_fetches_total", "Prefetch keys fetched from the fhirServer, by outcome",
                       ["key", "outcome"])
FHIR_FETCH_SECONDS = Histogram("cds_fhir_fetch_seconds", "Time to fetch one prefetch key (all its pages)",
                               ["key"], buckets=LATENCY)
CARDS = Counter("cds_cards_total", "Cards returned, by topic and indicator", ["service", "topic", "indicator"])
JWT_FAILURES = Counter("cds_jwt_failures_total", "Client JWTs refused, by reason", ["reason"])
FEEDBACK = Counter("cds_feedback_total", "Feedback items, by outcome", ["service", "outcome"])
AUDIT_FAILURES = Counter("cds_audit_failures_total", "Audit records that could not be written")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
