"""Errors as FHIR OperationOutcome bodies: what is wrong and where, never a stack trace."""
from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("cds_service.api")

ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               412: "incomplete", 413: "too-long", 415: "not-supported", 422: "processing", 500: "exception",
               503: "transient"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, where: str | list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.where = [where] if isinstance(where, str) else list(where or [])


def outcome(status: int, message: str, where: list[str] | None = None) -> Response:
    issue: dict[str, Any] = {"severity": "error", "code": ISSUE_CODES.get(status, "processing"),
                             "diagnostics": message}
    if where:
        issue["expression"] = where
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(json.dumps(body), status=status, mimetype="application/fhir+json")


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Response:
        return outcome(e.status, e.message, e.where)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        messages = {
            404: "no such endpoint; the services are listed at GET /cds-services",
            405: f"method not allowed on this endpoint; allowed: {', '.join(sorted(e.valid_methods or []))}"
            if getattr(e, "valid_methods", None) else "method not allowed on this endpoint",
            413: "request body too large",
        }
        resp = outcome(status, messages.get(status, e.description or e.name))
        if status == 405 and getattr(e, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(sorted(e.valid_methods))
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        # the frames go to the log, not the exception's message (it may hold clinical values);
        # nothing of it goes to the client
        log.error("unexpected error %s at %s", type(e).__name__,
                  " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(traceback.extract_tb(e.__traceback__))))
        return outcome(500, "internal error; the request was logged")
