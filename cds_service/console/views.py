"""The console page and its small JSON API (see the package docstring)."""
from __future__ import annotations

import sys
from datetime import date
from typing import Any

from flask import Response, current_app, jsonify, request

from . import bp
from .markdown import render

MAX_TEXTS = 200
MAX_TEXT_CHARS = 100_000

# the page loads its own script, style sheet and API from this origin and nothing else
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadInput(Exception):
    pass


class SamplesUnavailable(Exception):
    pass


_SCENARIOS: Any = None


def _scenarios() -> Any:
    """``fhir_samples.scenarios``: imported when it is on the path (``make run`` from the project folder),
    else read from the source tree next to this package (an editable install started elsewhere)."""
    global _SCENARIOS
    if _SCENARIOS is None:
        try:
            from fhir_samples import scenarios
        except ModuleNotFoundError:
            import importlib.util
            from pathlib import Path

            path = Path(__file__).resolve().parents[2] / "fhir_samples" / "scenarios.py"
            if not path.is_file():
                raise SamplesUnavailable("the example patients (fhir_samples) are not installed with this service; "
                                         "paste a Bundle instead") from None
            spec = importlib.util.spec_from_file_location("cds_console_fhir_samples_scenarios", path)
            scenarios = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = scenarios  # its dataclasses look their module up while being defined
            spec.loader.exec_module(scenarios)
        _SCENARIOS = scenarios
    return _SCENARIOS


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP  # the app's default ('none') would block the page's own files
    return resp


def _error(message: str, status: int = 400) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise BadInput("send a JSON body with Content-Type application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise BadInput("the request body is not valid JSON")
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body


@bp.errorhandler(BadInput)
def _bad_input(exc: BadInput) -> Response:
    return _error(str(exc))


@bp.errorhandler(SamplesUnavailable)
def _no_samples(exc: SamplesUnavailable) -> Response:
    return _error(str(exc), 503)


@bp.get("/")
def page() -> Response:
    return bp.send_static_file("index.html")


@bp.get("/api/samples")
def samples() -> Response:
    scenarios = _scenarios()
    return jsonify({"samples": [{"number": s.number, "slug": s.slug, "title": s.title, "sex": s.sex, "age": s.age,
                                 "patient": f"bone-{s.number:02d}"} for s in scenarios.SCENARIOS]})


def _patient_view():
    from ..services.patient_view import SERVICE_ID

    return current_app.extensions["cds_engine"].services[SERVICE_ID]


@bp.post("/api/request")
def hook_request() -> Response:
    from ..cli import bundle_to_request

    body = _body()
    today = date.today()
    if "sample" in body:
        scenarios = _scenarios()
        n = body["sample"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(scenarios.SCENARIOS):
            raise BadInput(f"sample must be a number from 1 to {len(scenarios.SCENARIOS)}")
        bundle, patient_id = scenarios.build(n, today), None
    elif "bundle" in body:
        bundle, patient_id = body["bundle"], body.get("patient")
        if patient_id is not None and (not isinstance(patient_id, str) or len(patient_id) > 64):
            raise BadInput("patient must be a Patient id (text)")
        if isinstance(patient_id, str):
            patient_id = patient_id.strip() or None
    else:
        raise BadInput('send {"sample": N} or {"bundle": {FHIR Bundle}, "patient": optional id}')
    service = _patient_view()
    try:
        req = bundle_to_request(bundle, patient_id, service.prefetch, service.hook)
    except ValueError as exc:
        raise BadInput(f"invalid Bundle: {exc}") from None
    except (TypeError, AttributeError, KeyError) as exc:
        raise BadInput(f"invalid Bundle: an element does not have its FHIR R4 type ({type(exc).__name__})") from None
    req["context"]["userId"] = "Practitioner/console"
    try:
        tscores = _tscores(req, today)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise BadInput(f"invalid Bundle: the Patient or a DXA result cannot be read ({type(exc).__name__})") from None
    return jsonify({"service": service.id, "request": req, "tscores": tscores})


def _tscores(req: dict[str, Any], as_of: date) -> list[dict[str, Any]]:
    """The T-scores the service itself would read from this request's prefetch, oldest first."""
    patient = None
    resources: list[dict[str, Any]] = []
    for value in req["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Patient":
            patient = value
        elif isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources.extend(e["resource"] for e in value.get("entry", []))
    if patient is None:
        return []
    facts = current_app.extensions["cds_engine"].facts.build(patient, resources, as_of)
    return [{"site": s.site, "site_label": s.site_label, "date": s.date.isoformat(), "value": s.value,
             "laterality": s.laterality, "resource": s.resource}
            for s in facts.scores if s.kind == "t_score"]


@bp.post("/api/markdown")
def markdown() -> Response:
    body = _body()
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadInput('send {"texts": [markdown text, ...]}')
    if len(texts) > MAX_TEXTS or any(len(t) > MAX_TEXT_CHARS for t in texts):
        raise BadInput(f"at most {MAX_TEXTS} texts of at most {MAX_TEXT_CHARS} characters each")
    return jsonify({"html": [render(t) for t in texts]})
