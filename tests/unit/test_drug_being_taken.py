"""The drug being taken is checked against the contraindications too (clinical rules §6.1): a safety
card says to stop or hold it and nothing says "continue"; denosumab is never simply stopped. Found on
Synthea's Cathryn Windler: alendronate with an eGFR of 24 got no word."""
from __future__ import annotations

from .fhir_builders import lines_of

import json

import pytest

from cds_service.cards.advice import advice_cards
from cds_service.clinical.advice import advise

from .test_advice import ALENDRONATE, DENOSUMAB, build, high, kinds, med, months_ago


@pytest.fixture()
def cards(knowledge):
    def _cards(*resources):
        interp, facts = build(knowledge, *resources)
        a = advise(interp, facts, knowledge)
        return a, advice_cards(a, facts, knowledge)
    return _cards


def safety(cs):
    return [c for c in cs if c["source"]["topic"]["code"] == "safety"]


@pytest.mark.parametrize("egfr, on_card", [(24, True), (34, True), (35, False)])
def test_alendronate_with_egfr_below_35_is_stopped_not_continued(cards, egfr, on_card):
    a, cs = cards(*high(med(ALENDRONATE, months_ago(80)), egfr=egfr))  # 6.6 years on alendronate
    stop = [c for c in safety(cs) if "no alendronate or zoledronic acid" in c["detail"]]
    assert bool(stop) is on_card
    if on_card:
        assert "is being taken: stop or hold it" in stop[0]["detail"]
        assert "continue-bisphosphonate" not in kinds(a) and "drug-holiday" not in kinds(a)
        assert "Continue alendronate" not in json.dumps(cs)
    else:
        assert "continue-bisphosphonate" in kinds(a)  # T −2.6 after 6.6 years: continue (ES-2019)


def test_denosumab_with_low_calcium_is_held_for_the_dose_never_simply_stopped(cards):
    a, cs = cards(*high(med(DENOSUMAB, months_ago(4)), calcium=7.9))
    [card] = [c for c in safety(cs) if "calcium below the reference range" in c["detail"]]
    assert "never stop denosumab without a hand-over" in card["detail"]
    assert "stop or hold it" not in card["detail"]
    assert any(m.kind.startswith("denosumab") for m in a.management)  # its dose reminder stays


def test_no_card_for_a_contraindication_of_a_drug_not_taken_and_not_chosen(cards):
    a, cs = cards(*high(med(DENOSUMAB, months_ago(4)), egfr=33))  # blocks alendronate, which is not taken
    assert not [c for c in safety(cs) if "no alendronate or zoledronic acid" in c["detail"]]


def test_acute_kidney_injury_blocks_zoledronic_acid_and_stops_the_yearly_infusion(cards):
    from .test_advice import ZOLEDRONIC, blocked, ids
    from .test_interpretation import condition
    aki = condition("N17.9", onset=months_ago(1))
    a, _ = cards(*high(aki))
    assert "acute-kidney-injury" in ids(a) and blocked(a) == {"zoledronic_acid"}
    assert "zoledronic_acid" not in a.treatment.offered
    a, cs = cards(*high(aki, med(ZOLEDRONIC, months_ago(40))))
    [card] = [c for c in safety(cs) if "acute kidney injury" in c["detail"]]
    assert "No zoledronic acid until kidney function has recovered" in card["detail"]
    assert "Continue zoledronic acid" not in json.dumps(cs)
    resolved = condition("N17.9", onset=months_ago(30), clinical="resolved")
    assert "acute-kidney-injury" not in ids(cards(*high(resolved))[0])


def test_overdue_denosumab_with_low_calcium_says_correct_first_not_give_now(cards):
    """Review finding: the critical overdue card said "Give the dose now" with calcium 7.6."""
    from .test_advice import statement
    a, cs = cards(*high(statement(DENOSUMAB, months_ago(8)), calcium=7.6))
    [m] = [m for m in a.management if m.kind == "denosumab-overdue"]
    assert "Correct first" in " ".join(lines_of(m)) and "Give the dose now" not in " ".join(lines_of(m))
    [card] = [c for c in cs if c["summary"].startswith("Denosumab dose overdue")]
    # 8 months after the last dose nothing is "already active": the dose to give once corrected, not recommended
    assert not [s for s in card["suggestions"] if "already active" in s["label"]]
    [dose] = [s for s in card["suggestions"] if s["label"].startswith("Denosumab: the dose to give once corrected")]
    assert not dose.get("isRecommended")
    assert dose["actions"][0]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == "993452"
    a, _ = cards(*high(statement(DENOSUMAB, months_ago(8))))
    assert "Give the dose now" in " ".join(lines_of(next(m for m in a.management if m.kind == "denosumab-overdue")))
