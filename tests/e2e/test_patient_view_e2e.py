"""The real service process, fetching every prefetch key from a real FHIR server."""
from __future__ import annotations

import json
import uuid
from datetime import date

import pytest

from cds_service.cli import bundle_to_request
from cds_service.config import Settings
from cds_service.engine import Engine
from cds_service.services.patient_view import SERVICE_ID
from fhir_samples import scenarios

pytestmark = pytest.mark.e2e


def hook_request(fhir, patient_id: str, token: str | None = None) -> dict:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir.base,
        "fhirAuthorization": {"access_token": token or fhir.token, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "cds-service", "patient": patient_id},
        "context": {"userId": "Practitioner/e2e", "patientId": patient_id},
    }


def essentials(cards: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards)


def test_discovery_from_the_running_server(service):
    r = service.get("/cds-services")
    assert r.status_code == 200
    ids = [s["id"] for s in r.json()["services"]]
    assert SERVICE_ID in ids


@pytest.mark.parametrize("number", [s.number for s in scenarios.SCENARIOS])
def test_every_key_fetched_gives_the_same_cards_as_prefetch(service, fhir_server, scenario_request, number):
    pid = f"bone-{number:02d}"
    r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, pid), timeout=30)
    assert r.status_code == 200, r.text
    fetched = r.json()["cards"]
    assert fetched, "every example patient gets at least an interpretation card"
    engine = Engine(Settings.from_env(environ={"CDS_AUTH_DISABLED": "true"}))
    try:
        expected = engine.call(SERVICE_ID, scenario_request(number)).cards
    finally:
        engine.close()
    assert essentials(fetched) == essentials(expected)
    for c in fetched:
        assert "could not be read" not in c.get("detail", "")


def test_first_patient_is_critical_and_names_the_value(service, fhir_server):
    r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-01"), timeout=30)
    cards = r.json()["cards"]
    interp = [c for c in cards if c["source"]["topic"]["code"] == "bmd-interpretation"]
    assert len(interp) == 1
    assert interp[0]["indicator"] == "critical"
    assert "−4.1" in interp[0]["summary"] and "lumbar spine" in interp[0]["summary"]


def test_wrong_token_is_a_412_naming_the_patient_key(service, fhir_server):
    r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-01", token="not-the-token"), timeout=30)
    assert r.status_code == 412
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "patient" in body["issue"][0]["diagnostics"]
    assert "401" in body["issue"][0]["diagnostics"]


def test_unknown_patient_is_a_412(service, fhir_server):
    r = service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "no-such-patient"), timeout=30)
    assert r.status_code == 412
    assert "404" in r.json()["issue"][0]["diagnostics"]


def test_sample_request_files_work_against_the_server(service):
    """The ready hook requests in fhir_samples/ (prefetch filled) are accepted as they are."""
    with open(scenarios.__file__.replace("scenarios.py", "requests/01-very-high-risk.hook.json")) as fh:
        body = json.load(fh)
    r = service.post(f"/cds-services/{SERVICE_ID}", body, timeout=30)
    assert r.status_code == 200
    assert r.json()["cards"][0]["source"]["topic"]["code"] == "bmd-interpretation"


def test_the_access_token_never_reaches_the_log(service, fhir_server):
    service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-02"), timeout=30)
    service.post(f"/cds-services/{SERVICE_ID}", hook_request(fhir_server, "bone-02", token="secret-wrong-token-xyz"), timeout=30)
    text = service.log.read_text()
    assert "hookInstance=" in text  # the log is being written
    assert fhir_server.token not in text
    assert "secret-wrong-token-xyz" not in text


def medication_reference_bundle() -> tuple[dict, str]:
    """Example patient 5 as another patient whose denosumab records name their drug only by
    ``medicationReference`` to one Medication resource (rules §6.1); and that Medication's id."""
    bundle = json.loads(json.dumps(scenarios.build(5, date.today())).replace("bone-05", "bone-medref"))
    med_id = "bone-medref-denosumab"
    concept = None
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] in ("MedicationRequest", "MedicationStatement"):
            concept = r.pop("medicationCodeableConcept")
            r["medicationReference"] = {"reference": f"Medication/{med_id}"}
    assert concept is not None
    bundle["entry"].append({"fullUrl": f"urn:uuid:{med_id}",
                            "resource": {"resourceType": "Medication", "id": med_id, "code": concept},
                            "request": {"method": "PUT", "url": f"Medication/{med_id}"}})
    return bundle, med_id


def test_a_medication_named_by_reference_is_read_from_the_server(service, fhir_server, scenario_request):
    bundle, med_id = medication_reference_bundle()
    fhir_server.load(bundle)
    body = hook_request(fhir_server, "bone-medref")
    r = service.post(f"/cds-services/{SERVICE_ID}", body, timeout=30)
    assert r.status_code == 200, r.text
    engine = Engine(Settings.from_env(environ={"CDS_AUTH_DISABLED": "true"}))
    try:
        service_def = engine.services[SERVICE_ID]
        # the same Bundle as a prefetch: the Medication goes in as a search include, nothing is read
        expected = engine.call(SERVICE_ID, bundle_to_request(bundle, None, service_def.prefetch, "patient-view"))
        # and the drug is recognised through its Medication: the cards are example patient 5's
        by_code = engine.call(SERVICE_ID, scenario_request(5)).cards
    finally:
        engine.close()
    assert expected.medications == {}
    assert essentials(r.json()["cards"]) == essentials(expected.cards) == essentials(by_code)
    lines = [json.loads(line) for line in service.log.read_text().splitlines() if body["hookInstance"] in line]
    [call] = [line for line in lines if line.get("path") == f"/cds-services/{SERVICE_ID}"]
    assert call["medications"] == {f"Medication/{med_id}": "fetched"}, call
