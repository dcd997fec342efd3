"""GET /cds-services (CDS Hooks 2.0 discovery) and GET /healthz, through the Flask test client."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest

from cds_service import create_app
from cds_service.engine import load_schema
from cds_service.services.patient_view import SERVICE_ID

EXPECTED_KEYS = {"patient", "dxa", "labs", "medicationRequests", "medicationStatements",
                 "medicationAdministrations", "medicationDispenses",  # the therapy timeline (rules §6.1)
                 "conditions", "diagnosticReports"}  # the reports that date their results (rules §6.4)
ALLOWED_PARAMS = {"patient", "code", "_count", "_sort"}
TOKEN = re.compile(r"\{\{(.*?)\}\}")


@pytest.fixture()
def client():
    return create_app({"hook_deadline": 2.0}).test_client()


@pytest.fixture()
def discovery(client):
    resp = client.get("/cds-services")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


@pytest.fixture()
def service(discovery):
    services = discovery.get_json()["services"]
    matching = [s for s in services if s["id"] == SERVICE_ID]
    assert len(matching) == 1, [s.get("id") for s in services]
    return matching[0]


def test_discovery_is_json_and_validates_against_the_schema(discovery):
    assert discovery.mimetype == "application/json"
    body = discovery.get_json()
    jsonschema.Draft202012Validator(load_schema("discovery.schema.json")).validate(body)
    assert isinstance(body["services"], list) and body["services"]


def test_patient_view_service_is_listed_with_its_descriptions(service):
    assert service["hook"] == "patient-view"
    for field in ("title", "description", "usageRequirements"):
        assert isinstance(service.get(field), str) and service[field].strip(), field


def test_prefetch_keys_are_exactly_the_nine_data_groups(service):
    assert set(service["prefetch"]) == EXPECTED_KEYS


def test_medication_keys_follow_each_other_in_the_templates(service):
    """The four medication record types, in the order the rules read them (rules §6.1)."""
    keys = list(service["prefetch"])
    i = keys.index("medicationRequests")
    assert keys[i:i + 4] == ["medicationRequests", "medicationStatements", "medicationAdministrations",
                             "medicationDispenses"]


def test_every_service_names_the_medication_resources_it_reads(client):
    services = client.get("/cds-services").get_json()["services"]
    assert len(services) == 3
    for s in services:
        assert set(s["prefetch"]) == EXPECTED_KEYS, s["id"]
        for rtype in ("MedicationAdministration", "MedicationDispense", "Medication"):
            assert re.search(rf"\b{rtype}\b", s["usageRequirements"]), (s["id"], rtype)


def test_prefetch_templates_use_only_the_patient_id_token(service):
    for key, template in service["prefetch"].items():
        tokens = TOKEN.findall(template)
        assert tokens, f"{key}: {template} has no token"
        assert all(t.strip() == "context.patientId" for t in tokens), f"{key}: {tokens}"
        assert "today(" not in template, key
        # nothing template-like is left outside {{ }} tokens
        assert "{" not in TOKEN.sub("", template) and "}" not in TOKEN.sub("", template), key


def test_prefetch_templates_use_only_the_recommended_query_subset(service):
    for key, template in service["prefetch"].items():
        parts = urlsplit(template)
        assert not parts.scheme and not parts.netloc, f"{key}: must be relative to fhirServer"
        path = parts.path.split("/")
        assert re.fullmatch(r"[A-Z][A-Za-z]+", path[0]), f"{key}: {parts.path}"
        if parts.query:
            assert len(path) == 1, f"{key}: a search is a type search"
            params = parse_qsl(parts.query, keep_blank_values=True)
            names = [n for n, _ in params]
            assert set(names) <= ALLOWED_PARAMS, f"{key}: {names}"
            assert len(names) == len(set(names)), f"{key}: repeated parameter"
            assert dict(params)["patient"] == "{{context.patientId}}", key
        else:
            assert path == [path[0], "{{context.patientId}}"], f"{key}: an instance read of the patient"


def test_patient_key_is_a_read_and_data_keys_are_searches(service):
    p = service["prefetch"]
    assert p["patient"] == "Patient/{{context.patientId}}"
    for key, rtype in (("dxa", "Observation"), ("labs", "Observation"), ("medicationRequests", "MedicationRequest"),
                       ("medicationStatements", "MedicationStatement"), ("conditions", "Condition")):
        assert p[key].startswith(rtype + "?"), key
    assert p["medicationAdministrations"] == "MedicationAdministration?patient={{context.patientId}}"
    assert p["medicationDispenses"] == "MedicationDispense?patient={{context.patientId}}"
    for key in ("dxa", "labs"):
        codes = dict(parse_qsl(urlsplit(p[key]).query))["code"].split(",")
        assert codes and all(c.startswith("http://loinc.org|") for c in codes), key


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_discovery_needs_no_authorization_and_ignores_query(client):
    resp = client.get("/cds-services?x=1")
    assert resp.status_code == 200
    assert any(s["id"] == SERVICE_ID for s in resp.get_json()["services"])
