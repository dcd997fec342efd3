"""order-select and order-sign through the real service process (authentication on), with no
prefetch: every key is fetched from the real FHIR server loaded with the example patients."""
from __future__ import annotations

import jsonschema
import pytest

from cds_service.engine import load_schema
from cds_service.services.orders import SELECT_ID, SIGN_ID
from tests.e2e.test_patient_view_e2e import hook_request
from tests.orders.test_orders_http import bundle, draft, service_request

pytestmark = pytest.mark.e2e
VALIDATOR = jsonschema.Draft202012Validator(load_schema("cds-response.schema.json"),
                                            format_checker=jsonschema.FormatChecker())


def order_call(service, fhir, pid: str, hook: str, drafts: dict, selections: list[str] | None = None) -> list[dict]:
    body = hook_request(fhir, pid)
    body["hook"] = hook
    body["context"]["draftOrders"] = drafts
    if selections is not None:
        body["context"]["selections"] = selections
    assert "prefetch" not in body
    r = service.post(f"/cds-services/{SELECT_ID if hook == 'order-select' else SIGN_ID}", body, timeout=30)
    assert r.status_code == 200, r.text
    assert not list(VALIDATOR.iter_errors(r.json()))
    return r.json()["cards"]


def test_discovery_lists_the_order_services(service):
    services = {s["id"]: s["hook"] for s in service.get("/cds-services").json()["services"]}
    assert services[SELECT_ID] == "order-select" and services[SIGN_ID] == "order-sign"


def test_order_sign_alendronate_for_egfr_25_is_critical(service, fhir_server):
    cards = order_call(service, fhir_server, "bone-03", "order-sign",
                       bundle(service_request("sr", "bone-03"), draft("alen", "alendronate", "bone-03")))
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "egfr" in cards[0]["detail"].lower() and "25" in cards[0]["detail"]
    acts = {a["type"]: a for s in cards[0]["suggestions"] for a in s["actions"]}
    assert acts["delete"]["resourceId"] == "MedicationRequest/alen"
    assert acts["update"]["resource"]["id"] == "alen"


def test_order_select_safe_romosozumab_gives_no_card(service, fhir_server):
    drafts = bundle(draft("romo", "romosozumab", "bone-01"), draft("other", "alendronate", "bone-01"))
    assert order_call(service, fhir_server, "bone-01", "order-select", drafts, ["MedicationRequest/romo"]) == []


def test_order_select_recent_mi_from_the_fhir_server(service, fhir_server):
    cards = order_call(service, fhir_server, "bone-02", "order-select", bundle(draft("romo", "romosozumab", "bone-02")),
                       ["MedicationRequest/romo"])
    assert [c["indicator"] for c in cards] == ["critical"]


def test_order_sign_missing_labs_for_bone_13(service, fhir_server):
    cards = order_call(service, fhir_server, "bone-13", "order-sign", bundle(draft("romo", "romosozumab", "bone-13")))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning"
    codes = {c["code"] for s in cards[0]["suggestions"] for a in s["actions"] if a["type"] == "create"
             for c in a["resource"]["code"]["coding"]}
    assert codes == {"17861-6", "62292-8", "2160-0"}


def test_order_sign_denosumab_active_on_the_server_then_stopped(service, fhir_server):
    cards = order_call(service, fhir_server, "bone-05", "order-sign",
                       bundle(draft("dmab", "denosumab", "bone-05", status="stopped")))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning"


def test_sandbox_style_empty_draft_is_no_card(service, fhir_server):
    d = {"resourceType": "MedicationRequest", "id": "new", "status": "draft",
         "subject": {"reference": "Patient/bone-03"}}
    assert order_call(service, fhir_server, "bone-03", "order-select", bundle(d), ["MedicationRequest/new"]) == []


def test_missing_draft_orders_is_400(service, fhir_server):
    body = hook_request(fhir_server, "bone-03")
    body["hook"] = "order-sign"
    r = service.post(f"/cds-services/{SIGN_ID}", body)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
