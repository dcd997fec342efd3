"""What the clinical review of the §6.1 cards changed, one test each (the records themselves are in
tests/scenarios/test_review_records.py)."""
from __future__ import annotations

from datetime import date

import pytest

from cds_service.cards import shorten
from cds_service.cards.resources import medication_request
from cds_service.clinical.advice import advise
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import interpret

from .fhir_builders import AS_OF, summary_of
from .test_advice import MONTH, labs, months_ago
from .test_interpretation import born, patient, t
from .test_therapy import administration, advice_of, ago, dispense, kinds, mgmt, osteoporosis, request, statement


def test_a_summary_is_never_cut_mid_word():
    text = ("Denosumab dose overdue: last dose 7.5 months ago; give it now or start a bisphosphonate (zoledronic acid "
            "or alendronate) before the rebound vertebral fractures begin")
    out = shorten(text)
    assert len(out) <= 140 and out.endswith("…")
    kept = out[:-1]
    assert text.startswith(kept) and text[len(kept)] in " (", out
    assert shorten("short summary") == "short summary"
    # one word longer than the limit can only be cut hard
    long = shorten("x" * 60 + " " + "y" * 100)
    assert len(long) <= 140 and long.startswith("x" * 60 + " y")


def test_a_follow_on_order_starts_when_the_previous_drug_stops_covering(knowledge):
    r = medication_request(knowledge, "zoledronic_acid", "p1", "after denosumab", date(2027, 3, 9))
    dosage = r["dosageInstruction"][0]
    assert dosage["timing"]["repeat"]["boundsPeriod"] == {"start": "2027-03-09"}
    assert "first dose on or after 2027-03-09" in dosage["text"]
    # a regimen with a course length keeps it: bounds[x] is one choice
    romo = medication_request(knowledge, "romosozumab", "p1", "x", date(2027, 3, 9))["dosageInstruction"][0]
    assert "boundsPeriod" not in romo["timing"]["repeat"] and "boundsDuration" in romo["timing"]["repeat"]
    assert "boundsPeriod" not in medication_request(knowledge, "zoledronic_acid", "p1", "x")["dosageInstruction"][0][
        "timing"]["repeat"]


def test_stopped_denosumab_drafts_the_bisphosphonate_from_the_due_date(knowledge):
    last = months_ago(3)
    a, _ = advice_of(knowledge, *osteoporosis(administration("denosumab", last),
                                              statement("denosumab", status="stopped", start=months_ago(30),
                                                        end=last)))
    m = mgmt(a, "denosumab-stopping")
    assert m.suggest_from is not None and m.suggest_from > AS_OF
    assert m.suggest == ["zoledronic_acid", "alendronate"]


def test_a_contraindicated_drug_being_taken_leaves_a_treatment_card_with_another_drug(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", ago(400)), egfr=25))
    assert a.treatment is not None and a.treatment.replacing == ["alendronate"]
    assert a.treatment.offered == ["denosumab"]
    assert "continue-bisphosphonate" not in kinds(a)


def test_a_drug_still_covering_beside_it_means_no_new_treatment(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", ago(400)), request("denosumab", ago(60)),
                                              administration("denosumab", ago(60)), egfr=25))
    assert a.treatment is None


def test_an_anabolic_stopped_by_a_contraindication_is_followed_by_an_antiresorptive(knowledge):
    from .test_interpretation import condition

    doses = [administration("romosozumab", months_ago(n)) for n in range(1, 6)]
    a, _ = advice_of(knowledge, *osteoporosis(request("romosozumab", months_ago(5)), *doses,
                                              condition("I21.4", onset=months_ago(3)), spine=-3.4))
    m = mgmt(a, "anabolic-stopping")
    assert m.indicator == "critical" and "romosozumab" not in m.suggest and m.suggest
    assert a.treatment is None  # never another anabolic course offered beside it


def test_a_not_taken_drug_is_not_ordered_again(knowledge):
    order = request("alendronate", ago(240))
    not_taken = statement("alendronate", status="not-taken", asserted=ago(30),
                          statusReason=[{"text": "heartburn"}])
    a, _ = advice_of(knowledge, *osteoporosis(order, not_taken))
    assert a.treatment is not None and "alendronate" not in a.treatment.offered
    assert "heartburn" in a.treatment.never_offer["alendronate"]


def test_a_restarted_course_is_since_its_current_start(knowledge):
    old = statement("alendronate", status="completed", start=date(2010, 3, 1), end=date(2015, 3, 1))
    new = request("alendronate", date(2022, 4, 1))
    facts = FactBuilder(knowledge).build(patient("female", born(70)), osteoporosis(old, new), AS_OF)
    th = facts.therapies["alendronate"]
    assert th.first == date(2010, 3, 1) and th.start == date(2022, 4, 1)
    assert "since 2022-04-01" in th.describe() and "stretches 2010-03-01 to 2015-03-01" in th.describe()


def test_a_holiday_at_two_years_with_no_dxa_since_gets_a_dxa_order(knowledge):
    fills = [dispense("alendronate", ago(365 * 8 - 90 * i), days_supply=90) for i in range(24)]  # 6 years, ended 2 years ago
    exam = [t("hip", -2.0, ago(365 * 2 + 200)), t("neck", -1.9, ago(365 * 2 + 200))]
    a, _ = advice_of(knowledge, *exam, *labs(), *fills)
    assert "drug-holiday-in-progress" in kinds(a) or "drug-holiday-reassess" in kinds(a)
    assert any(o.loinc == knowledge.treatment["repeat_dxa"]["loinc"] and "drug holiday" in o.reason for o in a.orders)


def test_ten_years_of_a_bisphosphonate_is_not_continue(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", ago(round(10.5 * 365.25))), hip=-2.7))
    m = mgmt(a, "continue-bisphosphonate")
    assert m.continue_drug is None and "switch" in summary_of(m)


def test_months_ago_is_a_month_before(knowledge):  # the helper the tests above lean on
    assert (AS_OF - months_ago(1)).days == round(MONTH) or abs((AS_OF - months_ago(1)).days - MONTH) <= 1
    facts = FactBuilder(knowledge).build(patient("female", born(70)), [t("spine", -2.6)], AS_OF)
    assert interpret(facts, knowledge).diagnosis == "osteoporosis"


def test_the_therapy_rules_return_data_and_the_card_builders_word_it(knowledge):
    """Issue 19 item 5: the §6.1 rules give structured findings (no words of their own) and cards/therapy.py words
    every kind; run over every therapy sample patient."""
    from cds_service.cards.therapy import _WORDS, words
    from fhir_samples import therapy as samples

    seen = set()
    for case in samples.CASES:
        bundle = samples.build(case.id, AS_OF)
        resources = [e["resource"] for e in bundle["entry"]]
        [pat] = [r for r in resources if r["resourceType"] == "Patient"]
        facts = FactBuilder(knowledge).build(pat, [r for r in resources if r is not pat], AS_OF)
        a = advise(interpret(facts, knowledge), facts, knowledge)
        for m in a.management:
            assert m.finding is not None and not hasattr(m, "summary") and not hasattr(m, "lines"), m.kind
            summary, lines = words(m.finding, knowledge)
            assert summary and lines and all(isinstance(x, str) and x for x in lines)
            seen.add(m.finding.kind)
    assert len(seen) >= 10, seen
    assert seen <= set(_WORDS)


# -- review: odd records never give a 500, and none is dropped without a word ---------------------------
def _odd_records():
    from .test_therapy import dosage

    far = date(9999, 12, 31)
    gc = request("prednisone", ago(500), dosageInstruction=[dosage(mg=10)])
    gc["dosageInstruction"][0]["timing"]["repeat"].update({"period": 5e-324, "periodUnit": "min"})
    neg = request("prednisone", ago(500), rid="neg", dosageInstruction=[dosage(mg=10)])
    neg["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = -1
    return {
        "zoledronic acid statement to 9999-12-31": [statement("zoledronic_acid", status="completed", start=date(2020, 1, 1),
                                                             end=far)],
        "order with a 10,000-year supply beside a fill": [
            request("alendronate", ago(100), dispenseRequest={"expectedSupplyDuration": {"value": 10000, "unit": "a",
                                                                                          "code": "a"}}),
            dispense("risedronate", ago(20), days_supply=30)],
        "fill whose supply runs past year 9998": [request("alendronate", ago(100)),
                                                  dispense("alendronate", ago(10), days_supply=3_000_000)],
        "glucocorticoid timing of 5e-324 minutes": [gc],
        "glucocorticoid frequency -1": [neg],
    }


@pytest.mark.parametrize("name", sorted(_odd_records()))
def test_odd_records_give_cards_not_an_error(knowledge, name):
    from cds_service.cards.advice import advice_cards

    a, facts = advice_of(knowledge, *osteoporosis(*_odd_records()[name]))
    cards = advice_cards(a, facts, knowledge)
    assert cards and all(len(c["summary"]) <= 140 for c in cards)


def test_a_negative_glucocorticoid_frequency_is_an_unknown_dose_not_a_dropped_course(knowledge):
    a, facts = advice_of(knowledge, *osteoporosis(*_odd_records()["glucocorticoid frequency -1"]))
    assert a.interp.glucocorticoids and "dose unknown" in a.interp.glucocorticoids[0]


@pytest.mark.parametrize("record, why", [
    ({"resourceType": "MedicationRequest", "id": "s", "status": "active", "intent": "order",
      "authoredOn": "2026-01-01", "medicationCodeableConcept": "denosumab 60 mg"}, "not a CodeableConcept"),
    ({"resourceType": "MedicationRequest", "id": "c", "status": "active", "intent": "order", "authoredOn": "2026-01-01",
      "medicationReference": {"reference": "Medication/nocode"}}, "has no code"),
])
def test_a_record_whose_drug_cannot_be_read_is_listed(knowledge, record, why):
    nocode = {"resourceType": "Medication", "id": "nocode", "form": {"text": "injection"}}
    facts = FactBuilder(knowledge).build(patient("female", born(70)), [record, nocode], AS_OF)
    assert any(why in i.reason for i in facts.ignored if i.resource.endswith("/" + record["id"]))


def test_a_medication_with_no_code_is_read_by_the_reference_display(knowledge):
    rec = {"resourceType": "MedicationRequest", "id": "d", "status": "active", "intent": "order",
           "authoredOn": "2026-01-01", "medicationReference": {"reference": "Medication/nocode", "display": "Prolia"}}
    facts = FactBuilder(knowledge).build(patient("female", born(70)), [rec, {"resourceType": "Medication", "id": "nocode"}],
                                         AS_OF)
    assert "denosumab" in facts.therapies
