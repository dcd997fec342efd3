"""Logging: one structured line per request (JSON by default) with a request id, the service,
hookInstance, status and timings. Never a token, a JWT or a clinical value: routes add only ids,
counts and timings to ``g.log``."""
from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter

from . import metrics

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
log = logging.getLogger("cds_service.request")


def configure(level: str, fmt: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for h in list(root.handlers):
        if getattr(h, "_cds", False):
            root.removeHandler(h)
    handler._cds = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # urllib3 logs each request line at DEBUG, and a FHIR search URL carries the patient's id
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def install(app: Flask) -> None:
    from .api.routes import OPEN_ENDPOINTS  # health and metrics: neither counted nor logged at INFO

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.match(given) else str(uuid.uuid4())
        g.t0 = time.perf_counter()
        g.log = {}

    @app.after_request
    def _finish(resp: Response) -> Response:
        ms = round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 1)
        fields = {"request_id": g.get("request_id", "-"), "method": request.method, "path": request.path,
                  "status": resp.status_code, "ms": ms, **g.get("log", {})}
        resp.headers["X-Request-ID"] = fields["request_id"]
        endpoint = request.endpoint or "unknown"
        if endpoint.startswith("cds.") and endpoint not in OPEN_ENDPOINTS:
            service = str(fields.get("service", "-"))
            metrics.REQUESTS.labels(service, endpoint[4:], str(resp.status_code)).inc()
            metrics.LATENCY_SECONDS.labels(service, endpoint[4:]).observe(ms / 1000)
        level = logging.INFO if endpoint not in OPEN_ENDPOINTS else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "request " + " ".join(f"{k}={v}" for k, v in fields.items()), extra=fields)
        return resp
