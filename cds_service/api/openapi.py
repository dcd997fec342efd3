"""GET /openapi.json: the OpenAPI 3.1 document of every endpoint.

The request, context, response, discovery and feedback schemas are the very JSON Schema 2020-12
files the service validates with (``cds_service/schemas/*.json``, read with importlib.resources at
run time, never copied): OpenAPI 3.1 uses JSON Schema 2020-12, so each is embedded under
``components/schemas`` with its ``$defs`` lifted to components of their own and its ``$ref``\\ s
rewritten to point there.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app

from .. import __version__
from ..engine import load_schema

bp = Blueprint("openapi", __name__)

# component name -> schema file (cds_service/schemas)
SCHEMA_FILES = {
    "CdsRequest": "cds-request.schema.json",
    "ContextPatientView": "context-patient-view.schema.json",
    "ContextOrderSelect": "context-order-select.schema.json",
    "ContextOrderSign": "context-order-sign.schema.json",
    "CdsResponse": "cds-response.schema.json",
    "Discovery": "discovery.schema.json",
    "Feedback": "feedback.schema.json",
}
# hook -> component of its context schema (as Engine.context_validators)
CONTEXT_COMPONENTS = {
    "patient-view": "ContextPatientView",
    "order-select": "ContextOrderSelect",
    "order-sign": "ContextOrderSign",
}
JSON = "application/json"
FHIR_JSON = "application/fhir+json"
BEARER = [{"bearerAuth": []}]


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """``#/$defs/x`` -> ``#/components/schemas/{prefix}_x``, everywhere in ``node``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                if v.startswith("#/$defs/"):
                    v = f"#/components/schemas/{prefix}_{v[len('#/$defs/'):]}"
                elif v == "#":
                    v = f"#/components/schemas/{prefix}"
                else:
                    raise ValueError(f"{prefix}: unsupported $ref {v!r}")
            out[k] = _rewrite_refs(v, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def embedded_schemas() -> dict[str, Any]:
    """The packaged JSON Schemas as OpenAPI components."""
    out: dict[str, Any] = {}
    for component, filename in SCHEMA_FILES.items():
        schema = load_schema(filename)  # a fresh copy, read from the package
        # an $id would make refs inside resolve against the schema's own URL, not the document
        schema.pop("$id", None)
        schema.pop("$schema", None)
        defs = schema.pop("$defs", {})
        out[component] = _rewrite_refs(schema, component)
        for name, sub in defs.items():
            out[f"{component}_{name}"] = _rewrite_refs(sub, component)
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _outcome(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description, "content": {FHIR_JSON: {"schema": _ref("OperationOutcome")}}}
    if headers:
        resp["headers"] = headers
    return resp


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


UNAUTHORIZED = {
    "description": "missing, invalid, expired or replayed client JWT (CDS Hooks 2.0 'Trusting CDS Clients'); "
                   "no body, WWW-Authenticate: Bearer",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}

OPERATION_OUTCOME = {
    "title": "FHIR R4 OperationOutcome (every error of this service)",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code", "diagnostics"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string", "minLength": 1},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _hook_request(hook: str) -> dict[str, Any]:
    """The hook request schema combined with the hook's context schema."""
    extra: dict[str, Any] = {"properties": {"hook": {"const": hook}}}
    if hook in CONTEXT_COMPONENTS:
        extra["properties"]["context"] = _ref(CONTEXT_COMPONENTS[hook])
    return {"allOf": [_ref("CdsRequest"), extra]}


def _camel(service_id: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in service_id.replace("_", "-").replace(".", "-").split("-") if p)


def build_document(services: dict[str, Any]) -> dict[str, Any]:
    """``services``: ``Engine.services`` (id -> object with ``.id``, ``.hook``, ``.title``)."""
    schemas = embedded_schemas()
    schemas["OperationOutcome"] = OPERATION_OUTCOME
    schemas["Health"] = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
    schemas["Readiness"] = {
        "type": "object", "required": ["status", "checks"],
        "properties": {"status": {"enum": ["ready", "not ready"]},
                       "checks": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    schemas["FeedbackAccepted"] = {"type": "object", "maxProperties": 0}
    body_errors = {
        "400": _outcome("malformed JSON or a schema violation"),
        "401": UNAUTHORIZED,
        "405": _outcome("method not allowed (the Allow header lists the methods)",
                        {"Allow": {"schema": {"type": "string"}}}),
        "413": _outcome("request body larger than CDS_MAX_BODY_BYTES"),
        "415": _outcome("content type is not application/json (or another +json type)"),
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["operations"], "summary": "Liveness", "security": [],
            "responses": {"200": _json_response("alive", _ref("Health"))}}},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["operations"], "summary": "Readiness: knowledge loaded, database answers",
            "security": [],
            "responses": {"200": _json_response("ready", _ref("Readiness")),
                          "503": _json_response("not ready", _ref("Readiness"))}}},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"], "summary": "Prometheus metrics (text exposition format)",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["operations"], "summary": "This OpenAPI 3.1 document", "security": [],
            "responses": {"200": _json_response("the OpenAPI document", {"type": "object"})}}},
        "/cds-services": {"get": {
            "operationId": "discovery", "tags": ["cds-hooks"], "summary": "CDS Hooks discovery", "security": BEARER,
            "responses": {"200": _json_response("the CDS services and their prefetch templates", _ref("Discovery")),
                          "401": UNAUTHORIZED}}},
    }
    for sid, service in services.items():
        name = _camel(sid)
        schemas[f"HookRequest{name}"] = _hook_request(service.hook)
        paths[f"/cds-services/{sid}"] = {"post": {
            "operationId": f"call{name}", "tags": ["cds-hooks"], "security": BEARER,
            "summary": f"{service.hook} hook call: {getattr(service, 'title', sid)}",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(f"HookRequest{name}")}}},
            "responses": {
                "200": _json_response("the cards", _ref("CdsResponse")),
                **body_errors,
                "404": _outcome("no such CDS service"),
                "412": _outcome("data missing and no trusted fhirServer to fetch it from, or patient/dxa unreadable"),
            }}}
        paths[f"/cds-services/{sid}/feedback"] = {"post": {
            "operationId": f"feedback{name}", "tags": ["cds-hooks"], "security": BEARER,
            "summary": f"CDS Hooks feedback on the cards of {sid}",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Feedback")}}},
            "responses": {
                "200": _json_response("feedback stored (duplicates are ignored)", _ref("FeedbackAccepted")),
                **body_errors,
                "404": _outcome("no such CDS service"),
                "422": _outcome("feedback on a card this service did not give"),
                "503": _outcome("the database is unavailable; nothing was recorded",
                                {"Retry-After": {"required": True, "schema": {"type": "string"}}}),
            }}}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "Bone-health CDS Hooks service", "version": __version__,
                 "description": "HL7 CDS Hooks 2.0 service for bone health (DXA interpretation, osteoporosis care)."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "cds-hooks"}, {"name": "operations"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "client JWT signed by a trusted CDS client (CDS Hooks 2.0)"}},
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    body = current_app.extensions.get("cds_openapi")
    if body is None:
        body = orjson.dumps(build_document(current_app.extensions["cds_engine"].services))
        current_app.extensions["cds_openapi"] = body
    return Response(body, mimetype="application/json")
