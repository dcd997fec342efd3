"""Cards for treatment, safety, management and monitoring, and the FHIR resources they suggest."""
from __future__ import annotations

import re
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.cards.advice import advice_cards
from cds_service.clinical.advice import advise

from .test_advice import DENOSUMAB, build, condition, day, high, labs, lab, months_ago, statement, t, very_high
from .test_interpretation import PID

TOPICS = {"bmd-interpretation", "treatment", "therapy-management", "safety", "monitoring", "supportive-care"}
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


@pytest.fixture()
def cards(knowledge):
    def _cards(*resources: dict[str, Any], sex: str = "female", age: int = 65) -> list[dict[str, Any]]:
        interp, facts = build(knowledge, *resources, sex=sex, age=age)
        return advice_cards(advise(interp, facts, knowledge), facts, knowledge)
    return _cards


def topic(c: dict[str, Any]) -> str:
    return c["source"]["topic"]["code"]


def of(cs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [c for c in cs if topic(c) == name]


def resources(c: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [a["resource"] for s in c.get("suggestions", []) for a in s.get("actions", [])
            if a.get("resource", {}).get("resourceType") == rtype]


def drug_codes(c: dict[str, Any]) -> list[str]:
    return [r["medicationCodeableConcept"]["coding"][0]["code"] for r in resources(c, "MedicationRequest")]


SCENARIOS = {
    "very_high": lambda: very_high(),
    "high": lambda: high(),
    "egfr_25": lambda: high(egfr=25),
    "vitamin_d_low_old_labs": lambda: [t("spine", -2.9), *labs(day(400), vitamin_d=None), lab("vitamin_d", 12)],
    "denosumab_overdue": lambda: [t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(7.5))],
    "all_blocked": lambda: very_high(condition("M88.0"), calcium=8.0),
    "mi": lambda: very_high(condition("I21.9", onset=months_ago(5))),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_card_has_an_allowed_topic_and_a_cited_guideline(cards, name):
    cs = cards(*SCENARIOS[name]())
    assert cs
    for c in cs:
        assert topic(c) in TOPICS
        assert re.search(r"<https://[^>\s]+>", c["detail"]), c["summary"]
        assert c["source"]["url"].startswith("https://")
        assert c["indicator"] in ("info", "warning", "critical")
        assert len(c["summary"]) < 140


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_medication_request_is_a_valid_draft_proposal(cards, knowledge, name):
    cs = cards(*SCENARIOS[name]())
    found = [r for c in cs for r in resources(c, "MedicationRequest")]
    generic = {knowledge.drugs[d].label for d in knowledge.drugs}
    for r in found:
        MedicationRequest.model_validate(r)
        assert r["status"] == "draft"
        assert r["intent"] == "proposal"
        assert r["subject"]["reference"] == f"Patient/{PID}"
        coding = r["medicationCodeableConcept"]["coding"]
        assert coding[0]["system"] == RXNORM and coding[0]["code"]
        assert r["medicationCodeableConcept"]["text"] in generic
        di = r["dosageInstruction"][0]
        assert di["text"]
        assert di["timing"]["repeat"]["period"]
    if name != "all_blocked":
        assert found


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_service_request_is_valid_and_loinc_coded(cards, name):
    for c in cards(*SCENARIOS[name]()):
        for r in resources(c, "ServiceRequest"):
            ServiceRequest.model_validate(r)
            assert r["status"] == "draft" and r["intent"] == "proposal"
            assert r["subject"]["reference"] == f"Patient/{PID}"
            assert r["code"]["coding"][0]["system"] == LOINC
            assert re.fullmatch(r"\d+-\d", r["code"]["coding"][0]["code"])


def test_very_high_risk_untreated_treatment_card(cards):
    cs = cards(*very_high())
    [c] = of(cs, "treatment")
    assert c["indicator"] == "critical"
    assert c["selectionBehavior"] == "at-most-one"
    rec = [s for s in c["suggestions"] if s.get("isRecommended")]
    assert len(rec) == 1
    assert "romosozumab" in rec[0]["label"]
    assert drug_codes(c) == ["2123184", "1435115", "1921082", "705824", "993452"]
    assert "ACP-2023" in c["detail"] or "American College of Physicians" in c["detail"]


def test_high_risk_treatment_card_is_a_warning(cards):
    [c] = of(cards(*high()), "treatment")
    assert c["indicator"] == "warning"
    assert c["selectionBehavior"] == "at-most-one"
    assert [s.get("isRecommended") for s in c["suggestions"]].count(True) == 1
    assert drug_codes(c) == ["904431", "905024", "705824"]
    assert "alendronate" in c["suggestions"][0]["label"] and c["suggestions"][0]["isRecommended"] is True


def test_blocked_drug_is_explained_not_ordered(cards):
    [c] = of(cards(*very_high(condition("I21.9", onset=months_ago(5)))), "treatment")
    assert "2123184" not in drug_codes(c)
    assert "Not offered" in c["detail"]
    assert "romosozumab" in c["detail"].split("Not offered", 1)[1].lower()
    assert [s.get("isRecommended") for s in c["suggestions"]].count(True) == 1


def test_nothing_offered_treatment_card_has_no_orders(cards):
    cs = cards(*very_high(condition("M88.0"), calcium=8.0), sex="male", age=70)
    [c] = of(cs, "treatment")
    assert "suggestions" not in c and "selectionBehavior" not in c
    assert "no drug can start yet" in c["summary"]


def test_no_treatment_card_when_no_plan(cards):
    assert of(cards(t("spine", -0.5), *labs()), "treatment") == []
    assert of(cards(t("spine", -1.8), *labs()), "treatment") == []


def test_egfr_25_safety_card_and_denosumab_warning(cards):
    cs = cards(*high(egfr=25))
    safety = of(cs, "safety")
    assert safety and all(c["indicator"] == "warning" for c in safety)
    assert any("eGFR" in c["summary"] or "kidney" in c["summary"].lower() for c in safety)
    [tc] = of(cs, "treatment")
    assert drug_codes(tc) == ["993452"]
    assert "hypocalcaemia" in tc["detail"]
    for blocked in ("904431", "905024", "705824", "904932"):
        assert blocked not in [code for c in cs for code in drug_codes(c)]


def test_vitamin_d_deficiency_safety_card_offers_cholecalciferol(cards):
    cs = cards(t("spine", -2.9), *labs(vitamin_d=None), lab("vitamin_d", 12))
    safety = [c for c in of(cs, "safety") if "2418" in drug_codes(c)]
    assert len(safety) == 1
    assert safety[0]["indicator"] == "warning"
    [tc] = of(cs, "treatment")
    assert "705824" not in drug_codes(tc) and "993452" not in drug_codes(tc)


def test_overdue_denosumab_management_card_is_critical(cards):
    cs = cards(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(7.5)))
    [c] = [c for c in of(cs, "therapy-management") if "overdue" in c["summary"].lower()]
    assert c["indicator"] == "critical"
    assert c["selectionBehavior"] == "at-most-one"
    labels = [s["label"] for s in c["suggestions"]]
    assert labels[0].startswith("Continue denosumab")
    # rules §6.1: "continue" carries the draft order for the dose that is due, and is the recommended one
    [dose] = c["suggestions"][0]["actions"]
    assert dose["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == "993452"
    assert c["suggestions"][0]["isRecommended"] is True
    assert drug_codes(c) == ["993452", "705824", "904431"]
    assert [s.get("isRecommended") for s in c["suggestions"]].count(True) == 1


def test_monitoring_card_orders_missing_labs_with_any(cards):
    cs = cards(t("spine", -2.6), *labs(day(400)))
    [c] = of(cs, "monitoring")
    assert c["selectionBehavior"] == "any"
    codes = [r["code"]["coding"][0]["code"] for r in resources(c, "ServiceRequest")]
    assert {"17861-6", "2777-1", "62292-8", "2731-8", "2160-0", "3016-3", "83014-1"} == set(codes)


def test_no_monitoring_card_without_orders(cards):
    assert of(cards(t("spine", -2.0), *labs()), "monitoring") == []
