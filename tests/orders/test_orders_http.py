"""order-select and order-sign through the Flask test client: every safety check on a draft
osteoporosis order, with draftOrders bundles shaped as CDS clients send them."""
from __future__ import annotations

import copy
from datetime import date, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.clinical.facts import FactBuilder
from cds_service.services.orders import SELECT_ID, SIGN_ID
from cds_service.services.patient_view import prefetch_templates
from tests.conftest import post_hook

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SELECT_URL = f"/cds-services/{SELECT_ID}"
SIGN_URL = f"/cds-services/{SIGN_ID}"
PRODUCTS = {
    "alendronate": ("904431", "alendronate sodium 70 MG Oral Tablet", "70 mg by mouth once weekly"),
    "risedronate": ("905024", "risedronate sodium 35 MG Oral Tablet", "35 mg by mouth once weekly"),
    "zoledronic_acid": ("705824", "zoledronic acid 5 MG in 100 ML Injection", "5 mg IV once yearly"),
    "denosumab": ("993452", "denosumab 60 MG/ML Prefilled Syringe [Prolia]", "60 mg SC every 6 months"),
    "teriparatide": ("1435115", "teriparatide 0.25 MG/ML pen injector", "20 mcg SC daily"),
    "abaloparatide": ("1921082", "abaloparatide pen injector [Tymlos]", "80 mcg SC daily"),
    "romosozumab": ("2123184", "romosozumab", "210 mg SC monthly"),
}


# -- builders -----------------------------------------------------------------------------------
def draft(rid: str, drug: str, pid: str = "bone-01", status: str = "draft", **overrides: Any) -> dict[str, Any]:
    """A draft MedicationRequest as an EHR sends it in draftOrders."""
    code, display, dose = PRODUCTS[drug]
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                      "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "dosageInstruction": [{"text": dose}],
    }
    r.update(overrides)
    return {k: v for k, v in r.items() if v is not None}


def service_request(rid: str, pid: str = "bone-01") -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "subject": {"reference": f"Patient/{pid}"}}


def bundle(*resources: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def ago(months: float = 0, days: int = 0) -> str:
    return (date.today() - timedelta(days=int(days + months * 30.4375))).isoformat()


def condition(rid: str, code: str, display: str, onset: str, pid: str = "bone-01") -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "code": {"coding": [{"system": ICD, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": onset}


def statement(rid: str, drug: str, pid: str = "bone-01", when: str | None = None, start: str | None = None,
              end: str | None = None, status: str = "completed") -> dict[str, Any]:
    code, display, _ = PRODUCTS[drug]
    s: dict[str, Any] = {"resourceType": "MedicationStatement", "id": rid, "status": status,
                         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                                       "text": display},
                         "subject": {"reference": f"Patient/{pid}"}}
    if when:
        s["effectiveDateTime"] = when
    if start:
        s["effectivePeriod"] = {"start": start, **({"end": end} if end else {})}
    return s


def order_request(scenario_request, number: int, hook: str, drafts: dict[str, Any] | None,
                  selections: list[str] | None = None, extra: list[dict[str, Any]] | None = None,
                  gender: str | None = None) -> dict[str, Any]:
    """Scenario N's patient-view request turned into an order-select/order-sign request."""
    req = copy.deepcopy(scenario_request(number))
    req["hook"] = hook
    if drafts is not None:
        req["context"]["draftOrders"] = drafts
    if selections is not None:
        req["context"]["selections"] = selections
    keys = {"Condition": "conditions", "MedicationStatement": "medicationStatements",
            "MedicationRequest": "medicationRequests", "Observation": "labs"}
    for r in extra or []:
        req["prefetch"][keys[r["resourceType"]]]["entry"].append({"resource": r})
    if gender:
        req["prefetch"]["patient"]["gender"] = gender
    return req


def call(client, response_validator, req: dict[str, Any], url: str | None = None) -> list[dict[str, Any]]:
    url = url or (SELECT_URL if req["hook"] == "order-select" else SIGN_URL)
    resp = post_hook(client, req, url)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    errors = sorted(response_validator.iter_errors(body), key=str)
    assert not errors, [e.message for e in errors]
    for c in body["cards"]:
        assert "**Sources**" in c["detail"], c["summary"]
        assert c["overrideReasons"], c["summary"]
        assert c["source"]["label"].startswith("Bone-health CDS (")
    return body["cards"]


def sign(client, response_validator, scenario_request, number, *resources, **kw):
    return call(client, response_validator, order_request(scenario_request, number, "order-sign",
                                                          bundle(*resources), **kw))


def actions(card: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [a for s in card.get("suggestions", []) for a in s["actions"] if a["type"] == kind]


def drug_of(knowledge, resource: dict[str, Any]) -> str | None:
    return FactBuilder(knowledge).match_drug(resource.get("medicationCodeableConcept"))


# -- discovery ----------------------------------------------------------------------------------
def test_discovery_lists_both_order_services_with_their_hooks_and_prefetch(client, knowledge):
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    assert services[SELECT_ID]["hook"] == "order-select"
    assert services[SIGN_ID]["hook"] == "order-sign"
    for sid in (SELECT_ID, SIGN_ID):
        assert services[sid]["prefetch"] == prefetch_templates(knowledge)
        assert services[sid]["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert set(services[sid]["prefetch"]) >= {"medicationRequests", "medicationStatements", "conditions", "labs"}


# -- contraindications ----------------------------------------------------------------------------
def test_alendronate_for_egfr_25_is_critical_with_a_safe_replacement_and_a_delete(
        client, response_validator, scenario_request, knowledge):
    order = draft("alen-1", "alendronate", "bone-03")
    cards = sign(client, response_validator, scenario_request, 3, order)
    assert len(cards) == 1
    c = cards[0]
    assert c["indicator"] == "critical"
    assert "alendronate" in c["summary"].lower() and "egfr" in c["detail"].lower()
    assert "25" in c["detail"] and "Fosamax" in c["detail"] or "LABELS" in c["detail"] or "label" in c["detail"].lower()
    updates = actions(c, "update")
    assert len(updates) == 1
    new = updates[0]["resource"]
    MedicationRequest.model_validate(new)
    assert new["id"] == "alen-1" and new["status"] == "draft" and new["intent"] == "order"
    assert new["subject"] == {"reference": "Patient/bone-03"}
    alt = drug_of(knowledge, new)
    assert alt is not None and alt not in {"alendronate", "zoledronic_acid", "risedronate", "ibandronate"}
    deletes = actions(c, "delete")
    assert deletes == [{"type": "delete", "description": deletes[0]["description"],
                        "resourceId": "MedicationRequest/alen-1"}]
    assert c["selectionBehavior"] == "at-most-one"
    # exactly one suggestion is recommended
    assert sum(1 for s in c["suggestions"] if s.get("isRecommended")) == 1


def test_replacement_keeps_an_active_status_and_other_fields_of_the_draft(client, response_validator, scenario_request):
    order = draft("alen-2", "alendronate", "bone-03", status="active", note=[{"text": "keep me"}],
                  authoredOn=date.today().isoformat())
    c, = sign(client, response_validator, scenario_request, 3, order)
    new = actions(c, "update")[0]["resource"]
    assert new["status"] == "active" and new["note"] == [{"text": "keep me"}]
    assert new["dosageInstruction"] != order["dosageInstruction"]


@pytest.mark.parametrize("number,kw,word", [(2, {}, "myocardial"), (1, {"gender": "male"}, "women")])
def test_romosozumab_blocked_after_recent_mi_and_for_a_man(client, response_validator, scenario_request, knowledge,
                                                           number, kw, word):
    pid = f"bone-{number:02d}"
    cards = sign(client, response_validator, scenario_request, number, draft("romo", "romosozumab", pid), **kw)
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert len(crit) == 1, [c["summary"] for c in cards]
    assert "romosozumab" in crit[0]["summary"].lower() and word in crit[0]["detail"].lower()
    new = actions(crit[0], "update")[0]["resource"]
    assert drug_of(knowledge, new) in {"teriparatide", "abaloparatide", "zoledronic_acid", "denosumab"}
    assert actions(crit[0], "delete")[0]["resourceId"] == "MedicationRequest/romo"


def test_romosozumab_mi_card_names_the_condition(client, response_validator, scenario_request):
    c, = sign(client, response_validator, scenario_request, 2, draft("romo", "romosozumab", "bone-02"))
    assert "I21.4" in c["detail"] or "NSTEMI" in c["detail"]


@pytest.mark.parametrize("drug", ["teriparatide", "abaloparatide"])
def test_pth_analogue_blocked_for_high_calcium_and_pth(client, response_validator, scenario_request, drug):
    cards = sign(client, response_validator, scenario_request, 8, draft("pth", drug, "bone-08"))
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert len(crit) == 1
    assert "hyperparathyroidism" in crit[0]["detail"].lower() and "10.9" in crit[0]["detail"]
    assert "AACE" in crit[0]["detail"]


@pytest.mark.parametrize("code,display", [("M88.0", "Osteitis deformans of skull"),
                                          ("Z92.3", "Personal history of irradiation")])
def test_teriparatide_blocked_for_paget_and_skeletal_radiation(client, response_validator, scenario_request, knowledge,
                                                               code, display):
    cond = condition("c-x", code, display, ago(months=30))
    cards = sign(client, response_validator, scenario_request, 1, draft("teri", "teriparatide"), extra=[cond])
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert len(crit) == 1, [c["summary"] for c in cards]
    assert code in crit[0]["detail"] or display in crit[0]["detail"]
    new = actions(crit[0], "update")[0]["resource"]
    assert drug_of(knowledge, new) not in {"teriparatide", "abaloparatide"}
    # without the condition, teriparatide is safe for scenario 1
    assert sign(client, response_validator, scenario_request, 1, draft("teri", "teriparatide")) == []


@pytest.mark.parametrize("drug", ["alendronate", "risedronate"])
def test_oral_bisphosphonate_blocked_for_achalasia(client, response_validator, scenario_request, knowledge, drug):
    cards = sign(client, response_validator, scenario_request, 9, draft("oral", drug, "bone-09"))
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "achalasia" in cards[0]["detail"].lower()
    new = actions(cards[0], "update")[0]["resource"]
    assert knowledge.drugs[drug_of(knowledge, new)].drug_class != "oral_bisphosphonate"


def test_zoledronic_acid_for_egfr_25_is_critical(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 3, draft("zol", "zoledronic_acid", "bone-03"))
    assert [c["indicator"] for c in cards] == ["critical", "warning"]
    assert "ionized calcium" in cards[1]["detail"]  # eGFR < 30 and no ionized calcium (rules §6.4)


@pytest.mark.parametrize("drug", ["zoledronic_acid", "denosumab"])
def test_zoledronic_acid_and_denosumab_blocked_for_vitamin_d_12(client, response_validator, scenario_request, drug):
    cards = sign(client, response_validator, scenario_request, 7, draft("d", drug, "bone-07"))
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert len(crit) == 1
    assert "25(OH)D" in crit[0]["detail"] and "12" in crit[0]["detail"]


def test_alendronate_blocked_for_low_calcium(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 7, draft("a", "alendronate", "bone-07"))
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert len(crit) == 1 and "calcium" in crit[0]["detail"].lower() and "8.3" in crit[0]["detail"]


def test_denosumab_for_egfr_25_is_a_caution_not_critical(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 3, draft("dmab", "denosumab", "bone-03"))
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "hypocalcaemia" in cards[0]["detail"].lower()
    assert not actions(cards[0], "update")


# -- duplicates -----------------------------------------------------------------------------------
def test_alendronate_ordered_while_alendronate_is_active(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 6, draft("alen-new", "alendronate", "bone-06"))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning"
    assert "already active" in cards[0]["summary"]
    assert [a["resourceId"] for a in actions(cards[0], "delete")] == ["MedicationRequest/alen-new"]


def test_zoledronic_acid_ordered_while_on_alendronate(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 6, draft("zol", "zoledronic_acid", "bone-06"))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning"
    assert "duplicate" in cards[0]["summary"].lower() and "alendronate" in cards[0]["detail"]
    assert actions(cards[0], "delete")[0]["resourceId"] == "MedicationRequest/zol"


def test_two_antiresorptive_drafts_in_one_order_sign_bundle(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 1, draft("alen", "alendronate"),
                 service_request("lab-1"), draft("dmab", "denosumab"))
    dup = [c for c in cards if "duplicate" in c["summary"].lower()]
    assert len(dup) == 2
    assert {actions(c, "delete")[0]["resourceId"] for c in dup} == {"MedicationRequest/alen", "MedicationRequest/dmab"}
    assert all(c["indicator"] == "warning" for c in cards)


# -- course limits --------------------------------------------------------------------------------
def test_teriparatide_beyond_24_months(client, response_validator, scenario_request):
    history = statement("teri-old", "teriparatide", start=ago(months=40), end=ago(months=15))
    cards = sign(client, response_validator, scenario_request, 1, draft("teri", "teriparatide"), extra=[history])
    limit = [c for c in cards if "24" in c["summary"]]
    assert len(limit) == 1 and limit[0]["indicator"] == "warning"
    assert "teri-old" in limit[0]["detail"]
    assert actions(limit[0], "delete")[0]["resourceId"] == "MedicationRequest/teri"


def test_teriparatide_then_abaloparatide_counts_together(client, response_validator, scenario_request):
    extra = [statement("t", "teriparatide", start=ago(months=40), end=ago(months=27)),
             statement("a", "abaloparatide", start=ago(months=20), end=ago(months=8))]
    cards = sign(client, response_validator, scenario_request, 1, draft("abl", "abaloparatide"), extra=extra)
    assert any("24" in c["summary"] for c in cards), [c["summary"] for c in cards]


def test_teriparatide_for_20_months_is_below_the_limit(client, response_validator, scenario_request):
    history = statement("teri-old", "teriparatide", start=ago(months=30), end=ago(months=10))
    assert sign(client, response_validator, scenario_request, 1, draft("teri", "teriparatide"), extra=[history]) == []


@pytest.mark.parametrize("doses,expect", [(12, 1), (11, 0)])
def test_romosozumab_after_12_doses(client, response_validator, scenario_request, doses, expect):
    extra = [statement(f"romo-{i}", "romosozumab", when=ago(months=14 - i)) for i in range(doses)]
    cards = sign(client, response_validator, scenario_request, 1, draft("romo", "romosozumab"), extra=extra)
    limit = [c for c in cards if "doses" in c["summary"]]
    assert len(limit) == expect, [c["summary"] for c in cards]
    if expect:
        assert limit[0]["indicator"] == "warning" and "12" in limit[0]["summary"]


# -- denosumab ------------------------------------------------------------------------------------
def test_denosumab_stopped_without_a_follow_on(client, response_validator, scenario_request, knowledge):
    cards = sign(client, response_validator, scenario_request, 5, draft("dmab-stop", "denosumab", "bone-05",
                                                                        status="stopped"))
    assert len(cards) == 1 and cards[0]["indicator"] == "warning"
    assert "ES-2019" in cards[0]["detail"] or "Endocrine Society" in cards[0]["detail"]
    created = [drug_of(knowledge, a["resource"]) for a in actions(cards[0], "create")]
    assert set(created) == {"zoledronic_acid", "alendronate"}
    for a in actions(cards[0], "create"):
        MedicationRequest.model_validate(a["resource"])
        assert a["resource"]["subject"]["reference"] == "Patient/bone-05"
    assert cards[0]["selectionBehavior"] == "any"


def test_denosumab_stopped_with_a_bisphosphonate_in_the_same_bundle(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 5,
                 draft("dmab-stop", "denosumab", "bone-05", status="stopped"),
                 draft("zol", "zoledronic_acid", "bone-05"))
    assert not [c for c in cards if "stopped" in c["summary"].lower() or "follow-on" in c["summary"].lower()]
    # the bisphosphonate is the follow-on, not a second antiresorptive next to a denosumab being stopped
    assert not [c for c in cards if "duplicate" in c["summary"].lower()], [c["summary"] for c in cards]


def test_denosumab_renewed_in_the_same_bundle_is_not_a_stop(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 5,
                 draft("dmab-old", "denosumab", "bone-05", status="stopped"),
                 draft("dmab-new", "denosumab", "bone-05"))
    assert not [c for c in cards if "follow-on" in c["summary"].lower()], [c["summary"] for c in cards]


def test_switch_from_denosumab_to_an_anabolic(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 5, draft("romo", "romosozumab", "bone-05"))
    assert any("after denosumab" in c["summary"] for c in cards), [c["summary"] for c in cards]


def test_stopping_alendronate_gives_no_card(client, response_validator, scenario_request):
    assert sign(client, response_validator, scenario_request, 6,
                draft("alen-stop", "alendronate", "bone-06", status="stopped")) == []


# -- missing labs ---------------------------------------------------------------------------------
def test_missing_labs_before_the_first_dose(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 13, draft("romo", "romosozumab", "bone-13"))
    assert len(cards) == 1
    c = cards[0]
    assert c["indicator"] == "warning" and c["selectionBehavior"] == "any"
    creates = actions(c, "create")
    codes = set()
    for a in creates:
        assert a["resource"]["resourceType"] == "ServiceRequest"
        ServiceRequest.model_validate(a["resource"])
        assert a["resource"]["subject"]["reference"] == "Patient/bone-13"
        codes |= {cd["code"] for cd in a["resource"]["code"]["coding"] if cd["system"] == "http://loinc.org"}
    assert codes == {"17861-6", "62292-8", "2160-0"}


def test_no_missing_labs_card_for_recent_labs(client, response_validator, scenario_request):
    assert sign(client, response_validator, scenario_request, 1, draft("zol", "zoledronic_acid")) == []


# -- safe order, selections -----------------------------------------------------------------------
def test_a_safe_order_gets_no_card(client, response_validator, scenario_request):
    assert sign(client, response_validator, scenario_request, 1, draft("romo", "romosozumab")) == []
    req = order_request(scenario_request, 1, "order-select", bundle(draft("romo", "romosozumab")),
                        selections=["MedicationRequest/romo"])
    assert call(client, response_validator, req) == []


def test_order_select_checks_only_the_selected_order(client, response_validator, scenario_request):
    drafts = bundle(draft("alen", "alendronate", "bone-03"), service_request("sr", "bone-03"),
                    draft("romo", "romosozumab", "bone-03"))
    req = order_request(scenario_request, 3, "order-select", drafts, selections=["MedicationRequest/romo"])
    # romosozumab is not blocked for eGFR 25; it only asks for an ionized calcium first (rules §6.4)
    romo = call(client, response_validator, req)
    assert [c["indicator"] for c in romo] == ["warning"] and "ionized calcium" in romo[0]["detail"]
    req = order_request(scenario_request, 3, "order-select", drafts, selections=["MedicationRequest/alen"])
    cards = call(client, response_validator, req)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert actions(cards[0], "delete")[0]["resourceId"] == "MedicationRequest/alen"


def test_order_sign_checks_every_order(client, response_validator, scenario_request):
    cards = sign(client, response_validator, scenario_request, 3, draft("alen", "alendronate", "bone-03"),
                 draft("romo", "romosozumab", "bone-03"), draft("ris", "risedronate", "bone-03"))
    crit = [c for c in cards if c["indicator"] == "critical"]
    assert {actions(c, "delete")[0]["resourceId"] for c in crit} == {"MedicationRequest/alen", "MedicationRequest/ris"}


def test_order_recognised_by_ingredient_code_and_by_name(client, response_validator, scenario_request):
    by_ingredient = draft("a1", "alendronate", "bone-03",
                          medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "46041"}]})
    by_name = draft("a2", "alendronate", "bone-03", medicationCodeableConcept={"text": "Fosamax 70 mg weekly"})
    for d in (by_ingredient, by_name):
        cards = sign(client, response_validator, scenario_request, 3, d)
        assert [c["indicator"] for c in cards] == ["critical"], d["id"]


# -- drafts still being composed, malformed drafts -----------------------------------------------
@pytest.mark.parametrize("drafts", [
    bundle(draft("x", "alendronate", "bone-03", medicationCodeableConcept=None)),
    bundle(draft("x", "alendronate", "bone-03", medicationCodeableConcept=None, intent=None, dosageInstruction=None)),
    bundle(draft("x", "alendronate", "bone-03", medicationCodeableConcept=None,
                 medicationReference={"reference": "Medication/m1"})),
    bundle(service_request("sr", "bone-03")),
    bundle(),
    {"resourceType": "Bundle", "type": "collection"},
    {"resourceType": "Bundle", "entry": {"resource": draft("x", "alendronate", "bone-03")}},
    {"resourceType": "Bundle", "entry": ["MedicationRequest/x", None, 3, {"resource": "x"}, {}]},
    bundle(draft("x", "alendronate", "bone-03", medicationCodeableConcept="alendronate")),
    bundle(draft("x", "alendronate", "bone-03", medicationCodeableConcept={"coding": "904431"})),
], ids=["no-medication", "sandbox-empty", "medicationReference", "service-request", "empty", "no-entry",
        "entry-not-list", "entry-strings", "concept-string", "coding-not-list"])
def test_incomplete_drafts_are_skipped_quietly(client, response_validator, scenario_request, drafts):
    for hook, sel in (("order-sign", None), ("order-select", ["MedicationRequest/x"])):
        req = order_request(scenario_request, 3, hook, drafts, selections=sel)
        assert call(client, response_validator, req) == []


def test_draft_without_intent_or_dosage_is_still_checked(client, response_validator, scenario_request):
    d = draft("x", "alendronate", "bone-03", intent=None, dosageInstruction=None, status=None, subject=None)
    cards = sign(client, response_validator, scenario_request, 3, d)
    assert [c["indicator"] for c in cards] == ["critical"]
    new = actions(cards[0], "update")[0]["resource"]
    MedicationRequest.model_validate(new)
    assert new["id"] == "x"


def test_draft_without_id_gets_a_card_without_suggestions_that_need_it(client, response_validator, scenario_request):
    d = draft("x", "alendronate", "bone-03")
    del d["id"]
    cards = sign(client, response_validator, scenario_request, 3, d)
    assert [c["indicator"] for c in cards] == ["critical"]
    assert not actions(cards[0], "delete") and not actions(cards[0], "update")


def test_draft_with_other_odd_fields_does_not_cause_a_5xx(client, response_validator, scenario_request):
    d = draft("x", "alendronate", "bone-03", authoredOn="not a date", dispenseRequest="bad")
    cards = call(client, response_validator, order_request(scenario_request, 3, "order-sign", bundle(d)))
    assert [c["indicator"] for c in cards] == ["critical"]
    new = actions(cards[0], "update")[0]["resource"]
    MedicationRequest.model_validate(new)
    assert new["id"] == "x" and new["status"] == "draft"
    assert actions(cards[0], "delete")[0]["resourceId"] == "MedicationRequest/x"


# -- malformed context ----------------------------------------------------------------------------
@pytest.mark.parametrize("hook,mutate", [
    ("order-sign", lambda ctx: ctx.pop("draftOrders")),
    ("order-select", lambda ctx: ctx.pop("draftOrders")),
    ("order-sign", lambda ctx: ctx.update(draftOrders={"resourceType": "MedicationRequest"})),
    ("order-sign", lambda ctx: ctx.update(draftOrders=[draft("x", "alendronate")])),
    ("order-select", lambda ctx: ctx.pop("selections")),
    ("order-select", lambda ctx: ctx.update(selections="MedicationRequest/x")),
], ids=["sign-no-drafts", "select-no-drafts", "not-a-bundle", "a-list", "no-selections", "selections-string"])
def test_malformed_context_is_a_400_operation_outcome(client, scenario_request, hook, mutate):
    req = order_request(scenario_request, 3, hook, bundle(draft("x", "alendronate", "bone-03")),
                        selections=["MedicationRequest/x"])
    mutate(req["context"])
    resp = post_hook(client, req, SELECT_URL if hook == "order-select" else SIGN_URL)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"]


def test_wrong_hook_for_the_service_is_a_400(client, scenario_request):
    req = order_request(scenario_request, 3, "order-select", bundle(), selections=[])
    resp = post_hook(client, req, SIGN_URL)
    assert resp.status_code == 400 and resp.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("status", [["stopped"], {"code": "stopped"}, [None]])
def test_a_draft_status_that_is_not_a_string_is_not_a_500(client, response_validator, scenario_request, status):
    """A malformed draft status reads as not stopping; the call still answers with cards (was a 500)."""
    d = draft("d1", "denosumab")
    d["status"] = status
    call(client, response_validator, order_request(scenario_request, 1, "order-sign", bundle(d)))


def test_a_medication_dated_at_the_end_of_the_calendar_is_not_a_500(client, response_validator, scenario_request):
    """A denosumab record dated 9999-12-31 used to overflow the next-dose arithmetic (a 500)."""
    req = order_request(scenario_request, 1, "order-sign", bundle(draft("d1", "alendronate")),
                        extra=[statement("s-far", "denosumab", when="9999-12-31")])
    call(client, response_validator, req)
    req["hook"] = "patient-view"
    req["context"].pop("draftOrders")
    resp = post_hook(client, req, "/cds-services/bone-health-patient-view")
    assert resp.status_code == 200, resp.get_data(as_text=True)
