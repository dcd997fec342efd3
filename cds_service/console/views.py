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


def _histories() -> Any:
    """``fhir_samples.therapy`` (medication histories as EHRs write them, rules §6.1), or None when the
    samples are not importable (an installed service without its source tree)."""
    try:
        from fhir_samples import therapy
    except ModuleNotFoundError:
        return None
    return therapy


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
    therapy = _histories()
    histories = [{"id": c.id, "title": c.description} for c in therapy.CASES] if therapy else []
    return jsonify({"samples": [{"number": s.number, "slug": s.slug, "title": s.title, "sex": s.sex, "age": s.age,
                                 "patient": f"bone-{s.number:02d}"} for s in scenarios.SCENARIOS],
                    "histories": histories})


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
    elif "history" in body:
        therapy = _histories()
        if therapy is None:
            raise SamplesUnavailable("the medication histories (fhir_samples) are not installed with this service")
        if not isinstance(body["history"], str) or body["history"] not in therapy.BY_ID:
            raise BadInput("history must be the id of a medication history listed by api/samples")
        bundle, patient_id = therapy.build(body["history"], today), None
    elif "bundle" in body:
        bundle, patient_id = body["bundle"], body.get("patient")
        if patient_id is not None and (not isinstance(patient_id, str) or len(patient_id) > 64):
            raise BadInput("patient must be a Patient id (text)")
        if isinstance(patient_id, str):
            patient_id = patient_id.strip() or None
    else:
        raise BadInput('send {"sample": N}, {"history": ID} or {"bundle": {FHIR Bundle}, "patient": optional id}')
    service = _patient_view()
    try:
        req = bundle_to_request(bundle, patient_id, service.prefetch, service.hook)
    except ValueError as exc:
        raise BadInput(f"invalid Bundle: {exc}") from None
    except (TypeError, AttributeError, KeyError) as exc:
        raise BadInput(f"invalid Bundle: an element does not have its FHIR R4 type ({type(exc).__name__})") from None
    req["context"]["userId"] = "Practitioner/console"
    try:
        facts = _facts(req, today)
        tscores = _tscores(facts)
        therapies = _therapies(facts)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise BadInput(f"invalid Bundle: the Patient or a DXA result cannot be read ({type(exc).__name__})") from None
    return jsonify({"service": service.id, "request": req, "tscores": tscores, "therapies": therapies})


def _facts(req: dict[str, Any], as_of: date) -> Any:
    """The facts the service itself would read from this request's prefetch (None without a Patient)."""
    patient = None
    resources: list[dict[str, Any]] = []
    for value in req["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Patient":
            patient = value
        elif isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources.extend(e["resource"] for e in value.get("entry", []))
    if patient is None:
        return None
    return current_app.extensions["cds_engine"].facts.build(patient, resources, as_of)


def _tscores(facts: Any) -> list[dict[str, Any]]:
    """The T-scores the service reads, oldest first."""
    if facts is None:
        return []
    return [{"site": s.site, "site_label": s.site_label, "date": s.date.isoformat(), "value": s.value,
             "laterality": s.laterality, "resource": s.resource}
            for s in facts.scores if s.kind == "t_score"]


def _therapies(facts: Any) -> dict[str, Any]:
    """Each drug's timeline as the rules read it (rules §6.1), and the medication records not used."""
    if facts is None:
        return {"drugs": [], "not_used": []}
    drugs = []
    for t in sorted(facts.therapies.values(), key=lambda t: (t.first or date.min, t.drug)):
        state = ("on therapy" if t.on_therapy else "dose due or late" if t.due
                 else "stopped" if t.stopped_on else "ended" if t.exposures else "not taken")
        drugs.append({
            "drug": t.label, "mode": t.mode, "state": state, "period": t.period_text(),
            "first": t.first.isoformat() if t.first else None,
            "last_dose": t.last_dose.isoformat() if t.last_dose else None, "doses": len(t.doses),
            "months": round(t.cumulative_months, 1), "notes": list(t.notes),
            "exposures": [{"start": e.start.isoformat(), "end": e.end.isoformat(), "kind": e.kind, "dose": e.dose,
                           "resources": list(e.resources)} for e in t.exposures],
            "records": [{"resource": r.resource, "kind": r.kind, "status": r.status} for r in t.records]})
    kinds = ("MedicationRequest/", "MedicationStatement/", "MedicationAdministration/", "MedicationDispense/")
    not_used = [{"resource": i.resource, "reason": i.reason} for i in facts.ignored if i.resource.startswith(kinds)]
    return {"drugs": drugs, "not_used": not_used}


@bp.post("/api/markdown")
def markdown() -> Response:
    body = _body()
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadInput('send {"texts": [markdown text, ...]}')
    if len(texts) > MAX_TEXTS or any(len(t) > MAX_TEXT_CHARS for t in texts):
        raise BadInput(f"at most {MAX_TEXTS} texts of at most {MAX_TEXT_CHARS} characters each")
    return jsonify({"html": [render(t) for t in texts]})
