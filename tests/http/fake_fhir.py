"""A FHIR server played by pytest-httpserver, shared by the tests of tests/http."""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds_service.services.patient_view import SERVICE_ID

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
TOKEN = "tok-123"
AUTH = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
        "subject": "cds-service"}
MINUS_4_1 = "\u22124.1"


def start_server() -> HTTPServer:
    """A threaded server, so that a slow answer does not hold up the others."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    return server


def serve() -> Iterator[HTTPServer]:
    """The body of a server fixture: start a server, yield it, then clear and stop it."""
    server = start_server()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def fhir_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/fhir+json")


def oo(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class FakeFhir:
    """Serves one scenario's data by prefetch key; ``faults[key]`` replaces a key's answer.

    ``pages[path]`` answers a path (for next links) with either a body or a handler.
    ``medications[id]`` answers ``GET Medication/{id}`` with either a body or a handler (key
    ``"Medication"``); an id not there is a 404.
    ``seen`` holds (key, full path, headers) for every request.
    """

    def __init__(self, server: HTTPServer, prefetch: dict[str, Any], patient_id: str):
        self.server = server
        self.base = server.url_for("/fhir")
        self.data = json.loads(json.dumps(prefetch))
        self.pid = patient_id
        self.faults: dict[str, Callable[[Request], Response]] = {}
        self.pages: dict[str, Any] = {}  # path → body or handler, for next links
        self.medications: dict[str, Any] = {}  # Medication id → body or handler
        self.seen: list[tuple[str | None, str, dict[str, str]]] = []
        self.release = threading.Event()
        self.inflight = 0
        self._lock = threading.Lock()
        server.expect_request(re.compile(r"^/fhir/")).respond_with_handler(self)

    def key_for(self, request: Request) -> str | None:
        path = request.path[len("/fhir/"):]
        if path == f"Patient/{self.pid}":
            return "patient"
        codes = request.args.get("code", "")
        if path == "Observation":
            return "dxa" if "38267-1" in codes else "labs" if "17861-6" in codes else None
        if path.startswith("Medication/"):
            return "Medication"
        return {"MedicationRequest": "medicationRequests", "MedicationStatement": "medicationStatements",
                "MedicationAdministration": "medicationAdministrations", "MedicationDispense": "medicationDispenses",
                "Condition": "conditions", "DiagnosticReport": "diagnosticReports"}.get(path)

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.inflight += 1
        try:
            key = self.key_for(request)
            self.seen.append((key, request.full_path, dict(request.headers)))
            if request.path in self.pages:
                page = self.pages[request.path]
                return page(request) if callable(page) else fhir_json(page)
            if key in self.faults:
                return self.faults[key](request)
            if key == "Medication":
                med = self.medications.get(request.path[len("/fhir/Medication/"):])
                if med is None:
                    return fhir_json(oo("not-found", "no such Medication"), 404)
                return med(request) if callable(med) else fhir_json(med)
            if key is None or key not in self.data:
                return fhir_json(oo("not-found", "no such resource"), 404)
            return fhir_json(self.data[key])
        finally:
            with self._lock:
                self.inflight -= 1

    def sleep(self, seconds: float) -> None:
        """Sleep in a handler; cut short when the test ends."""
        self.release.wait(seconds)

    def keys_requested(self) -> list[str | None]:
        return [k for k, _, _ in self.seen]

    def paths_requested(self) -> list[str]:
        return [p for _, p, _ in self.seen]

    def finish(self) -> None:
        self.release.set()
        end = time.monotonic() + 3
        while self.inflight and time.monotonic() < end:
            time.sleep(0.01)


def with_server(fhir: FakeFhir, drop: tuple[str, ...] = (), **prefetch: Any) -> dict[str, Any]:
    """``fhir.request`` pointed at the fake server, with its token, less ``drop``, plus ``prefetch``."""
    body = json.loads(json.dumps(fhir.request))
    body["fhirServer"] = fhir.base
    body["fhirAuthorization"] = dict(AUTH)
    for key in drop:
        del body["prefetch"][key]
    body["prefetch"].update(prefetch)
    return body
