"""The OpenAPI 3.1 document at GET /openapi.json: valid, complete, built from the packaged schemas."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema

from cds_service import __version__, create_app
from cds_service.api.openapi import SCHEMA_FILES, build_document
from cds_service.engine import load_schema

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "fhir_samples" / "requests").glob("*.json"))
IGNORED_ENDPOINTS = {"static"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app():
    return create_app({"auth_disabled": True})


@pytest.fixture(scope="module")
def doc(app) -> dict[str, Any]:
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    return resp.get_json()


def _validate_openapi(doc: dict[str, Any]) -> None:
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found]
    except ImportError:
        validate = None
    if validate is not None:
        validate(doc)
        return
    # fallback: the official OAS 3.1 meta-schema (the copy schemathesis ships), then each schema
    # object checked as JSON Schema 2020-12
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    jsonschema.Draft202012Validator(OPENAPI_31).validate(doc)
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


def _refs(node: Any, out: list[str]) -> list[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.append(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"non-local $ref {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"$ref {ref} does not resolve"
        node = node[part]
    return node


def _validator(doc: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    """A validator for one component schema, resolving $refs against the whole document."""
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource("urn:openapi", resource)
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{component}"},
                                           registry=registry, format_checker=jsonschema.FormatChecker())


def test_document_is_valid_openapi_31(doc):
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == __version__
    assert doc["servers"] == [{"url": "/"}]
    _validate_openapi(doc)


def test_every_ref_resolves(doc):
    refs = _refs(doc, [])
    assert refs
    for ref in refs:
        _pointer(doc, ref)


def test_operation_ids_unique(doc):
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_route_is_documented(app, doc):
    services = app.extensions["cds_engine"].services
    assert services
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in IGNORED_ENDPOINTS or rule.endpoint.startswith("console"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        concrete = [path.replace("{service_id}", sid) for sid in services] if "{service_id}" in path else [path]
        for p in concrete:
            assert p in doc["paths"], f"{rule.rule} ({rule.endpoint}) is not documented as {p}"
            for method in set(rule.methods or ()) - IGNORED_METHODS:
                assert method.lower() in doc["paths"][p], f"{method} {p} is not documented"
                checked += 1
    assert checked >= 11


def test_security_scheme_and_its_use(doc):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path, item in doc["paths"].items():
        for op in item.values():
            protected = path.startswith("/cds-services")
            assert op["security"] == ([{"bearerAuth": []}] if protected else [])
            if protected:
                assert "content" not in op["responses"]["401"]


def test_error_responses_are_operation_outcomes(doc):
    for sid in ("bone-health-patient-view", "bone-health-order-select", "bone-health-order-sign"):
        call = doc["paths"][f"/cds-services/{sid}"]["post"]
        assert call["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/CdsResponse"}
        for status in ("400", "404", "405", "412", "413", "415"):
            assert call["responses"][status]["content"] == {
                "application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
        fb = doc["paths"][f"/cds-services/{sid}/feedback"]["post"]
        for status in ("400", "404", "415", "422", "503"):
            assert "application/fhir+json" in fb["responses"][status]["content"]
        assert "Retry-After" in fb["responses"]["503"]["headers"]
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_schemas_come_from_the_packaged_files(doc):
    """Each packaged schema is embedded unchanged but for $id/$schema/$defs and the $ref paths."""
    schemas = doc["components"]["schemas"]
    for component, filename in SCHEMA_FILES.items():
        original = load_schema(filename)
        embedded = schemas[component]
        for key, value in original.items():
            if key in ("$id", "$schema", "$defs"):
                continue
            assert key in embedded
            if not _refs(value, []):
                assert embedded[key] == value
        for name in original.get("$defs", {}):
            assert f"{component}_{name}" in schemas


def test_a_changed_schema_file_changes_the_document(monkeypatch):
    """Built at run time from the files, not copied."""
    from cds_service.api import openapi as mod

    real = mod.load_schema

    def patched(name):
        s = real(name)
        if name == "discovery.schema.json":
            s["title"] = "changed at run time"
        return s

    monkeypatch.setattr(mod, "load_schema", patched)
    services = create_app({"auth_disabled": True}).extensions["cds_engine"].services
    assert build_document(services)["components"]["schemas"]["Discovery"]["title"] == "changed at run time"


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_hook_request_schema_accepts_samples(doc, sample):
    body = json.loads(sample.read_text())
    component = {"patient-view": "HookRequestBoneHealthPatientView", "order-select": "HookRequestBoneHealthOrderSelect",
                 "order-sign": "HookRequestBoneHealthOrderSign"}[body["hook"]]
    errors = list(_validator(doc, component).iter_errors(body))
    assert not errors, [e.message for e in errors]
    assert not list(_validator(doc, "CdsRequest").iter_errors(body))


def test_hook_request_schema_rejects_missing_hook_instance(doc):
    body = json.loads(SAMPLES[0].read_text())
    del body["hookInstance"]
    assert list(_validator(doc, "CdsRequest").iter_errors(body))
    assert list(_validator(doc, "HookRequestBoneHealthPatientView").iter_errors(body))


def test_hook_request_schema_rejects_the_wrong_hook_and_context(doc):
    body = json.loads(SAMPLES[0].read_text())
    v = _validator(doc, "HookRequestBoneHealthPatientView")
    assert list(v.iter_errors({**body, "hook": "order-sign"}))
    assert list(v.iter_errors({**body, "context": {"userId": "Practitioner/1"}}))  # no patientId


def test_openapi_json_needs_no_token():
    """Authentication on with no issuer trusted: every CDS call is a 401, the document is open."""
    app = create_app({"auth_disabled": False, "public_base_url": "http://localhost"})
    client = app.test_client()
    assert client.get("/cds-services").status_code == 401
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json()["openapi"] == "3.1.0"
