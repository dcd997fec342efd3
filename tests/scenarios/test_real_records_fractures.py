"""Fractures as events (rules §6.3) on realistic records, through the Flask app: the cases that failed
when the first engine was tried on real charts (issue 14)."""
from __future__ import annotations

from datetime import date
from typing import Any, Callable

import pytest

from cds_service.cli import bundle_to_request
from cds_service.services.patient_view import prefetch_templates
from fhir_samples.scenarios import ICD, Builder, Scenario
from tests.conftest import hook_cards
from tests.scenarios.test_scenarios import ordered_drugs, service_requests, text, topic

SNOMED = "http://snomed.info/sct"
WORKUP = {"17861-6", "2777-1", "62292-8", "2731-8", "2160-0", "3016-3"}


def fracture_condition(b: Builder, code: str, display: str, *, system: str = ICD, onset: str | None = None,
                       recorded: str | None = None, encounter: str | None = None,
                       category: str = "encounter-diagnosis", synthea: bool = False) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition", "id": b._id("cond"),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "resolved" if not synthea else "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": category}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{b.pid}"},
    }
    if onset:
        r["onsetDateTime"] = onset
    if recorded:
        r["recordedDate"] = recorded
    if encounter:
        r["encounter"] = {"reference": encounter}
    b.resources.append(r)
    return r


@pytest.fixture()
def hook(client, knowledge, response_validator) -> Callable[..., list[dict]]:
    templates = prefetch_templates(knowledge)

    def call(build: Callable[[Builder], None], sex: str = "female", age: int = 72,
             encounters: list[dict[str, Any]] | None = None) -> list[dict]:
        b = Builder(Scenario(90, "real-record", "real record", sex, age, build), date.today())
        build(b)
        request = bundle_to_request(b.bundle(), None, templates, "patient-view")
        for enc in encounters or []:  # Condition?patient=..&_include=Condition:encounter
            request["prefetch"]["conditions"]["entry"].append({"resource": enc, "search": {"mode": "include"}})
        return hook_cards(client, response_validator, request)
    return call


def test_one_l1_fracture_coded_three_times_is_one_fracture(hook):
    """Emergency visit S32.010A, follow-up M80.08XA a month later, history Z87.310 on the problem list
    with only a recorded date two months ago: one old vertebral fracture, not "multiple fractures, one
    in the last 12 months" with a critical anabolic-first card."""
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -2.7, b.ago(days=20))
        b.labs(b.ago(days=25))
        fracture_condition(b, "S32.010A", "Wedge compression fracture of first lumbar vertebra, initial encounter",
                           onset=b.ago(years=2))
        fracture_condition(b, "M80.08XA", "Age-related osteoporosis with current pathological fracture, vertebra(e), "
                           "initial encounter", onset=b.ago(years=2, days=-35))
        fracture_condition(b, "Z87.310", "Personal history of (healed) osteoporosis fracture",
                           recorded=b.ago(months=2), category="problem-list-item")
    cards = hook(build)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "multiple fractures" not in interp["detail"]
    assert "last 12 months" not in interp["detail"]
    assert "**Fractures counted** (1" in interp["detail"]
    assert "vertebra (L1)" in interp["detail"]
    assert "Osteoporosis" in interp["summary"] and "very high" not in interp["summary"]
    (treat,) = topic(cards, "treatment")
    assert treat["indicator"] != "critical"
    assert "romosozumab" not in ordered_drugs(cards)
    assert {"alendronate", "risedronate", "zoledronic acid"} <= ordered_drugs(cards)


def test_femoral_neck_fracture_from_a_car_crash_is_not_a_fragility_fracture(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -1.4, b.ago(days=10))
        b.labs(b.ago(days=10))
        when = b.ago(months=3)
        fracture_condition(b, "S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter "
                           "for closed fracture", onset=when, encounter="Encounter/crash")
        fracture_condition(b, "V43.52XA", "Car driver injured in collision with other motor vehicle in traffic "
                           "accident, initial encounter", onset=when, encounter="Encounter/crash")
    cards = hook(build, age=66)
    (interp,) = topic(cards, "bmd-interpretation")
    assert interp["summary"].startswith("Low bone mass")
    assert "Osteoporosis" not in interp["summary"]
    assert "**Fractures not counted**" in interp["detail"]
    assert "not a fragility fracture" in interp["detail"] and "V43.52XA" in interp["detail"]
    assert not topic(cards, "treatment") or "romosozumab" not in ordered_drugs(cards)


def test_same_crash_coded_as_an_additional_coding_on_the_fracture(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -0.4, b.ago(days=10))
        r = fracture_condition(b, "S72.001A", "Fracture of neck of right femur", onset=b.ago(months=3))
        r["code"]["coding"].append({"system": ICD, "code": "V43.52XA", "display": "Car driver injured in collision"})
    cards = hook(build, age=66)
    (interp,) = topic(cards, "bmd-interpretation")
    assert interp["summary"].startswith("Bone density normal")
    assert "not a fragility fracture" in interp["detail"]


@pytest.mark.parametrize("with_dxa", [True, False])
def test_77_year_old_with_closed_hip_fracture_and_normal_t_score_has_osteoporosis(hook, with_dxa):
    def build(b: Builder) -> None:
        b.patient()
        if with_dxa:
            b.dxa("38267-1", -0.6, b.ago(days=30))
            b.dxa("38264-8", -0.9, b.ago(days=30))
        fracture_condition(b, "359817006", "Closed fracture of hip", system=SNOMED, onset=b.ago(months=2))
    cards = hook(build, age=77)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "Bone density normal" not in interp["summary"]
    assert interp["summary"].startswith("Osteoporosis (fracture-defined: hip fragility fracture)")
    assert "very high" in interp["summary"]  # a fracture in the last 12 months
    assert topic(cards, "treatment"), "a fracture-defined osteoporosis is treated"
    assert ordered_drugs(cards)
    requests = service_requests(cards)
    assert WORKUP <= requests, "the work-up labs"
    assert ("38268-9" in requests) is not with_dxa, "a DXA order when none is on record"


def test_hip_fracture_with_dxa_three_years_old_gets_a_dxa_order(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -1.8, b.ago(years=3))
        b.labs(b.ago(days=10))
        fracture_condition(b, "S72.002A", "Fracture of neck of left femur", onset=b.ago(months=1))
    cards = hook(build, age=80)
    assert "38268-9" in service_requests(cards)
    assert "fracture" in text(topic(cards, "monitoring"))


def test_synthea_style_fracture_still_works(hook):
    """Synthea: SNOMED code, onsetDateTime with a time and offset, an encounter reference by urn:uuid,
    no ICD-10-CM coding."""
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38265-5", -1.6, b.ago(days=40))
        b.labs(b.ago(days=40))
        fracture_condition(b, "5913000", "Fracture of neck of femur", system=SNOMED,
                           onset=b.ago(months=20) + "T08:14:31-05:00", recorded=b.ago(months=20) + "T08:14:31-05:00",
                           encounter="urn:uuid:2d4e1f0a-0000-4000-8000-000000000001", synthea=True)
    cards = hook(build, age=74)
    (interp,) = topic(cards, "bmd-interpretation")
    assert interp["summary"].startswith("Osteoporosis (fracture-defined: hip fragility fracture)")
    assert "last 12 months" not in interp["detail"]


def test_initial_encounter_dated_by_its_included_encounter(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -2.6, b.ago(days=10))
        b.labs(b.ago(days=10))
        fracture_condition(b, "S52.501A", "Fracture of lower end of right radius", recorded=b.ago(months=1),
                           encounter="Encounter/ed-1")
    enc = {"resourceType": "Encounter", "id": "ed-1", "status": "finished", "subject": {"reference": "Patient/bone-90"},
           "period": {"start": "2001-01-01T09:00:00Z"}}
    cards = hook(build, encounters=[enc])
    (interp,) = topic(cards, "bmd-interpretation")
    assert "2001-01-01" in interp["detail"] and "uncertain" not in interp["detail"]
    assert "last 12 months" not in interp["detail"]


def test_odd_fracture_records_never_fail(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -2.6, b.ago(days=10))
        fracture_condition(b, "S72.001A", "hip", onset="not a date", encounter="Encounter/")
        fracture_condition(b, "S72", "hip fracture NOS")
        fracture_condition(b, "S32.0", "lumbar fracture", recorded="2024-13-45")
        r = fracture_condition(b, "S72.001A", "hip", onset=b.ago(months=2))
        r["encounter"] = "Encounter/x"  # not a Reference
        r["evidence"] = {"code": "V43.52XA"}  # not a list
    cards = hook(build)
    assert topic(cards, "bmd-interpretation")


def test_fracture_on_denosumab_names_the_drug_and_asks_about_adherence(hook):
    def build(b: Builder) -> None:
        b.patient()
        b.dxa("38267-1", -2.8, b.ago(days=10))
        b.labs(b.ago(days=10))
        b.med_request("993452", "1 ML denosumab 60 MG/ML Prefilled Syringe", b.ago(months=14))
        fracture_condition(b, "S22.050A", "Wedge compression fracture of T5-T6 vertebra", onset=b.ago(months=4))
    cards = hook(build)
    all_text = text(cards)
    assert "Fracture on denosumab" in all_text
    assert "adherence" in all_text
    assert not any("failure" in c["summary"].lower() for c in cards)
    assert "fractures on therapy: treatment failure" not in all_text
