"""Discovery, service calls and health."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import metrics
from ..auth import AuthError, Authenticator
from ..engine import Engine, HookError, schema_errors
from ..store import FeedbackRejected, HookRecord, Store, StoreUnavailable
from .errors import ApiError

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.api")


def engine() -> Engine:
    return current_app.extensions["cds_engine"]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def read_json_body() -> Any:
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise ApiError(415, f"content type must be application/json, got {mimetype or 'none'}", "(headers).Content-Type")
    raw = _read_body()
    try:
        return orjson.loads(raw)  # strict JSON: no NaN or Infinity, UTF-8 only, bounded nesting
    except orjson.JSONDecodeError as exc:
        msg, where = _decode_error(raw, exc)
        raise ApiError(400, msg, where) from None


def _read_body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes; more is a 413, whether the client sent a
    Content-Length or a chunked body. (Werkzeug cuts a chunked body at the limit without an error:
    the truncated JSON answered 400.) A chunked body is read from the server's own stream, which the
    server terminates (``wsgi.input_terminated``: gunicorn and werkzeug set it), one byte past the
    limit at most."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    try:
        if limit is None or request.content_length is not None or "wsgi.input_terminated" not in request.environ:
            return request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    except RequestEntityTooLarge:
        raise ApiError(413, TOO_LARGE) from None
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while True:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, TOO_LARGE)


TOO_LARGE = "request body too large"


def _decode_error(raw: bytes, exc: "orjson.JSONDecodeError") -> tuple[str, str]:
    """Say what is wrong and where, as the standard library's parser words it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the request body is not UTF-8 text", "(request)"
    try:
        json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return "malformed JSON: nested too deeply", "(request)"
    except json.JSONDecodeError as std:
        return (f"malformed JSON: {std.msg} at line {std.lineno} column {std.colno}",
                f"(request) line {std.lineno} column {std.colno}")
    except ValueError as other:
        return f"malformed JSON: {other}", "(request)"
    if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
        return "malformed JSON: nested too deeply", "(request)"
    return f"malformed JSON: {exc}", "(request)"


OPEN_ENDPOINTS = {"cds.healthz", "cds.readyz", "cds.metrics_endpoint"}


def audience() -> str:
    """The URL the client called, as the client saw it: CDS_PUBLIC_BASE_URL + the path. Never the
    request's Host header, which the caller chooses (start-up refuses authentication without it)."""
    base = current_app.config["CDS_SETTINGS"].public_base_url.rstrip("/")
    if not base:
        raise AuthError("no CDS_PUBLIC_BASE_URL to check aud against", label="no public base URL")
    return base + request.path


@bp.before_request
def authenticate() -> Response | None:
    g.auth_claims = None
    if request.method == "OPTIONS" or request.endpoint in OPEN_ENDPOINTS:
        return None  # CORS preflight and liveness need no token
    auth: Authenticator | None = current_app.extensions.get("cds_auth")
    if auth is None:
        return None  # turned off explicitly (CDS_AUTH_DISABLED); warned at start
    try:
        g.auth_claims = auth.verify(request.headers.get("Authorization"), audience())
    except AuthError as exc:
        metrics.JWT_FAILURES.labels(exc.label).inc()
        log.warning("auth failed reason=%r iss=%s jti=%s path=%s", exc.reason, _safe(exc.iss, 120), _safe(exc.jti),
                    request.path)
        return Response(b"", status=401, headers={"WWW-Authenticate": "Bearer"})
    return None


@bp.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the knowledge is loaded and the database answers."""
    store: Store | None = current_app.extensions.get("cds_store")
    checks = {"knowledge": "ok" if engine().knowledge is not None else "missing",
              "database": "ok" if store is not None and store.ready() else "unavailable"}
    ready = all(v == "ok" for v in checks.values())
    return _json({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    body, content_type = metrics.render()
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)


@bp.get("/cds-services")
def discovery() -> Response:
    return _json(engine().discovery())


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    eng = engine()
    start = time.monotonic()
    if service_id not in eng.services:
        raise ApiError(404, f"no CDS service {service_id!r}; the services are listed at GET /cds-services",
                       "(path)")
    body: Any = None
    try:
        body = read_json_body()
        claims = g.get("auth_claims")
        issuer = eng.trusted_issuer_servers(claims.get("iss")) if claims else []
        result = eng.call(service_id, body, issuer_fhir_servers=issuer)
    except (ApiError, HookError) as exc:
        total = int((time.monotonic() - start) * 1000)
        g.log.update(service=service_id, hookInstance=_safe(_get(body, "hookInstance")))
        _audit(service_id, body, exc.status, _short(exc.message), [], {}, None, None, total)
        if isinstance(exc, HookError):
            raise ApiError(exc.status, exc.message, exc.where) from None
        raise
    except Exception:
        # a fault of the service itself: the app's handler logs it and answers 500; the call is
        # still audited and counted under its service
        g.log.update(service=service_id, hookInstance=_safe(_get(body, "hookInstance")))
        _audit(service_id, body, 500, "internal error", [], {}, None, None, int((time.monotonic() - start) * 1000))
        raise
    total = int((time.monotonic() - start) * 1000)
    keys = {k: v.origin for k, v in result.gathered.keys.items()}
    for k, v in result.gathered.keys.items():
        if v.origin in ("fetched", "failed"):
            metrics.FHIR_FETCHES.labels(k, "ok" if v.origin == "fetched" else "failed").inc()
            metrics.FHIR_FETCH_SECONDS.labels(k).observe(v.millis / 1000)
    for outcome in result.medications.values():
        if outcome == "fetched" or outcome.startswith("failed"):
            metrics.FHIR_FETCHES.labels("Medication", "ok" if outcome == "fetched" else "failed").inc()
    # each Medication that was not in the request: how it was obtained, as for the prefetch keys
    # (a reference has a "/" or ":", a prefetch key never has; an odd one never replaces a key)
    for ref, outcome in result.medications.items():
        keys.setdefault(_safe(ref, 120), outcome)
    for c in result.cards:
        metrics.CARDS.labels(service_id, c["source"]["topic"]["code"], c["indicator"]).inc()
    g.log.update(service=service_id, hookInstance=_safe(body.get("hookInstance")), cards=len(result.cards),
                 gather_ms=result.timings["gather_ms"], rules_ms=result.timings["rules_ms"],
                 keys=" ".join(f"{k}:{v.origin}" + (f"/{v.pages}p/{v.millis}ms" if v.origin in ("fetched", "failed")
                                                    else "") for k, v in result.gathered.keys.items()))
    if result.medications:
        # the Medications that were not in the request: reference → fetched, "failed: why" or
        # "not read: why" (ids and fixed reasons, never the server's text)
        g.log["medications"] = {_safe(ref, 120): outcome for ref, outcome in result.medications.items()}
    _audit(service_id, body, 200, "ok", result.cards, keys, result.timings["gather_ms"], result.timings["rules_ms"],
           total)
    return _json({"cards": result.cards})


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    eng = engine()
    if service_id not in eng.services:
        raise ApiError(404, f"no CDS service {service_id!r}", "(path)")
    body = read_json_body()
    # the shape and the number of items first: validating every item of an oversized batch against
    # the schema would cost seconds of CPU before its size is refused (45,000 items: 11 s)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid feedback: (request): must be of type object", "(request)")
    items = body.get("feedback")
    most = eng.feedback_validator.schema["properties"]["feedback"]["maxItems"]  # the schema's own limit
    if isinstance(items, list) and len(items) > most:
        raise ApiError(400, f"invalid feedback: feedback: must have at most {most} items", "feedback")
    errors = schema_errors(eng.feedback_validator, body)
    if not errors:
        for n, item in enumerate(body["feedback"]):
            if not _is_datetime(item["outcomeTimestamp"]):
                errors.append((f"feedback[{n}].outcomeTimestamp", "is not an ISO 8601 date-time with a time zone"))
    if errors:
        raise ApiError(400, "invalid feedback: " + "; ".join(f"{w}: {m}" for w, m in errors[:5]),
                       [w for w, _ in errors[:5]])
    store: Store | None = current_app.extensions.get("cds_store")
    try:
        if store is None:
            raise StoreUnavailable("no store")
        stored, duplicates = store.save_feedback(service_id, body["feedback"], _issuer())
    except FeedbackRejected as exc:
        metrics.FEEDBACK.labels(service_id, "rejected").inc(len(body["feedback"]))
        g.log.update(service=service_id, items=len(body["feedback"]))
        raise ApiError(422, exc.message, exc.where) from None
    except StoreUnavailable as exc:
        metrics.FEEDBACK.labels(service_id, "unavailable").inc(len(body["feedback"]))
        log.error("feedback service=%s status=503 items=%d store=%s", service_id, len(body["feedback"]), exc)
        g.log.update(service=service_id, items=len(body["feedback"]))
        return _outcome_503()
    for item in body["feedback"]:
        metrics.FEEDBACK.labels(service_id, item["outcome"]).inc()
    if duplicates:
        metrics.FEEDBACK.labels(service_id, "duplicate").inc(duplicates)
    g.log.update(service=service_id, items=len(body["feedback"]), stored=stored, duplicates=duplicates)
    return _json({})


def _outcome_503() -> Response:
    from .errors import outcome

    resp = outcome(503, "feedback could not be stored now; nothing was recorded: retry later")
    resp.headers["Retry-After"] = "5"
    return resp


def _is_datetime(value: str) -> bool:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None and "T" in value
    except ValueError:
        return False


def _get(body: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(body, dict):
            return None
        body = body.get(p)
    return body


def _short(message: str) -> str:
    return message[:300]


def _audit(service_id: str, body: Any, status: int, outcome: str, cards: list[dict[str, Any]],
           keys: dict[str, str], gather_ms: int | None, rules_ms: int | None, total_ms: int) -> None:
    """One audit record per hook call; a database fault is logged, never passed to the EHR."""
    store: Store | None = current_app.extensions.get("cds_store")
    if store is None:
        return
    patient = _get(body, "context", "patientId")
    user = _get(body, "context", "userId")
    rec = HookRecord(service_id, _get(body, "hookInstance") if isinstance(_get(body, "hookInstance"), str) else None,
                     patient if isinstance(patient, str) else None, user if isinstance(user, str) else None,
                     status, outcome, cards, keys, gather_ms, rules_ms, total_ms, _origin(), _issuer())
    try:
        store.record_hook(rec)
    except StoreUnavailable as exc:
        metrics.AUDIT_FAILURES.inc()
        log.error("audit write failed service=%s hookInstance=%s store=%s", service_id,
                  _safe(_get(body, "hookInstance")), exc)


def _issuer() -> str | None:
    """The authenticated client's token iss; None with authentication off."""
    claims = g.get("auth_claims")
    iss = claims.get("iss") if claims else None
    return iss if isinstance(iss, str) else None


def _origin() -> str | None:
    """"console" for a call of the card console (its page sends X-CDS-Console: 1), heard only while
    the console is on (CDS_CONSOLE): with it off, as in production, no caller can mark its calls so
    that the report leaves them out. None: an EHR's call."""
    if request.headers.get("X-CDS-Console") == "1" and current_app.config["CDS_SETTINGS"].console:
        return "console"
    return None


def _safe(value: Any, limit: int = 64) -> str:
    """An id for the log: printable, short, never a whole payload."""
    if not isinstance(value, str):
        return "-"
    return "".join(ch for ch in value[:limit] if ch.isalnum() or ch in "-_.:/") or "-"
