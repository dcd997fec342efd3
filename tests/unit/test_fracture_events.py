"""Fractures as events (clinical rules §6.3): the boundaries of each rule."""
from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.advice import advise
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.fractures import fracture_events
from cds_service.clinical.interpretation import interpret

from .fhir_builders import AS_OF, ICD, LOINC, PID, RXNORM, SNOMED, UCUM, lines_of, summary_of

_ids = itertools.count(1)
EXAM = AS_OF - timedelta(days=14)


def day(n: int) -> date:
    return AS_OF - timedelta(days=n)


def cond(code: str, system: str = ICD, *, onset: date | None = None, recorded: date | None = None,
         encounter: str | None = None, clinical: str = "active", extra: list[dict[str, Any]] | None = None,
         evidence: list[dict[str, Any]] | None = None, display: str | None = None, **raw: Any) -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    r: dict[str, Any] = {
        "resourceType": "Condition", "id": f"c{next(_ids)}",
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "code": {"coding": [coding] + (extra or [])},
        "subject": {"reference": f"Patient/{PID}"},
    }
    if onset:
        r["onsetDateTime"] = onset.isoformat()
    if recorded:
        r["recordedDate"] = recorded.isoformat()
    if encounter:
        r["encounter"] = {"reference": encounter}
    if evidence is not None:
        r["evidence"] = evidence
    r.update(raw)
    return r


def encounter(eid: str, start: date | None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Encounter", "id": eid, "status": "finished",
                         "subject": {"reference": f"Patient/{PID}"}}
    if start:
        r["period"] = {"start": start.isoformat() + "T10:00:00Z"}
    return r


def t_score(value: float, when: date = EXAM) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{next(_ids)}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "38267-1"}]}, "subject": {"reference": f"Patient/{PID}"},
            "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": value, "unit": "{T-score}", "system": UCUM, "code": "{T-score}"}}


def med(code: str, start: date) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": f"m{next(_ids)}", "status": "active", "intent": "order",
            "authoredOn": start.isoformat(), "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
            "subject": {"reference": f"Patient/{PID}"}}


PATIENT = {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1950-03-01"}


@pytest.fixture()
def facts_of(knowledge):
    def build(*resources: dict[str, Any]):
        return FactBuilder(knowledge).build(PATIENT, list(resources), AS_OF)
    return build


@pytest.fixture()
def events(knowledge, facts_of):
    def run(*resources: dict[str, Any]):
        return fracture_events(facts_of(*resources), knowledge)
    return run


@pytest.fixture()
def interp(knowledge, facts_of):
    def run(*resources: dict[str, Any]):
        return interpret(facts_of(*resources), knowledge)
    return run


# -- one event per site within 90 days ------------------------------------------------------------------
@pytest.mark.parametrize("apart, count", [(89, 1), (90, 1), (91, 2)])
def test_same_site_within_90_days_is_one_fracture(events, apart, count):
    e = events(cond("S72.001A", onset=day(300)), cond("S72.001A", onset=day(300 - apart)))
    assert len([x for x in e if x.counted]) == count


def test_left_and_right_hip_on_the_same_day_are_two_fractures(events):
    e = events(cond("S72.001A", onset=day(100)), cond("S72.002A", onset=day(100)))
    assert sorted(x.detail for x in e) == ["left", "right"]


def test_unspecified_side_joins_the_sided_fracture(events):
    (e,) = events(cond("S72.001A", onset=day(100)), cond("S72.009A", onset=day(95)))
    assert e.detail == "right" and len(e.records) == 2


def test_displaced_and_nondisplaced_codes_read_the_side(events):
    # S72.034A: nondisplaced midcervical fracture of right femur; S72.035A: left
    e = events(cond("S72.034A", onset=day(100)), cond("S72.035A", onset=day(100)))
    assert sorted(x.detail for x in e) == ["left", "right"]


def test_two_vertebral_levels_are_two_fractures(events):
    e = events(cond("S32.010A", onset=day(100)), cond("S32.020A", onset=day(100)))
    assert sorted(x.detail for x in e) == ["L1", "L2"]


def test_vertebra_without_a_level_joins_the_levelled_one(events):
    (e,) = events(cond("S32.010A", onset=day(100)), cond("M80.08XA", onset=day(80)))
    assert (e.site, e.detail, e.date) == ("vertebral", "L1", day(100))


def test_different_sites_on_the_same_day_are_two(events):
    assert len(events(cond("M80.08XA", onset=day(50)), cond("S52.501A", onset=day(50)))) == 2


# -- 7th character ------------------------------------------------------------------------------------
@pytest.mark.parametrize("char", list("ABC"))
def test_initial_encounter_characters_start_a_fracture(events, char):
    e = events(cond("S72.001A", onset=day(400)), cond(f"S72.001{char}", onset=day(200)))
    assert len(e) == 2


@pytest.mark.parametrize("char", list("DEFGHJKMNPQRS"))
def test_later_encounter_characters_are_never_a_new_fracture(events, char):
    (e,) = events(cond("S72.001A", onset=day(400)), cond(f"S72.001{char}", onset=day(100)))
    assert e.date == day(400) and len(e.records) == 2


def test_later_encounter_alone_is_a_fracture_on_or_before_its_date(events):
    (e,) = events(cond("S72.001D", recorded=day(30)))
    assert e.counted and not e.certain and e.date == day(30)
    assert "on or before" in e.when


def test_code_without_a_7th_character_is_read_without_an_encounter(events):
    (e,) = events(cond("S72.001", onset=day(30)))  # a category, not a billable code: still a hip fracture
    assert e.counted and e.site == "hip" and e.records[0].encounter == "not_stated"


# -- dating ---------------------------------------------------------------------------------------------
def test_initial_encounter_without_onset_is_dated_by_its_encounter(events):
    (e,) = events(cond("S72.001A", recorded=day(10), encounter="Encounter/e1"), encounter("e1", day(40)))
    assert (e.date, e.certain) == (day(40), True)


def test_missing_encounter_falls_back_to_on_or_before_the_recorded_date(events):
    (e,) = events(cond("S72.001A", recorded=day(10), encounter="Encounter/not-in-the-bundle"))
    assert (e.date, e.certain) == (day(10), False)


def test_later_encounter_code_is_not_dated_by_its_encounter(events):
    (e,) = events(cond("S72.001D", recorded=day(10), encounter="Encounter/e1"), encounter("e1", day(40)))
    assert (e.date, e.certain) == (day(10), False)


def test_recorded_date_is_never_taken_as_the_onset(facts_of):
    f = facts_of(cond("S72.001A", recorded=day(10)))
    (c,) = f.conditions
    assert c.onset is None and c.recorded == day(10)


@pytest.mark.parametrize("days, recent", [(300, True), (365, True), (366, False)])
def test_uncertain_date_is_recent_only_within_12_months(interp, days, recent):
    i = interp(t_score(-2.6), cond("S52.501A", recorded=day(days)))
    reasons = [r for r in i.risk_reasons if "last 12 months" in r]
    assert bool(reasons) is recent
    if recent:
        assert "uncertain" in reasons[0]


def test_malformed_onset_is_read_as_no_onset(events):
    (e,) = events(cond("S72.001A", recorded=day(20), onsetDateTime="yesterday"))
    assert (e.date, e.certain) == (day(20), False)


def test_fracture_without_any_date_is_listed_not_counted(interp):
    i = interp(t_score(-0.5), cond("S72.001A"))
    assert i.fractures == [] and len(i.fractures_not_counted) == 1
    assert "no onset" in i.fractures_not_counted[0].reason
    assert i.diagnosis == "normal"


def test_future_fracture_is_not_counted(interp):
    i = interp(t_score(-0.5), cond("S72.001A", onset=AS_OF + timedelta(days=1)))
    assert i.diagnosis == "normal" and "after today" in i.fractures_not_counted[0].reason


# -- history codes --------------------------------------------------------------------------------------
def test_history_code_alone_is_a_past_fracture_never_recent(interp):
    i = interp(t_score(-2.6), cond("Z87.310", recorded=day(5)))
    assert len(i.fractures) == 1 and i.fractures[0].history
    assert not any("last 12 months" in r for r in i.risk_reasons)


def test_history_text_on_a_snomed_code_is_history(knowledge, events):
    (e,) = events(cond("443165006", SNOMED, recorded=day(5), display="History of osteoporotic fracture"))
    assert e.history


def test_history_code_after_a_fracture_is_that_fracture(events):
    (e,) = events(cond("S72.001A", onset=day(500)), cond("Z87.310", recorded=day(20)))
    assert not e.history and e.date == day(500)


def test_three_codes_of_one_l1_fracture_are_one(interp):
    i = interp(t_score(-2.6), cond("S32.010A", onset=day(500)), cond("M80.08XA", onset=day(460)),
               cond("Z87.310", recorded=day(10)))
    assert len(i.fractures) == 1
    assert not any("multiple" in r for r in i.risk_reasons)
    assert i.risk == "high"


# -- high-energy external causes ------------------------------------------------------------------------
@pytest.mark.parametrize("cause, counted", [("V43.52XA", False), ("V00.811A", True), ("V00.131A", False),
                                            ("W11.XXXA", False), ("W13.8XXA", False), ("W14.XXXA", False),
                                            ("W10.0XXA", True), ("W19.XXXA", True), ("W01.0XXA", True)])
def test_external_cause_codes(events, cause, counted):
    (e,) = events(cond("S72.001A", onset=day(100)), cond(cause, onset=day(100)))
    assert e.counted is counted


@pytest.mark.parametrize("apart, counted", [(0, False), (1, True)])
def test_external_cause_same_day_not_next_day(events, apart, counted):
    (e,) = events(cond("S72.001A", onset=day(100)), cond("V43.52XA", onset=day(100 - apart)))
    assert e.counted is counted


def test_external_cause_in_the_same_encounter(events):
    (e,) = events(cond("S72.001A", onset=day(100), encounter="Encounter/e9"),
                  cond("V43.52XA", recorded=day(90), encounter="Encounter/e9"))
    assert not e.counted and "transport accident" in e.reason


def test_external_cause_as_an_additional_coding(events):
    (e,) = events(cond("S72.001A", onset=day(100), extra=[{"system": ICD, "code": "V43.52XA"}]))
    assert not e.counted


def test_external_cause_in_evidence(events):
    (e,) = events(cond("S72.001A", onset=day(100),
                       evidence=[{"code": [{"coding": [{"system": ICD, "code": "W11.XXXA"}]}]}, "junk", {"code": 5}]))
    assert not e.counted and "fall from height" in e.reason


def test_high_energy_hip_fracture_does_not_make_osteoporosis(interp):
    i = interp(t_score(-0.5), cond("S72.001A", onset=day(100)), cond("V43.52XA", onset=day(100)))
    assert i.diagnosis == "normal" and i.fractures == []


# -- on therapy -----------------------------------------------------------------------------------------
def test_one_fracture_on_therapy_is_not_called_treatment_failure(knowledge, facts_of):
    f = facts_of(t_score(-2.6), med("46041", day(900)), cond("S52.501A", onset=day(500)))
    a = advise(interpret(f, knowledge), f, knowledge)
    (m,) = [m for m in a.management if m.kind == "fracture-on-therapy"]
    assert "failure" not in summary_of(m).lower() and "alendronate" in summary_of(m).lower()
    assert any("adherence" in line for line in lines_of(m))


@pytest.mark.parametrize("fractures, failure", [(1, False), (2, True)])
def test_two_fractures_on_therapy_are_treatment_failure(knowledge, facts_of, fractures, failure):
    conds = [cond("S52.501A", onset=day(500)), cond("S42.201A", onset=day(300))][:fractures]
    f = facts_of(t_score(-2.6), med("46041", day(900)), *conds)
    a = advise(interpret(f, knowledge), f, knowledge)
    (m,) = [m for m in a.management if m.kind == "fracture-on-therapy"]
    assert ("Treatment failure" in summary_of(m)) is failure
    assert ("IOF-2012" in m.guidelines)


def test_fracture_dated_only_by_recorded_date_is_not_on_therapy(interp):
    i = interp(t_score(-2.6), med("46041", day(900)), cond("S52.501A", recorded=day(500)))
    assert i.on_therapy == []


@pytest.mark.parametrize("code, aff", [("S72.21XA", True), ("S72.001A", False), ("S72.301A", True),
                                       ("S72.352A", True)])  # S72.3- femoral shaft: read since its value set
def test_subtrochanteric_fracture_on_an_antiresorptive_asks_for_aff_review(knowledge, facts_of, code, aff):
    f = facts_of(t_score(-2.6), med("46041", day(900)), cond(code, onset=day(100)))
    kinds = [m.kind for m in advise(interpret(f, knowledge), f, knowledge).management]
    assert ("atypical-femoral-fracture-review" in kinds) is aff
    assert ("fracture-on-therapy" in kinds) is not aff


# -- DXA after a fragility hip or vertebral fracture ----------------------------------------------------
@pytest.mark.parametrize("exam_days, ordered", [(None, True), (700, False), (760, True)])
def test_dxa_order_after_hip_fracture(knowledge, facts_of, exam_days, ordered):
    resources = [cond("S72.001A", onset=day(30))]
    if exam_days is not None:
        resources.append(t_score(-1.5, day(exam_days)))
    f = facts_of(*resources)
    a = advise(interpret(f, knowledge), f, knowledge)
    assert any(o.loinc == "38268-9" and "fracture" in o.reason for o in a.orders) is ordered


def test_wrist_fracture_without_dxa_gets_no_fracture_dxa_order(knowledge, facts_of):
    f = facts_of(cond("S52.501A", onset=day(30)), t_score(-1.5, day(900)))
    a = advise(interpret(f, knowledge), f, knowledge)
    assert not any("fracture" in o.reason for o in a.orders)


def test_femoral_shaft_fractures_are_events_with_their_side(knowledge, facts_of):
    f = facts_of(t_score(-2.6), cond("S72.301A", onset=day(100)), cond("S72.302A", onset=day(100)))
    i = interpret(f, knowledge)
    assert sorted(e.site_label for e in i.fractures) == ["femoral shaft (left)", "femoral shaft (right)"]


def test_hip_fracture_in_a_man_of_45_without_dxa_gets_the_dxa_and_work_up(knowledge):
    """Review finding: a man aged 45 (Z-score group: the fracture does not make a diagnosis) with a
    fragility hip fracture and no DXA got no card at all; rules §6.3 ask for the DXA and the work-up."""
    from cds_service.cards.advice import advice_cards
    from cds_service.clinical.facts import FactBuilder
    from .test_interpretation import AS_OF, born, patient
    f = FactBuilder(knowledge).build(patient("male", born(45)), [cond("S72.001A", onset=day(30))], AS_OF)
    a = advise(interpret(f, knowledge), f, knowledge)
    loincs = {o.loinc for o in a.orders}
    assert "38268-9" in loincs and {"17861-6", "2731-8"} <= loincs
    assert any(c["source"]["topic"]["code"] == "monitoring" for c in advice_cards(a, f, knowledge))


def test_an_undated_re_recording_of_an_old_fracture_is_not_a_new_recent_one(knowledge, facts_of):
    """Review finding: a hip fracture of 2020 and the same code recorded years later without an onset
    were two fractures, one "recent". An "on or before" record joins the known fracture before it."""
    f = facts_of(t_score(-2.0), cond("S72.001A", onset=day(6 * 365)), cond("S72.001A", recorded=day(100)))
    i = interpret(f, knowledge)
    assert len(i.fractures) == 1 and len(i.fractures[0].records) == 2
    assert not any("last 12 months" in r for r in i.risk_reasons)
    f = facts_of(t_score(-2.0), cond("S72.001A", onset=day(6 * 365)), cond("S72.002A", recorded=day(100)))
    assert len(interpret(f, knowledge).fractures) == 2  # the other hip: a second fracture


@pytest.mark.parametrize("initial, later", [("S32.010A", "S32.010D"), ("S52.501A", "S52.501G"),
                                            ("S42.201A", "S42.201S"), ("S32.301A", "S32.301D")])
def test_a_later_encounter_code_of_each_site_joins_its_fracture(knowledge, facts_of, initial, later):
    """Review finding: the published site lists hold initial-encounter codes only, so S32.010D matched
    no value set; the sites now include their ICD-10-CM categories with every 7th character."""
    f = facts_of(t_score(-2.0), cond(initial, onset=day(200)), cond(later, recorded=day(120)))
    events = interpret(f, knowledge).fractures
    assert len(events) == 1 and len(events[0].records) == 2
    assert f.ignored == []
