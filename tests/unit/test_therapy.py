"""Therapy from four kinds of medication record (clinical rules §6.1): what each record becomes, the
per-drug timeline and its boundaries, the therapy-management rules on it, and long-term systemic
glucocorticoids. Pure unit tests: FactBuilder → interpret → advise, no HTTP."""
from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.advice import Advice, advise
from cds_service.clinical.facts import FactBuilder, Facts, MedicationFact, Therapy
from cds_service.clinical.interpretation import interpret

from .fhir_builders import AS_OF, PID, RXNORM, SNOMED, lines_of, summary_of
from .test_advice import MONTH, labs, months_ago
from .test_interpretation import born, fracture, patient, t

_ids = itertools.count(1)

CONCEPTS: dict[str, tuple[str, str]] = {
    "alendronate": ("904431", "alendronate sodium 70 MG Oral Tablet"),
    "risedronate": ("905024", "risedronate sodium 35 MG Oral Tablet"),
    "zoledronic_acid": ("705824", "zoledronic acid 5 MG in 100 ML Injection"),
    "denosumab": ("993452", "denosumab 60 MG/ML Prefilled Syringe [Prolia]"),
    "teriparatide": ("1435115", "teriparatide 0.25 MG/ML pen injector"),
    "abaloparatide": ("1921082", "abaloparatide pen injector [Tymlos]"),
    "romosozumab": ("2123184", "romosozumab"),
    "calcium_carbonate": ("", "calcium carbonate 500 MG Oral Tablet"),
    "prednisone": ("312617", "prednisone 5 MG Oral Tablet"),
    "dexamethasone": ("197577", "dexamethasone 0.5 MG Oral Tablet"),
    "hydrocortisone": ("197782", "hydrocortisone 10 MG Oral Tablet"),
    "budesonide": ("1366550", "24 HR budesonide 9 MG Extended Release Oral Tablet"),
}
ORAL, IV, IM = "26643006", "47625008", "78421000"


# -- builders ------------------------------------------------------------------------------------
def ago(days: int) -> date:
    return AS_OF - timedelta(days=days)


def concept(drug: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(drug, dict):
        return drug
    code, display = CONCEPTS[drug]
    c: dict[str, Any] = {"text": display}
    if code:
        c["coding"] = [{"system": RXNORM, "code": code, "display": display}]
    return c


def _record(rtype: str, drug: str | dict[str, Any] | None, status: str, rid: str | None,
            extra: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": rid or f"x{next(_ids)}", "status": status,
                         "subject": {"reference": f"Patient/{PID}"}}
    if drug is not None:
        r["medicationCodeableConcept"] = concept(drug)
    r.update({k: v for k, v in extra.items() if v is not None})
    return r


def iso(d: date | str | None) -> str | None:
    return d.isoformat() if isinstance(d, date) else d


def request(drug: Any, authored: date | None, status: str = "active", intent: str = "order",
            rid: str | None = None, **extra: Any) -> dict[str, Any]:
    return _record("MedicationRequest", drug, status, rid, {"intent": intent, "authoredOn": iso(authored), **extra})


def statement(drug: Any, status: str = "active", start: date | None = None, end: date | None = None,
              when: date | None = None, asserted: date | None = None, rid: str | None = None,
              **extra: Any) -> dict[str, Any]:
    period = {k: iso(v) for k, v in (("start", start), ("end", end)) if v is not None}
    return _record("MedicationStatement", drug, status, rid,
                   {"effectivePeriod": period or None, "effectiveDateTime": iso(when),
                    "dateAsserted": iso(asserted), **extra})


def administration(drug: Any, when: date | None, status: str = "completed", rid: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    return _record("MedicationAdministration", drug, status, rid, {"effectiveDateTime": iso(when), **extra})


def dispense(drug: Any, when: date | None, status: str = "completed", rid: str | None = None,
             days_supply: float | None = None, quantity: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    return _record("MedicationDispense", drug, status, rid,
                   {"whenHandedOver": iso(when), "quantity": quantity,
                    "daysSupply": {"value": days_supply, "unit": "days", "system": "http://unitsofmeasure.org",
                                   "code": "d"} if days_supply is not None else None, **extra})


def dosage(mg: float | None = None, route: str | None = None, route_text: str | None = None,
           freq: int = 1, period: float = 1, unit: str = "d", text: str | None = None,
           key: str = "doseAndRate") -> dict[str, Any]:
    d: dict[str, Any] = {"timing": {"repeat": {"frequency": freq, "period": period, "periodUnit": unit}}}
    if mg is not None:
        d["doseAndRate"] = [{"doseQuantity": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org",
                                              "code": "mg"}}]
    r: dict[str, Any] = {}
    if route:
        r["coding"] = [{"system": SNOMED, "code": route}]
    if route_text:
        r["text"] = route_text
    if r:
        d["route"] = r
    if text:
        d["text"] = text
    return d


def facts_of(knowledge, *resources: dict[str, Any]) -> Facts:
    return FactBuilder(knowledge).build(patient("female", born(70)), list(resources), AS_OF)


def advice_of(knowledge, *resources: dict[str, Any]) -> tuple[Advice, Facts]:
    facts = facts_of(knowledge, *resources)
    return advise(interpret(facts, knowledge), facts, knowledge), facts


def osteoporosis(*extra: dict[str, Any], spine: float = -2.6, hip: float | None = None,
                 **lab_override: Any) -> list[dict[str, Any]]:
    """Osteoporosis at high (not very high) risk, recent labs, and the records given."""
    scores = [t("spine", spine)]
    if hip is not None:
        scores += [t("hip", hip), t("neck", hip + 0.1)]
    return [*scores, *labs(**lab_override), *extra]


def fact(facts: Facts, rid: str) -> MedicationFact:
    [m] = [m for m in facts.medications if m.resource.endswith("/" + rid)]
    return m


def reasons(facts: Facts, rid: str) -> list[str]:
    return [i.reason for i in facts.ignored if i.resource.endswith("/" + rid)]


def not_read(facts: Facts, rid: str) -> bool:
    """Not counted as exposure and listed as not used, with a reason."""
    return not any(m.resource.endswith("/" + rid) for m in facts.medications) and bool(reasons(facts, rid))


def kinds(a: Advice) -> list[str]:
    return [m.kind for m in a.management]


def mgmt(a: Advice, kind: str):
    [m] = [m for m in a.management if m.kind == kind]
    return m


def therapy(facts: Facts, drug: str) -> Therapy:
    return facts.therapies[drug]


# == 1. what each record becomes ===================================================================
# -- MedicationAdministration --------------------------------------------------------------------
@pytest.mark.parametrize("status", ["completed", "in-progress"])
def test_administration_completed_or_in_progress_is_a_dose(knowledge, status):
    f = facts_of(knowledge, administration("denosumab", ago(30), status=status, rid="a"))
    m = fact(f, "a")
    assert (m.kind, m.dose, m.start, m.note) == ("administration", True, ago(30), None)
    assert reasons(f, "a") == []
    assert [d.start for d in therapy(f, "denosumab").doses] == [ago(30)]


def test_administration_dated_by_effective_period_start(knowledge):
    f = facts_of(knowledge, administration("zoledronic_acid", None, rid="a",
                                           effectivePeriod={"start": iso(ago(40)), "end": iso(ago(40))}))
    assert fact(f, "a").start == ago(40) and fact(f, "a").dose


def test_stopped_administration_is_a_dose_marked_uncertain(knowledge):
    a, f = advice_of(knowledge, *osteoporosis(administration("denosumab", ago(30), status="stopped", rid="a")))
    m = fact(f, "a")
    assert m.dose and m.start == ago(30)
    assert m.note and "dose uncertain" in m.note
    t_ = therapy(f, "denosumab")
    assert len(t_.doses) == 1 and any("dose uncertain" in n for n in t_.notes)
    card = mgmt(a, "records-to-confirm")
    assert card.indicator == "warning" and "dose uncertain" in " ".join(lines_of(card))


@pytest.mark.parametrize("status", ["not-done", "entered-in-error", "on-hold", "unknown"])
def test_administration_not_counted(knowledge, status):
    f = facts_of(knowledge, administration("denosumab", ago(30), status=status, rid="a"))
    assert not_read(f, "a")
    assert "denosumab" not in f.therapies


# -- MedicationDispense --------------------------------------------------------------------------
def test_completed_dispense_of_denosumab_is_one_dose_whatever_the_quantity(knowledge):
    f = facts_of(knowledge, dispense("denosumab", ago(20), rid="d", quantity={"value": 2, "unit": "syringe"}))
    m = fact(f, "d")
    assert (m.kind, m.dose, m.start) == ("dispense", True, ago(20))
    assert len(therapy(f, "denosumab").doses) == 1


@pytest.mark.parametrize("drug, days_supply, quantity, days, assumed", [
    ("alendronate", 84, None, 84, False),
    ("alendronate", None, {"value": 4, "unit": "tablet", "code": "{tbl}"}, 28, False),  # weekly tablet: 4 × 7
    ("alendronate", None, {"value": 12, "unit": "tablets"}, 84, False),
    ("teriparatide", None, {"value": 2, "unit": "pen"}, 56, False),  # a pen holds 28 daily doses
    ("alendronate", None, None, 30, True),
    ("alendronate", None, {"value": 5, "unit": "mL", "code": "mL"}, 30, True),  # not a countable unit
])
def test_completed_dispense_of_a_continuous_drug_gives_supply(knowledge, drug, days_supply, quantity, days, assumed):
    f = facts_of(knowledge, dispense(drug, ago(100), rid="d", days_supply=days_supply, quantity=quantity))
    m = fact(f, "d")
    assert not m.dose
    assert m.start == ago(100)
    assert m.supply_days == days
    assert m.end == ago(100) + timedelta(days=days - 1)
    assert (m.note is not None and "supply assumed" in m.note) is assumed
    if assumed:
        assert any("supply assumed" in n for n in therapy(f, drug).notes)


@pytest.mark.parametrize("status", ["preparation", "in-progress", "cancelled", "on-hold", "entered-in-error",
                                    "stopped", "declined", "unknown"])
def test_dispense_other_statuses_are_listed(knowledge, status):
    f = facts_of(knowledge, dispense("alendronate", ago(20), status=status, rid="d", days_supply=28))
    assert not_read(f, "d")


def test_dispense_dated_by_when_prepared_without_when_handed_over(knowledge):
    f = facts_of(knowledge, dispense("denosumab", None, rid="d", whenPrepared=iso(ago(25))),
                 dispense("alendronate", None, rid="e", days_supply=28, whenPrepared=iso(ago(10))))
    assert fact(f, "d").start == ago(25) and fact(f, "d").dose
    assert fact(f, "e").start == ago(10) and fact(f, "e").end == ago(10) + timedelta(days=27)


def test_when_handed_over_wins_over_when_prepared(knowledge):
    f = facts_of(knowledge, dispense("denosumab", ago(20), rid="d", whenPrepared=iso(ago(25))))
    assert fact(f, "d").start == ago(20)


# -- MedicationRequest ---------------------------------------------------------------------------
@pytest.mark.parametrize("intent", ["order", "original-order", "reflex-order", "filler-order", "instance-order"])
def test_request_order_intents_count(knowledge, intent):
    f = facts_of(knowledge, request("alendronate", ago(30), intent=intent, rid="r"))
    assert fact(f, "r").current and reasons(f, "r") == []


@pytest.mark.parametrize("intent", ["plan", "proposal", "directive", "option", None])
def test_request_plan_and_proposal_intents_are_listed(knowledge, intent):
    f = facts_of(knowledge, request("alendronate", ago(30), intent=intent, rid="r"))  # None: no intent at all
    assert not_read(f, "r")
    assert "alendronate" not in f.therapies


def test_do_not_perform_is_listed_and_the_drug_never_offered(knowledge):
    a, f = advice_of(knowledge, *osteoporosis(request("alendronate", ago(30), rid="r", doNotPerform=True)))
    assert not_read(f, "r")
    assert not a.interp.treated
    plan = a.treatment
    assert plan is not None
    assert "alendronate" not in plan.offered and "alendronate" in plan.never_offer
    assert plan.recommended != "alendronate"
    assert "risedronate" in plan.offered  # only the drug named is never offered
    # without the order not to give it, alendronate is the first choice
    b, _ = advice_of(knowledge, *osteoporosis())
    assert b.treatment is not None and b.treatment.recommended == "alendronate"


@pytest.mark.parametrize("status, current, on_hold, stopped", [
    ("active", True, False, False), ("completed", False, False, False), ("stopped", False, False, True),
    ("on-hold", False, True, False)])
def test_request_statuses_that_are_read(knowledge, status, current, on_hold, stopped):
    f = facts_of(knowledge, request("alendronate", ago(60), status=status, rid="r"))
    m = fact(f, "r")
    assert (m.current, m.on_hold, m.stopped) == (current, on_hold, stopped)
    assert m.start == ago(60)
    assert reasons(f, "r") == []
    assert therapy(f, "alendronate").on_therapy is (status in ("active", "completed"))  # completed: 90 days from day 60


def test_on_hold_request_is_not_current_and_says_since_when(knowledge):
    a, f = advice_of(knowledge, *osteoporosis(request("alendronate", ago(60), status="on-hold", rid="r")))
    t_ = therapy(f, "alendronate")
    assert not t_.on_therapy and t_.on_hold_since is not None
    assert "on hold since" in " ".join(lines_of(mgmt(a, "records-to-confirm")))


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "draft", "unknown"])
def test_request_statuses_that_are_listed(knowledge, status):
    f = facts_of(knowledge, request("alendronate", ago(60), status=status, rid="r"))
    assert not_read(f, "r")
    assert "alendronate" not in f.therapies


def _supply(value: float, repeats: int | None = None, validity_end: date | None = None) -> dict[str, Any]:
    dr: dict[str, Any] = {"expectedSupplyDuration": {"value": value, "unit": "days",
                                                     "system": "http://unitsofmeasure.org", "code": "d"}}
    if repeats is not None:
        dr["numberOfRepeatsAllowed"] = repeats
    if validity_end is not None:
        dr["validityPeriod"] = {"start": iso(ago(400)), "end": iso(validity_end)}
    return dr


@pytest.mark.parametrize("dispense_request, days", [
    (_supply(28, 2), 84),  # 28 days × (1 + 2 repeats)
    (_supply(30), 30),  # no repeats
    (_supply(28, 2, validity_end=ago(400) + timedelta(days=59)), 60),  # cut at validityPeriod.end
    (_supply(28, 2, validity_end=ago(400) + timedelta(days=200)), 84),  # a later validity end does not lengthen it
    (None, 90),  # the convention
])
def test_completed_continuous_order_exposure(knowledge, dispense_request, days):
    extra = {"dispenseRequest": dispense_request} if dispense_request else {}
    f = facts_of(knowledge, request("alendronate", ago(400), status="completed", rid="r", **extra))
    m = fact(f, "r")
    assert (m.start, m.end) == (ago(400), ago(400) + timedelta(days=days - 1))
    assert therapy(f, "alendronate").cumulative_days == days


def test_completed_order_of_a_dose_by_dose_drug_is_one_dose(knowledge):
    f = facts_of(knowledge, request("denosumab", ago(50), status="completed", rid="r"))
    m = fact(f, "r")
    assert m.dose and m.start == ago(50)
    assert [d.start for d in therapy(f, "denosumab").doses] == [ago(50)]


# -- MedicationStatement -------------------------------------------------------------------------
def test_statement_active_is_current(knowledge):
    f = facts_of(knowledge, statement("alendronate", "active", start=ago(200), rid="s"))
    m = fact(f, "s")
    assert m.current and m.start == ago(200) and m.end is None
    assert therapy(f, "alendronate").on_therapy


def test_statement_completed_is_exposure_over_its_period(knowledge):
    f = facts_of(knowledge, statement("alendronate", "completed", start=ago(500), end=ago(200), rid="s"))
    m = fact(f, "s")
    assert (m.start, m.end, m.current) == (ago(500), ago(200), False)
    t_ = therapy(f, "alendronate")
    assert t_.previously_treated and t_.ended == ago(200) and t_.cumulative_days == 301


@pytest.mark.parametrize("end, asserted, ended", [(ago(100), ago(20), ago(100)), (None, ago(20), ago(20))])
def test_statement_stopped_ends_at_period_end_else_date_asserted(knowledge, end, asserted, ended):
    f = facts_of(knowledge, statement("alendronate", "stopped", start=ago(500), end=end, asserted=asserted, rid="s"))
    m = fact(f, "s")
    assert m.stopped and m.end == ended
    t_ = therapy(f, "alendronate")
    assert not t_.on_therapy and t_.stopped_on == ended


def test_intended_statement_is_listed_and_silences_nothing(knowledge):
    a, f = advice_of(knowledge, *osteoporosis(statement("alendronate", "intended", start=ago(10), rid="s")))
    assert not_read(f, "s")
    assert not a.interp.treated
    assert a.treatment is not None and "alendronate" in a.treatment.offered


@pytest.mark.parametrize("status", ["entered-in-error", "unknown"])
def test_statement_not_counted_statuses_are_listed(knowledge, status):
    f = facts_of(knowledge, statement("alendronate", status, start=ago(100), rid="s"))
    assert not_read(f, "s")
    assert "alendronate" not in f.therapies


def test_not_taken_statement_newer_than_an_active_order_ends_it(knowledge):
    order = request("alendronate", ago(100), rid="r")
    a, f = advice_of(knowledge, *osteoporosis(order, statement("alendronate", "not-taken", asserted=ago(10), rid="s")))
    assert reasons(f, "s")
    t_ = therapy(f, "alendronate")
    assert t_.current == () and not t_.on_therapy
    assert t_.not_taken is not None and t_.not_taken.resource == "MedicationStatement/s"
    assert not a.interp.treated
    card = mgmt(a, "records-to-confirm")
    assert card.indicator == "warning" and "not taking it" in " ".join(lines_of(card))


def test_not_taken_statement_older_than_the_active_order_changes_nothing(knowledge):
    order = request("alendronate", ago(100), rid="r")
    f = facts_of(knowledge, order, statement("alendronate", "not-taken", asserted=ago(200), rid="s"))
    t_ = therapy(f, "alendronate")
    assert t_.on_therapy and t_.not_taken is None
    assert [m.resource for m in t_.current] == ["MedicationRequest/r"]


# -- any record ----------------------------------------------------------------------------------
@pytest.mark.parametrize("record", [
    request("alendronate", ago(30), status="bogus", rid="b"),
    statement("alendronate", "bogus", start=ago(30), rid="b"),
    administration("denosumab", ago(30), status="bogus", rid="b"),
    dispense("alendronate", ago(30), status="bogus", rid="b", days_supply=28),
], ids=["request", "statement", "administration", "dispense"])
def test_status_outside_fhir_value_set_is_listed(knowledge, record):
    f = facts_of(knowledge, record)
    assert not_read(f, "b")
    assert any("bogus" in r for r in reasons(f, "b"))


@pytest.mark.parametrize("record", [
    request("alendronate", None, rid="n"),
    statement("alendronate", "active", rid="n"),
    administration("denosumab", None, rid="n"),
    dispense("alendronate", None, rid="n", days_supply=28),
], ids=["request", "statement", "administration", "dispense"])
def test_record_without_a_date_is_listed(knowledge, record):
    f = facts_of(knowledge, record)
    assert not_read(f, "n")


def _medication(mid: str, drug: str = "alendronate") -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": concept(drug)}


@pytest.mark.parametrize("rtype", ["MedicationRequest", "MedicationStatement", "MedicationAdministration",
                                   "MedicationDispense"])
def test_medication_reference_to_a_contained_medication(knowledge, rtype):
    build = {"MedicationRequest": lambda: request(None, ago(30), rid="m"),
             "MedicationStatement": lambda: statement(None, "active", start=ago(30), rid="m"),
             "MedicationAdministration": lambda: administration(None, ago(30), rid="m"),
             "MedicationDispense": lambda: dispense(None, ago(30), rid="m", days_supply=28)}[rtype]
    r = build()
    r["contained"] = [_medication("med1", "denosumab")]
    r["medicationReference"] = {"reference": "#med1"}
    f = facts_of(knowledge, r)
    assert fact(f, "m").drug == "denosumab" and reasons(f, "m") == []


@pytest.mark.parametrize("ref, mid", [
    ("Medication/med2", "med2"),
    ("https://ehr.example.org/fhir/Medication/med2", "med2"),
    ("urn:uuid:7f0c9e2a-0000-4000-8000-000000000002", "7f0c9e2a-0000-4000-8000-000000000002"),
])
def test_medication_reference_to_a_medication_in_the_data(knowledge, ref, mid):
    r = request(None, ago(30), rid="m", medicationReference={"reference": ref})
    f = facts_of(knowledge, r, _medication(mid, "alendronate"))
    assert fact(f, "m").drug == "alendronate" and reasons(f, "m") == []


@pytest.mark.parametrize("ref", ["Medication/nowhere", "#nothing-contained", "urn:uuid:0000"])
def test_unresolvable_medication_reference_is_listed(knowledge, ref):
    r = request(None, ago(30), rid="m", medicationReference={"reference": ref})
    f = facts_of(knowledge, r, _medication("other", "alendronate"))
    assert not_read(f, "m")
    assert any("could not be resolved" in x for x in reasons(f, "m"))


# == 2. timeline boundaries =======================================================================
@pytest.mark.parametrize("apart, stretches", [(14, 1), (15, 2)])
def test_fills_within_14_days_are_one_stretch(knowledge, apart, stretches):
    f = facts_of(knowledge, dispense("alendronate", ago(300), rid="f1", days_supply=28),
                 dispense("alendronate", ago(300 - apart), rid="f2", days_supply=28))
    ex = therapy(f, "alendronate").exposures
    assert len(ex) == stretches
    if stretches == 1:
        assert ex[0].resources == ("MedicationDispense/f1", "MedicationDispense/f2")
        assert ex[0].start == ago(300)


@pytest.mark.parametrize("apart, doses", [(14, 1), (15, 2)])
def test_denosumab_fills_within_14_days_are_one_dose(knowledge, apart, doses):
    f = facts_of(knowledge, dispense("denosumab", ago(100), rid="f1"), dispense("denosumab", ago(100 - apart), rid="f2"))
    assert len(therapy(f, "denosumab").doses) == doses


def test_merging_is_anchored_on_the_first_never_chained(knowledge):
    f = facts_of(knowledge, *[dispense("denosumab", ago(100 - d), rid=f"f{d}") for d in (0, 10, 20)])
    doses = therapy(f, "denosumab").doses
    assert [d.start for d in doses] == [ago(100), ago(80)]
    assert doses[0].resources == ("MedicationDispense/f0", "MedicationDispense/f10")
    g = facts_of(knowledge, *[dispense("alendronate", ago(300 - d), rid=f"f{d}", days_supply=28) for d in (0, 10, 20)])
    assert [e.start for e in therapy(g, "alendronate").exposures] == [ago(300), ago(280)]


@pytest.mark.parametrize("after, doses", [(90, 1), (-90, 1), (93, 2), (-93, 2)])
def test_administration_within_half_an_interval_of_a_completed_order_is_the_same_dose(knowledge, after, doses):
    """Denosumab: half of 6 months is about 91 days."""
    f = facts_of(knowledge, request("denosumab", ago(200), status="completed", rid="r"),
                 administration("denosumab", ago(200 - after), rid="a"))
    got = therapy(f, "denosumab").doses
    assert len(got) == doses
    if doses == 1:
        assert got[0].kind == "administration" and got[0].start == ago(200 - after)


@pytest.mark.parametrize("gap, spans", [(60, 1), (61, 2)])
def test_gaps_of_60_days_are_bridged(knowledge, gap, spans):
    first = ago(400)
    second = first + timedelta(days=30 + gap)  # the first covers 30 days, then `gap` days uncovered
    f = facts_of(knowledge, dispense("alendronate", first, rid="f1", days_supply=30),
                 dispense("alendronate", second, rid="f2", days_supply=30))
    t_ = therapy(f, "alendronate")
    assert len(t_.spans) == spans
    # bridged: the gap counts as covered (the union of covered intervals, gaps bridged)
    assert t_.cumulative_days == (60 + gap if spans == 1 else 60)


# -- denosumab -------------------------------------------------------------------------------------
@pytest.mark.parametrize("months, kind, indicator, dose_order", [
    (5.9, "denosumab-due", "info", False),
    (6.0, "denosumab-due", "warning", True),
    (6.5, "denosumab-due", "warning", True),
    (7.0, "denosumab-due", "warning", True),
    (7.1, "denosumab-overdue", "critical", True),
])
def test_denosumab_dose_timing_from_administrations(knowledge, months, kind, indicator, dose_order):
    a, f = advice_of(knowledge, *osteoporosis(administration("denosumab", months_ago(months), rid="a")))
    assert therapy(f, "denosumab").on_therapy is (months < 6)
    m = mgmt(a, kind)
    assert m.indicator == indicator
    assert m.continue_drug == "denosumab"
    assert m.dose_order is dose_order
    assert a.treatment is None


@pytest.mark.parametrize("months, indicator", [(4, "warning"), (6.5, "warning"), (7.5, "critical")])
def test_stopped_denosumab_record_is_never_continue(knowledge, months, indicator):
    stopped = statement("denosumab", "stopped", start=ago(900), end=ago(30), rid="s")
    a, f = advice_of(knowledge, *osteoporosis(administration("denosumab", months_ago(months), rid="a"), stopped))
    assert therapy(f, "denosumab").stopped_on == ago(30)
    m = mgmt(a, "denosumab-stopping")
    assert m.indicator == indicator
    assert "denosumab" not in m.suggest and m.suggest
    assert all(x.continue_drug != "denosumab" for x in a.management)
    assert "denosumab-due" not in kinds(a) and "denosumab-overdue" not in kinds(a)


@pytest.mark.parametrize("months_after, silenced", [(5.03, True), (6.0, True), (4.9, False), (2.0, False)])
def test_zoledronic_acid_after_denosumab(knowledge, months_after, silenced):
    last = ago(244)
    zol = last + timedelta(days=round(months_after * MONTH))
    a, _ = advice_of(knowledge, *osteoporosis(administration("denosumab", last, rid="a"),
                                              administration("zoledronic_acid", zol, rid="z")))
    deno = [k for k in kinds(a) if k.startswith("denosumab")]
    if silenced:
        assert deno == []
    else:
        assert deno == ["denosumab-early-zoledronic"]
        m = mgmt(a, "denosumab-early-zoledronic")
        assert m.indicator == "warning" and "CTX" in summary_of(m)


@pytest.mark.parametrize("record, silenced", [
    (request("alendronate", months_ago(1), rid="o"), True),  # started after the last dose, covering now
    (dispense("alendronate", ago(10), rid="o", days_supply=28), True),
    (request("alendronate", months_ago(10), rid="o"), False),  # started before the last denosumab dose
    (request("alendronate", months_ago(2), status="completed", rid="o",
             dispenseRequest=_supply(28)), False),  # started after it but no longer covering
])
def test_oral_bisphosphonate_after_denosumab(knowledge, record, silenced):
    a, _ = advice_of(knowledge, *osteoporosis(administration("denosumab", months_ago(8), rid="a"), record))
    deno = [k for k in kinds(a) if k.startswith("denosumab")]
    assert (deno == []) is silenced
    if not silenced:
        assert mgmt(a, "denosumab-overdue").indicator == "critical"


@pytest.mark.parametrize("drug", ["teriparatide", "abaloparatide", "romosozumab"])
def test_an_anabolic_does_not_silence_denosumab_ending(knowledge, drug):
    a, _ = advice_of(knowledge, *osteoporosis(administration("denosumab", months_ago(8), rid="a"),
                                              request(drug, months_ago(0.5), rid="n")))
    assert mgmt(a, "denosumab-overdue").indicator == "critical"


# -- bisphosphonate drug holiday -------------------------------------------------------------------
def _years_ago(years: float) -> date:
    return AS_OF - timedelta(days=round(years * 365.25))


@pytest.mark.parametrize("years, advised", [(4.9, False), (5.0, True), (5.5, True)])
def test_oral_holiday_from_5_years(knowledge, years, advised):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", _years_ago(years)), hip=-2.4))
    assert ("drug-holiday" in kinds(a)) is advised
    assert "continue-bisphosphonate" not in kinds(a)


@pytest.mark.parametrize("doses, advised", [(2, False), (3, True)])
def test_zoledronic_acid_holiday_from_3_doses(knowledge, doses, advised):
    infusions = [administration("zoledronic_acid", months_ago(6 + 12 * i), rid=f"z{i}") for i in range(doses)]
    a, _ = advice_of(knowledge, *osteoporosis(*infusions, hip=-2.4))
    assert ("drug-holiday" in kinds(a)) is advised


@pytest.mark.parametrize("hip, kind", [(-2.4, "drug-holiday"), (-2.5, "continue-bisphosphonate")])
def test_holiday_only_with_hip_t_above_minus_2_5(knowledge, hip, kind):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", _years_ago(6)), hip=hip))
    got = [k for k in kinds(a) if k in ("drug-holiday", "continue-bisphosphonate")]
    assert got == [kind]
    if kind == "continue-bisphosphonate":
        m = mgmt(a, kind)
        assert m.continue_drug == "alendronate" and "-2.5" in " ".join(lines_of(m)).replace("−", "-")


def test_fracture_on_therapy_means_continue(knowledge):
    frac = fracture("M80.031A", onset=ago(700))  # forearm, 2 years ago, during alendronate
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", _years_ago(6)), frac, hip=-2.0))
    assert "drug-holiday" not in kinds(a)
    m = mgmt(a, "continue-bisphosphonate")
    assert "fracture on therapy" in " ".join(lines_of(m))


def test_very_high_risk_means_continue(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(request("alendronate", _years_ago(6)), spine=-3.5, hip=-2.0))
    assert a.interp.risk == "very_high"
    assert "drug-holiday" not in kinds(a) and "continue-bisphosphonate" in kinds(a)


def _finished_alendronate(ended_years_ago: float, years: float = 6) -> dict[str, Any]:
    end = _years_ago(ended_years_ago)
    start = end - timedelta(days=round(years * 365.25))
    return request("alendronate", start, status="completed", rid="al",
                   dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": iso(start), "end": iso(end)}}}}])


def test_holiday_in_progress_is_info_and_no_treatment_plan(knowledge):
    a, f = advice_of(knowledge, *osteoporosis(_finished_alendronate(1), hip=-2.0))
    m = mgmt(a, "drug-holiday-in-progress")
    assert m.indicator == "info"
    assert _years_ago(1).isoformat() in summary_of(m)
    assert a.treatment is None  # never "untreated, start alendronate" during a holiday
    assert "drug-holiday-reassess" not in kinds(a)


@pytest.mark.parametrize("ended, reassess", [(3.9, False), (4.0, True), (4.5, True)])
def test_holiday_reassessed_at_4_years(knowledge, ended, reassess):
    a, _ = advice_of(knowledge, *osteoporosis(_finished_alendronate(ended), hip=-2.0))
    assert ("drug-holiday-reassess" in kinds(a)) is reassess
    assert ("drug-holiday-in-progress" in kinds(a)) is (not reassess)
    if reassess:
        assert mgmt(a, "drug-holiday-reassess").indicator == "warning"


def test_new_fracture_during_a_holiday_ends_it(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(_finished_alendronate(1.5), fracture("M80.031A", onset=ago(200)),
                                              hip=-2.0))
    m = mgmt(a, "drug-holiday-reassess")
    assert m.indicator == "warning" and "new fracture" in " ".join(lines_of(m))
    assert a.treatment is not None and a.treatment.offered  # treatment again


def test_hip_t_at_minus_2_5_on_a_dxa_during_the_holiday_asks_to_reassess(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(_finished_alendronate(1.5), hip=-2.5))
    m = mgmt(a, "drug-holiday-reassess")
    assert "hip T-score" in " ".join(lines_of(m))
    b, _ = advice_of(knowledge, *osteoporosis(_finished_alendronate(1.5), hip=-2.4))
    assert "drug-holiday-reassess" not in kinds(b) and "drug-holiday-in-progress" in kinds(b)


# -- anabolic courses -----------------------------------------------------------------------------
@pytest.mark.parametrize("abaloparatide_days, complete", [(362, False), (366, True)])
def test_pth_analogue_months_are_summed_over_both_drugs(knowledge, abaloparatide_days, complete):
    """Teriparatide 365 days + abaloparatide to today: 727 days is 23.9 months, 731 days is 24.0."""
    teri = statement("teriparatide", "completed", start=ago(900), end=ago(900) + timedelta(days=364), rid="t")
    abalo = statement("abaloparatide", "active", start=ago(abaloparatide_days - 1), rid="b")
    a, f = advice_of(knowledge, *osteoporosis(teri, abalo))
    months = sum(x.cumulative_months for x in f.therapies.values() if x.drug_class == "anabolic_pth")
    assert (months >= 24) is complete
    assert ("anabolic-complete" in kinds(a)) is complete
    if complete:
        assert "Forteo label" in " ".join(lines_of(mgmt(a, "anabolic-complete")))


def _romosozumab_doses(n: int, last_months_ago: float) -> list[dict[str, Any]]:
    return [administration("romosozumab", months_ago(last_months_ago + i), rid=f"ro{i}") for i in range(n)]


@pytest.mark.parametrize("doses, complete", [(11, False), (12, True)])
def test_romosozumab_course_of_12_doses_is_complete(knowledge, doses, complete):
    a, f = advice_of(knowledge, *osteoporosis(*_romosozumab_doses(doses, 0.3)))
    assert len(therapy(f, "romosozumab").doses) == doses
    assert ("anabolic-complete" in kinds(a)) is complete


@pytest.mark.parametrize("doses, offered", [(11, True), (12, False)])
def test_romosozumab_after_12_doses_is_never_offered_again(knowledge, doses, offered):
    # the course 5 years ago, followed in time by a year of alendronate; untreated now, at very high risk
    follow = _finished_alendronate(ended_years_ago=3.8, years=1)
    a, _ = advice_of(knowledge, *osteoporosis(*_romosozumab_doses(doses, 59), follow, spine=-3.5))
    assert "anabolic-ended" not in kinds(a)
    plan = a.treatment
    assert plan is not None
    assert ("romosozumab" in plan.offered) is offered
    assert ("romosozumab" in plan.never_offer) is (not offered)
    assert plan.offered  # the other anabolics stay


@pytest.mark.parametrize("months_later, warned", [(None, True), (2, False), (4, True)])
def test_anabolic_course_ended_needs_an_antiresorptive_within_3_months(knowledge, months_later, warned):
    end = ago(200)
    records = [statement("teriparatide", "completed", start=end - timedelta(days=700), end=end, rid="t")]
    if months_later is not None:
        # an alendronate course begun this long after the end, and over since
        start = end + timedelta(days=round(months_later * MONTH))
        records.append(request("alendronate", start, status="completed", rid="al",
                               dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {
                                   "start": iso(start), "end": iso(ago(20))}}}}]))
    a, _ = advice_of(knowledge, *osteoporosis(*records))
    assert ("anabolic-ended" in kinds(a)) is warned
    if warned:
        m = mgmt(a, "anabolic-ended")
        assert m.indicator == "warning" and "start an antiresorptive now" in summary_of(m)
        assert m.suggest and "teriparatide" not in m.suggest


# -- records to confirm ----------------------------------------------------------------------------
def _order_28() -> dict[str, Any]:
    return request("alendronate", ago(200), rid="r", dispenseRequest=_supply(28))


@pytest.mark.parametrize("others, flagged", [
    ([dispense("alendronate", ago(200), rid="d", days_supply=28)], True),  # filled once, then nothing
    ([], False),  # the record carries no dispenses at all: nothing can be said
    ([dispense("calcium_carbonate", ago(20), rid="d", days_supply=30)], True),  # dispenses are recorded
    ([dispense("alendronate", ago(200), rid="d", days_supply=28),
      dispense("alendronate", ago(20), rid="d2", days_supply=28)], False),  # filled lately
])
def test_ordered_no_supply_since_only_when_the_record_carries_dispenses(knowledge, others, flagged):
    a, f = advice_of(knowledge, *osteoporosis(_order_28(), *others))
    t_ = therapy(f, "alendronate")
    assert (t_.no_supply_since is not None) is flagged
    lines = " ".join(line for m in a.management if m.kind == "records-to-confirm" for line in lines_of(m))
    assert ("ordered, no supply since" in lines) is flagged


@pytest.mark.parametrize("asserted_days, extra, unverified", [
    (365, False, False),  # 12 months: not yet
    (372, False, True),  # more than 12 months
    (372, True, False),  # a fill stands behind it
])
def test_statement_unverified_after_12_months(knowledge, asserted_days, extra, unverified):
    records = [statement("alendronate", "active", start=ago(1000), asserted=ago(asserted_days), rid="s")]
    if extra:
        records.append(dispense("alendronate", ago(900), rid="d", days_supply=28))
    a, f = advice_of(knowledge, *osteoporosis(*records))
    assert bool(therapy(f, "alendronate").unverified) is unverified
    lines = " ".join(line for m in a.management if m.kind == "records-to-confirm" for line in lines_of(m))
    assert ("unverified" in lines) is unverified


# -- IV dose: creatinine first -------------------------------------------------------------------
@pytest.mark.parametrize("last_dose_days, creatinine_days, asks", [
    (345, None, True),  # due in 20 days, no creatinine within 30 days
    (345, 31, True),
    (345, 29, False),
    (365, 29, False),  # due today, creatinine 29 days old
    (365, None, True),
])
def test_zoledronic_acid_due_asks_for_a_creatinine(knowledge, last_dose_days, creatinine_days, asks):
    from .test_advice import lab
    records = [administration("zoledronic_acid", ago(last_dose_days), rid="z"), t("spine", -2.6), *labs(when=ago(45))]
    if creatinine_days is not None:
        records.append(lab("creatinine", 0.8, ago(creatinine_days)))
    a, _ = advice_of(knowledge, *records)
    asking = [m for m in a.management if m.lab_loinc == "2160-0"]  # whichever card speaks of the dose
    assert bool(asking) is asks
    assert ("2160-0" in [o.loinc for o in a.orders]) is asks  # the monitoring order
    if asks:
        assert "creatinine" in summary_of(asking[0]).lower()


# == 3. long-term systemic glucocorticoids ========================================================
def gc(drug: str, days: int, mg: float | None, *, route: str | None = ORAL, route_text: str | None = None,
       rid: str = "g", text: str | None = None, cname: str | None = None, **extra: Any) -> dict[str, Any]:
    """An active order of a glucocorticoid started `days - 1` days ago: `days` days of use to today."""
    c = {"text": cname} if cname else drug
    return request(c, ago(days - 1), rid=rid,
                   dosageInstruction=[dosage(mg, route=route, route_text=route_text, text=text)], **extra)


def courses(knowledge, *records: dict[str, Any]):
    return facts_of(knowledge, *records).glucocorticoid


@pytest.mark.parametrize("mg, counted", [(2.5, True), (2.4, False), (10, True)])
def test_prednisone_from_2_5_mg_a_day(knowledge, mg, counted):
    got = courses(knowledge, gc("prednisone", 120, mg))
    assert bool(got) is counted
    if counted:
        assert got[0].mean_daily_mg == pytest.approx(mg) and got[0].current


@pytest.mark.parametrize("days, counted", [(89, False), (90, True)])
def test_three_months_of_use_the_start_day_counts(knowledge, days, counted):
    assert bool(courses(knowledge, gc("prednisone", days, 5))) is counted
    # the same, as a completed statement over a period
    start = ago(300)
    s = statement("prednisone", "completed", start=start, end=start + timedelta(days=days - 1), rid="s",
                  dosage=[dosage(5, route=ORAL)])
    assert bool(courses(knowledge, s)) is counted


@pytest.mark.parametrize("gap, counted", [(30, True), (31, False)])
def test_fills_with_gaps_of_30_days_are_joined(knowledge, gap, counted):
    first = ago(300)
    second = first + timedelta(days=30 + gap)
    fills = [dispense("prednisone", d, rid=f"f{i}", days_supply=30, dosageInstruction=[dosage(5, route=ORAL)])
             for i, d in enumerate((first, second))]
    got = courses(knowledge, *fills)
    assert bool(got) is counted
    if counted:
        assert got[0].start == first and got[0].end == second + timedelta(days=29)


@pytest.mark.parametrize("planned, counted", [(90, True), (60, False)])
def test_a_course_planned_for_90_days_counts_from_its_start(knowledge, planned, counted):
    r = gc("prednisone", 10, 10, dispenseRequest=_supply(planned))
    got = courses(knowledge, r)
    assert bool(got) is counted
    if counted:
        assert got[0].start == ago(9)


@pytest.mark.parametrize("route, route_text, counted", [
    (ORAL, None, True), (IV, None, True), (IM, None, True),
    ("6064005", None, False),  # topical
    ("447694001", None, False),  # respiratory tract (inhaled)
    ("18679011000001101", None, False),  # inhalation
    ("54485002", None, False),  # ophthalmic
    ("46713006", None, False),  # nasal
    ("12130007", None, False),  # intra-articular
    (None, "oral", True), (None, "by mouth", True), (None, "intravenous", True), (None, "intramuscular", True),
    (None, "topical", False), (None, "inhaled", False), (None, "ophthalmic", False), (None, "nasal", False),
    (None, "intra-articular", False), (None, "eye drops", False),
])
def test_only_systemic_routes_count(knowledge, route, route_text, counted):
    r = gc("dexamethasone", 120, 1, route=route, route_text=route_text, cname="dexamethasone")
    assert bool(courses(knowledge, r)) is counted


@pytest.mark.parametrize("drug, mg, equivalent, counted", [
    ("dexamethasone", 0.5, 3.33, True),
    ("hydrocortisone", 8, 2.0, False),
    ("hydrocortisone", 20, 5.0, True),
])
def test_prednisone_equivalents(knowledge, drug, mg, equivalent, counted):
    f = facts_of(knowledge, gc(drug, 120, mg))
    assert fact(f, "g").daily_mg == pytest.approx(equivalent, abs=0.01)
    assert bool(f.glucocorticoid) is counted


@pytest.mark.parametrize("c", [
    {"text": "fludrocortisone acetate 0.1 MG Oral Tablet"},
    concept("budesonide"),
    {"coding": [{"system": RXNORM, "code": "1366550"}]},  # budesonide by its code only
    {"coding": [{"system": RXNORM, "code": "1244214", "display": "budesonide 3 MG Delayed Release Oral Capsule"}]},
], ids=["fludrocortisone", "budesonide", "budesonide-code-only", "budesonide-capsule"])
def test_fludrocortisone_and_budesonide_are_not_counted(knowledge, c):
    f = facts_of(knowledge, request(c, ago(200), rid="g", dosageInstruction=[dosage(None, route=ORAL)]))
    assert f.glucocorticoid == []
    assert not any(m.drug_class == "glucocorticoid" for m in f.medications)


def test_unreadable_dose_for_3_months_counts_and_says_dose_unknown(knowledge):
    got = courses(knowledge, gc("prednisone", 120, None, text="as directed"))
    [c] = got
    assert c.mean_daily_mg is None and "dose unknown" in c.text
    a, _ = advice_of(knowledge, *osteoporosis(gc("prednisone", 120, None, text="as directed")))
    assert any("dose unknown" in x for x in a.interp.glucocorticoids)
    assert not courses(knowledge, gc("prednisone", 80, None, text="as directed"))


def test_glucocorticoids_alone_are_not_very_high_risk(knowledge):
    a, _ = advice_of(knowledge, *osteoporosis(gc("prednisone", 400, 10)))
    assert a.interp.glucocorticoids
    assert a.interp.risk == "high"


def test_a_fracture_during_a_course_is_very_high_risk(knowledge):
    frac = fracture("M80.031A", onset=ago(700))  # not recent: 2 years ago
    a, _ = advice_of(knowledge, *osteoporosis(frac))
    assert a.interp.risk == "high"
    b, _ = advice_of(knowledge, *osteoporosis(frac, gc("prednisone", 1100, 5)))
    assert b.interp.risk == "very_high"
    assert any("glucocorticoids" in r for r in b.interp.risk_reasons)
    # a fracture before the course began is not on glucocorticoids
    c, _ = advice_of(knowledge, *osteoporosis(frac, gc("prednisone", 400, 5)))
    assert c.interp.risk == "high"


@pytest.mark.parametrize("high_days, very_high", [(30, False), (31, True)])
def test_30_mg_a_day_for_more_than_30_days_is_very_high_risk(knowledge, high_days, very_high):
    start = ago(119)
    burst = statement("prednisone", "completed", start=start, end=start + timedelta(days=high_days - 1), rid="hi",
                      dosage=[dosage(30, route=ORAL)])
    taper = statement("prednisone", "active", start=start + timedelta(days=high_days), rid="lo",
                      dosage=[dosage(5, route=ORAL)])
    a, f = advice_of(knowledge, *osteoporosis(burst, taper))
    [c] = f.glucocorticoid
    assert (c.very_high is not None) is very_high
    assert a.interp.risk == ("very_high" if very_high else "high")
