"""Order checks read the therapy timelines built from all four kinds of medication record (clinical
rules §6.1): a drug covering the patient by a fill or an administration is a duplicate, course limits
count administered doses and dispensed pens, and a denosumab stop names the doses given. Pure
functions (read_drafts + check_orders), no HTTP."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.facts import months_after
from tests.orders.test_orders_http import PRODUCTS, RXNORM, draft
from tests.orders.test_orders_unit import AS_OF, good_labs, kinds, run

MONTH = 30.4375


def ago(days: float) -> date:
    return AS_OF - timedelta(days=round(days))


def months(m: float) -> date:
    return ago(m * MONTH)


def _concept(drug: str) -> dict[str, Any]:
    code, display, _ = PRODUCTS[drug]
    return {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display}


def administration(rid: str, drug: str, when: date, status: str = "completed") -> dict[str, Any]:
    return {"resourceType": "MedicationAdministration", "id": rid, "status": status,
            "medicationCodeableConcept": _concept(drug), "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when.isoformat()}


def dispense(rid: str, drug: str, when: date, *, days_supply: int | None = None,
             quantity: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationDispense", "id": rid, "status": "completed",
                         "medicationCodeableConcept": _concept(drug), "subject": {"reference": "Patient/p1"},
                         "whenHandedOver": when.isoformat()}
    if days_supply is not None:
        r["daysSupply"] = {"value": days_supply, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}
    if quantity is not None:
        r["quantity"] = quantity
    return r


def issues_of(issues, kind: str):
    return [i for i in issues if i.kind == kind]


# -- duplicates from fills and administrations -------------------------------------------------
@pytest.mark.parametrize("fill, duplicate", [
    (dispense("f", "alendronate", ago(10), days_supply=28), True),  # covering now
    (dispense("f", "alendronate", ago(10), quantity={"value": 4, "unit": "tablet", "code": "{tbl}"}), True),
    (dispense("f", "alendronate", ago(200), days_supply=28), False),  # ran out long ago
])
def test_alendronate_draft_with_alendronate_only_dispensed(knowledge, fill, duplicate):
    _, issues = run(knowledge, [draft("a", "alendronate")], good_labs() + [fill])
    dup = issues_of(issues, "duplicate")
    assert bool(dup) is duplicate
    if duplicate:
        assert kinds(issues) == [("duplicate", "warning", "alendronate")]
        assert dup[0].remove
        assert "MedicationDispense/f" in " ".join(dup[0].lines)


@pytest.mark.parametrize("given_months, duplicate", [(3, True), (13, False)])
def test_denosumab_draft_while_zoledronic_acid_covers_by_an_administration(knowledge, given_months, duplicate):
    _, issues = run(knowledge, [draft("d", "denosumab")],
                    good_labs() + [administration("z", "zoledronic_acid", months(given_months))])
    dup = issues_of(issues, "duplicate")
    assert bool(dup) is duplicate
    if duplicate:
        [i] = dup
        assert i.order.drug == "denosumab" and i.severity == "warning" and i.remove
        assert i.summary.startswith("Duplicate antiresorptive therapy") and "zoledronic acid" in i.summary
        assert "MedicationAdministration/z" in " ".join(i.lines)


# -- course limits -----------------------------------------------------------------------------
@pytest.mark.parametrize("n, limit", [(11, False), (12, True)])
def test_romosozumab_draft_after_12_administered_doses(knowledge, n, limit):
    doses = [administration(f"r{i}", "romosozumab", months(2 + i)) for i in range(n)]
    _, issues = run(knowledge, [draft("r", "romosozumab")], good_labs() + doses)
    cl = issues_of(issues, "course-limit")
    assert bool(cl) is limit
    if limit:
        [i] = cl
        assert i.summary.startswith("Course complete") and "12" in i.summary
        assert i.remove and "romosozumab" not in i.replace_with


@pytest.mark.parametrize("pens, limit", [(25, False), (27, True)])
def test_teriparatide_draft_after_24_months_of_pens_dispensed(knowledge, pens, limit):
    """One pen (28 daily doses) every 28 days: 25 pens are 700 days (23.0 months), 27 are 756 (24.8)."""
    last = ago(60)
    fills = [dispense(f"p{i}", "teriparatide", last - timedelta(days=28 * i), quantity={"value": 1, "unit": "pen"})
             for i in range(pens)]
    _, issues = run(knowledge, [draft("t", "teriparatide")], good_labs() + fills)
    cl = issues_of(issues, "course-limit")
    assert bool(cl) is limit
    if limit:
        [i] = cl
        assert i.order.drug == "teriparatide" and i.summary.startswith("Course complete")
        assert "Forteo label" in " ".join(i.lines)
        assert "teriparatide" not in i.replace_with and "abaloparatide" not in i.replace_with


def test_abaloparatide_draft_counts_teriparatide_pens_too(knowledge):
    last = ago(60)
    fills = [dispense(f"p{i}", "teriparatide", last - timedelta(days=28 * i), quantity={"value": 1, "unit": "pen"})
             for i in range(27)]
    _, issues = run(knowledge, [draft("b", "abaloparatide")], good_labs() + fills)
    assert [i.order.drug for i in issues_of(issues, "course-limit")] == ["abaloparatide"]


# -- stopping denosumab ------------------------------------------------------------------------
def test_denosumab_stop_draft_names_the_doses_given(knowledge):
    given = [administration("g1", "denosumab", months(10)), administration("g2", "denosumab", months(4))]
    _, issues = run(knowledge, [draft("d", "denosumab", status="stopped")], good_labs() + given)
    [i] = issues_of(issues, "denosumab-stop")
    text = " ".join(i.lines)
    assert "2 doses" in text
    assert "MedicationAdministration/g2" in text
    due = months_after(months(4), 6)
    assert due.isoformat() in text
    assert set(i.create) == {"zoledronic_acid", "alendronate"}


def test_denosumab_stop_draft_with_a_covering_bisphosphonate_fill_is_a_hand_over(knowledge):
    given = [administration("g1", "denosumab", months(6.5)),
             dispense("f", "alendronate", ago(5), days_supply=28)]
    _, issues = run(knowledge, [draft("d", "denosumab", status="stopped")], good_labs() + given)
    assert issues_of(issues, "denosumab-stop") == []
