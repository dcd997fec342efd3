"""Medication histories written in the clinical review of rules §6.1 (tests/scenarios/records/), evaluated as
on the day they were written, with what a clinician must and must not see. Each line of must / must_not was
a problem found in review, or what the review found right and must stay so."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from cds_service.cli import bundle_to_request
from cds_service.config import Settings
from cds_service.engine import Engine
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates

from .test_real_records_therapy import assert_expectations

RECORDS = Path(__file__).parent / "records"
AS_OF = date(2026, 12, 8)

CASES = {
    # ECTS 2021: zoledronic acid 6 months after the last denosumab dose is the hand-over; 13 months later it is
    # due again (a yearly infusion), and nothing says "untreated, start"
    "rv-a-denosumab-5y-then-one-zoledronic-13-months-ago.json": (
        [("says", "zoledronic acid")],
        [("indicator", "critical", "denosumab"), ("says", "untreated")]),
    "rv-b-alendronate-3y-then-denosumab-on-schedule.json": (
        [("says", "on denosumab")],
        [("offers", "alendronate"), ("offers", "denosumab"), ("indicator", "warning", "denosumab"),
         ("indicator", "critical", "denosumab")]),
    "rv-c-teriparatide-18m-stopped-then-alendronate.json": (
        [("says", "on alendronate")],
        [("says", "start an antiresorptive now"), ("offers", "alendronate")]),
    # a course stopped and restarted: the current course's start, and each stretch, are named
    "rv-d-alendronate-2015-statement-plus-2022-synthea-order.json": (
        [("says", "on alendronate"), ("says", "stretches 2010-03-01 to 2015-03-01")],
        [("offers", "alendronate"), ("says", "since 2010-03-01")]),
    # a fracture while on long-term glucocorticoids is very high risk (rules §2, ACR 2022)
    "rv-e-prednisone-10mg-fills-vertebral-fracture.json": (
        [("says", "glucocorticoid"), ("says", "very high fracture risk")],
        []),
    # romosozumab with an MI in the last 12 months: stop it, and an antiresorptive follows (rules §6.1)
    "rv-f-romosozumab-5-doses-mi-3-months-ago.json": (
        [("indicator", "critical", "romosozumab"), ("says", "start an antiresorptive now"),
         ("offers", "zoledronic_acid"), ("says", "romosozumab being taken is contraindicated")],
        [("offers", "romosozumab"), ("offers", "teriparatide")]),
    # an overdue denosumab dose with eGFR 28 and low vitamin D: the calcium warnings stay, the dose is
    # corrected for first, and nothing says it is "already active"
    "rv-g-denosumab-overdue-egfr-28-vitd-15.json": (
        [("indicator", "critical", "denosumab"), ("says", "ionized calcium"), ("says", "correct")],
        [("says", "already active"), ("offers", "alendronate"), ("offers", "zoledronic_acid")]),
}


@pytest.fixture(scope="module")
def engine(knowledge):
    e = Engine(Settings.from_env(), knowledge)
    yield e
    e.close()


def test_every_record_has_its_expectations():
    assert sorted(p.name for p in RECORDS.glob("rv-*.json")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_review_record(name, engine, knowledge, response_validator):
    bundle = json.loads((RECORDS / name).read_text())
    req = bundle_to_request(bundle, None, prefetch_templates(knowledge), "patient-view")
    result = engine.call(SERVICE_ID, req, as_of=AS_OF)
    errors = list(response_validator.iter_errors({"cards": result.cards}))
    assert not errors, errors[0].message
    must, must_not = CASES[name]
    assert_expectations(name, result.cards, result.facts, must, must_not, knowledge)
