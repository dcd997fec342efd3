"""Shared fixtures: a fresh app per test from a config mapping, the knowledge, sample requests."""
from __future__ import annotations

import json
from datetime import date
from typing import Any, Callable

import jsonschema
import pytest

from cds_service import create_app
from cds_service.cli import bundle_to_request
from cds_service.engine import load_schema
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates
from fhir_samples import scenarios

SERVICE_URL = f"/cds-services/{SERVICE_ID}"


@pytest.fixture(scope="session")
def _data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cds-data")


@pytest.fixture(autouse=True)
def _development_settings(monkeypatch, _data_dir):
    """Most tests are about CDS behaviour, not security: they run with authentication off and any
    http fhirServer allowed. The security tests turn these back on through create_app(config)."""
    monkeypatch.setenv("CDS_AUTH_DISABLED", "true")
    monkeypatch.setenv("CDS_FHIR_SERVER_ALLOWLIST", "*")
    monkeypatch.setenv("CDS_ALLOW_HTTP_FHIR", "true")
    monkeypatch.setenv("CDS_DATA_DIR", str(_data_dir))  # the audit database of the test session


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge()


@pytest.fixture()
def app():
    return create_app({"hook_deadline": 5.0})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def response_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema("cds-response.schema.json"),
                                           format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="session")
def scenario_request(knowledge) -> Callable[..., dict[str, Any]]:
    """A patient-view hook request for scenario N, built for today, with every prefetch key filled."""
    templates = prefetch_templates(knowledge)

    def make(number: int, as_of: date | None = None) -> dict[str, Any]:
        bundle = scenarios.build(number, as_of or date.today())
        return bundle_to_request(bundle, None, templates, "patient-view")

    return make


def post_hook(client, body: Any, url: str = SERVICE_URL, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type=kw.pop("content_type", "application/json"), **kw)


def hook_cards(client, validator, body: Any, url: str = SERVICE_URL) -> list[dict[str, Any]]:
    """POST a hook request that must succeed: 200, a response valid against the CDS Hooks schema; its cards."""
    r = post_hook(client, body, url)
    assert r.status_code == 200, r.get_data(as_text=True)
    payload = r.get_json()
    errors = list(validator.iter_errors(payload))
    assert not errors, errors[0].message
    return payload["cards"]
