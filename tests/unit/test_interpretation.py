"""Interpretation of the current DXA exam (clinical rules §2: WHO/ISCD, AACE-2020)."""
from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import Interpretation, interpret

from .fhir_builders import AS_OF, ICD, LOINC, PID, RXNORM, SNOMED, UCUM

EXAM = AS_OF - timedelta(days=14)  # 2026-05-18: the date of the current DXA exam in most tests

T_CODE = {"spine": "38267-1", "hip": "38264-8", "neck": "38263-0", "radius": "80944-2", "calcaneus": "38266-3",
          "unstated": "38265-5"}
Z_CODE = {"spine": "85394-5", "hip": "80933-5", "neck": "80934-3", "radius": "80932-7"}
_ids = itertools.count(1)
NO_BIRTH = object()


# -- builders ------------------------------------------------------------------------------------
def day(days_before_as_of: int) -> date:
    return AS_OF - timedelta(days=days_before_as_of)


def _score(code: str, value: float, when: date, unit: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{next(_ids)}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{PID}"},
            "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def t(site: str, value: float, when: date = EXAM) -> dict[str, Any]:
    return _score(T_CODE[site], value, when, "{T-score}")


def z(site: str, value: float, when: date = EXAM) -> dict[str, Any]:
    return _score(Z_CODE[site], value, when, "{Z-score}")


def frax(kind: str, percent: float, when: date = EXAM) -> dict[str, Any]:
    text = {"hip": "FRAX 10-year hip fracture risk", "major": "FRAX 10-year major osteoporotic fracture risk"}[kind]
    return {"resourceType": "Observation", "id": f"f{next(_ids)}", "status": "final", "code": {"text": text},
            "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": when.isoformat(),
            "valueQuantity": {"value": percent, "unit": "%", "system": UCUM, "code": "%"}}


def condition(code: str, system: str = ICD, *, onset: date | None = None, clinical: str = "active",
              display: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition", "id": f"c{next(_ids)}",
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "code": {"coding": [{"system": system, "code": code, **({"display": display} if display else {})}]},
        "subject": {"reference": f"Patient/{PID}"},
    }
    if onset:
        r["onsetDateTime"] = onset.isoformat()
    return r


def fracture(code: str = "S72.001A", onset: date = day(400), system: str = ICD, **kw: Any) -> dict[str, Any]:
    return condition(code, system, onset=onset, **kw)


def med(code: str, start: date, status: str = "active", end: date | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "MedicationRequest", "id": f"m{next(_ids)}", "status": status,
                         "intent": "order", "authoredOn": start.isoformat(),
                         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
                         "subject": {"reference": f"Patient/{PID}"}}
    if end:
        r["dosageInstruction"] = [{"timing": {"repeat": {"boundsPeriod": {"start": start.isoformat(),
                                                                          "end": end.isoformat()}}}}]
    return r


def born(age: int, on: date = EXAM) -> date:
    """The birth date of someone who turns `age` exactly on `on`."""
    return on.replace(year=on.year - age)


def patient(sex: str, birth: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Patient", "id": PID, "gender": sex}
    if birth is not NO_BIRTH:
        r["birthDate"] = birth.isoformat()
    return r


@pytest.fixture()
def run(knowledge):
    def _run(*resources: dict[str, Any], sex: str = "female", age: int = 65, birth: Any = None) -> Interpretation:
        b = birth if birth is not None else born(age)
        facts = FactBuilder(knowledge).build(patient(sex, b), list(resources), AS_OF)
        return interpret(facts, knowledge)
    return _run


# -- WHO classes and their boundaries --------------------------------------------------------------
@pytest.mark.parametrize("value, diagnosis", [
    (0.4, "normal"),
    (-0.9, "normal"),
    (-1.0, "normal"),
    (-1.05, "low_bone_mass"),
    (-1.1, "low_bone_mass"),
    (-2.4, "low_bone_mass"),
    (-2.5, "osteoporosis"),
    (-2.6, "osteoporosis"),
])
def test_who_classification_boundaries(run, value, diagnosis):
    i = run(t("spine", value))
    assert i.method == "t_score"
    assert i.who_class == diagnosis
    assert i.diagnosis == diagnosis
    assert i.lowest_t.value == value


@pytest.mark.parametrize("value, risk", [(-2.5, "high"), (-2.9, "high"), (-3.0, "high"), (-3.1, "very_high"),
                                         (-4.1, "very_high")])
def test_very_high_risk_below_minus_3(run, value, risk):
    i = run(t("spine", value))
    assert i.diagnosis == "osteoporosis"
    assert i.risk == risk
    if risk == "very_high":
        assert i.risk_reasons == [f"T-score {('%.1f' % value).replace('-', '−')} is below −3.0"]
    else:
        assert i.risk_reasons == []


def test_normal_and_low_bone_mass_carry_no_osteoporosis_risk(run):
    assert run(t("spine", -0.5)).risk is None
    assert run(t("spine", -0.5)).treatment_indicated is False


# -- T-score or Z-score by age, sex and menopause ----------------------------------------------------
@pytest.mark.parametrize("sex", ["female", "male"])
def test_age_49_uses_z_score_and_50_uses_t_score(run, sex):
    resources = (t("spine", -2.8), z("spine", -1.2))
    at_50 = run(*resources, sex=sex, birth=born(50))                       # 50th birthday on the exam day
    at_49 = run(*resources, sex=sex, birth=born(50) + timedelta(days=1))   # turns 50 the day after
    assert (at_50.age_at_exam, at_50.method, at_50.diagnosis) == (50, "t_score", "osteoporosis")
    assert (at_49.age_at_exam, at_49.method, at_49.diagnosis) == (49, "z_score", "within_expected_range")


def test_age_is_taken_at_the_exam_not_at_the_request(run):
    # 50 today, but 49 on the day of the exam two weeks ago
    i = run(t("spine", -2.8), z("spine", -1.2), birth=born(50, on=AS_OF))
    assert (i.age_at_exam, i.method) == (49, "z_score")


def test_woman_45_with_postmenopausal_state_uses_t_score(run):
    i = run(t("spine", -2.8), z("spine", -1.2), condition("Z78.0"), age=45)
    assert (i.method, i.diagnosis, i.age_at_exam) == ("t_score", "osteoporosis", 45)
    assert "postmenopausal" in i.group


def test_woman_45_with_resolved_postmenopausal_code_does_not_use_t_score(run):
    i = run(t("spine", -2.8), z("spine", -1.2), condition("Z78.0", clinical="inactive"), age=45)
    assert i.method == "z_score"


@pytest.mark.parametrize("value, diagnosis", [(-1.2, "within_expected_range"), (-1.9, "within_expected_range"),
                                              (-2.0, "below_expected_range"), (-2.1, "below_expected_range")])
def test_z_score_boundary(run, value, diagnosis):
    i = run(z("hip", value), age=40)
    assert i.method == "z_score"
    assert i.diagnosis == diagnosis
    assert i.lowest_z.value == value
    assert i.risk is None


def test_man_40_with_low_z_is_below_expected_range(run):
    i = run(z("spine", -2.3), t("spine", -2.9), sex="male", age=40)
    assert (i.method, i.diagnosis, i.who_class) == ("z_score", "below_expected_range", None)


def test_woman_45_t_minus_2_8_z_minus_1_2_is_within_expected_range_never_osteoporosis(run):
    i = run(t("spine", -2.8), z("spine", -1.2), age=45)
    assert i.method == "z_score"
    assert i.diagnosis == "within_expected_range"
    assert i.osteoporosis is False
    assert i.who_class is None
    assert i.lowest_t is None
    assert i.risk is None
    assert i.treatment_indicated is False
    assert any("not used for diagnosis" in n for n in i.notes)


def test_young_woman_with_only_t_scores_needs_a_z_score(run):
    i = run(t("spine", -3.5), age=38)
    assert i.diagnosis == "z_score_needed"
    assert i.osteoporosis is False


# -- lowest diagnostic site in the current exam --------------------------------------------------------
@pytest.mark.parametrize("lowest_site, label", [
    ("spine", "lumbar spine (L1-L4)"), ("hip", "total hip"), ("neck", "femoral neck"),
    ("radius", "33% radius (forearm)")])
def test_lowest_diagnostic_site_wins(run, lowest_site, label):
    values = {"spine": -1.4, "hip": -1.6, "neck": -1.8, "radius": -2.0}
    values[lowest_site] = -2.7
    i = run(*(t(site, v) for site, v in values.items()))
    assert i.lowest_t.value == -2.7
    assert i.lowest_t.site_label == label
    assert i.diagnosis == "osteoporosis"
    assert len(i.exam.diagnostic("t_score")) == 4


def test_scenario_1_lumbar_minus_4_1_and_hip_minus_2_9(run):
    i = run(t("spine", -4.1), t("hip", -2.9), age=71)
    assert (i.diagnosis, i.risk) == ("osteoporosis", "very_high")
    assert (i.lowest_t.value, i.lowest_t.site) == (-4.1, "lumbar_spine")
    assert any("−4.1" in b and "lumbar spine" in b for b in i.basis)


def test_calcaneus_is_not_used_for_diagnosis(run):
    i = run(t("spine", -1.2), t("calcaneus", -3.5))
    assert i.lowest_t.value == -1.2
    assert i.diagnosis == "low_bone_mass"
    assert any("calcaneus" in n and "not diagnostic" in n for n in i.notes)


def test_calcaneus_alone_gives_no_diagnosis(run):
    i = run(t("calcaneus", -3.5))
    assert i.lowest_t is None
    assert i.diagnosis == "t_score_needed"


def test_scenario_10_site_not_stated_is_used_with_a_note(run):
    i = run(t("unstated", -3.1), age=67)
    assert i.diagnosis == "osteoporosis"
    assert i.lowest_t.site == "not_stated"
    assert any("not stated" in n for n in i.notes)
    assert not any("measured at the forearm" in b or "radius" in b for b in i.basis)


# -- the current exam window -----------------------------------------------------------------------
@pytest.mark.parametrize("gap, diagnosis, in_exam", [(29, "low_bone_mass", True), (30, "low_bone_mass", True),
                                                    (31, "normal", False), (90, "normal", False)])
def test_exam_window_is_30_days_from_the_latest_t_score(run, gap, diagnosis, in_exam):
    i = run(t("spine", -0.5), t("hip", -2.0, when=EXAM - timedelta(days=gap)))
    assert i.exam.date == EXAM
    assert ("total_hip" in {s.site for s in i.exam.scores}) is in_exam
    assert i.diagnosis == diagnosis


def test_later_same_site_score_replaces_the_earlier_one(run):
    i = run(t("spine", -2.7, when=EXAM - timedelta(days=10)), t("spine", -2.2))
    assert [s.value for s in i.exam.diagnostic("t_score")] == [-2.2]


def test_scores_after_the_request_date_are_not_the_current_exam(run):
    i = run(t("spine", -1.5), t("spine", -3.4, when=AS_OF + timedelta(days=5)))
    assert i.exam.date == EXAM
    assert i.diagnosis == "low_bone_mass"


# -- fractures and persisting diagnoses ---------------------------------------------------------------
@pytest.mark.parametrize("code, system", [("S72.001A", ICD), ("M80.08XA", ICD), ("S22.000A", ICD),
                                          ("5913000", SNOMED), ("42942008", SNOMED)])
def test_hip_or_vertebral_fragility_fracture_means_osteoporosis_with_normal_t(run, code, system):
    i = run(t("spine", -0.5), fracture(code, system=system))
    assert i.who_class == "normal"
    assert i.diagnosis == "osteoporosis"
    assert any("fragility fracture" in b for b in i.basis)


@pytest.mark.parametrize("code, system", [("M80.031A", ICD), ("443165006", SNOMED), ("Z87.310", ICD)])
def test_osteoporotic_fracture_code_is_a_recorded_osteoporosis_diagnosis(run, code, system):
    """'Age-related osteoporosis with current pathological fracture' states the diagnosis (it is in
    the VSAC osteoporosis value sets): it persists whatever the T-score, as M81.0 does."""
    i = run(t("spine", -0.5), fracture(code, system=system))
    assert i.diagnosis == "osteoporosis"


@pytest.mark.parametrize("code, system", [("S52.501A", ICD), ("263102004", SNOMED), ("S42.201A", ICD)])
def test_forearm_or_unspecified_fracture_does_not_make_osteoporosis(run, code, system):
    normal = run(t("spine", -0.5), fracture(code, system=system))
    assert normal.diagnosis == "normal"
    low = run(t("spine", -1.5), fracture(code, system=system))
    assert low.diagnosis == "low_bone_mass"
    assert any("Fracture on record" in n for n in low.notes)


def test_hip_fracture_after_the_request_date_is_not_counted(run):
    i = run(t("spine", -0.5), fracture("S72.001A", onset=AS_OF + timedelta(days=3)))
    assert i.diagnosis == "normal"


def test_active_osteoporosis_diagnosis_persists_with_better_t(run):
    i = run(t("spine", -1.6), condition("M81.0", onset=date(2019, 1, 1)))
    assert i.who_class == "low_bone_mass"
    assert i.diagnosis == "osteoporosis"
    assert any("problem list" in b and "M81.0" in b for b in i.basis)


def test_resolved_osteoporosis_diagnosis_does_not_persist(run):
    i = run(t("spine", -1.6), condition("M81.0", clinical="resolved", onset=date(2019, 1, 1)))
    assert i.diagnosis == "low_bone_mass"


def test_earlier_osteoporotic_t_score_at_50_or_more_persists(run):
    earlier = EXAM.replace(year=EXAM.year - 3)
    i = run(t("spine", -1.4), t("hip", -2.6, when=earlier), age=65)
    assert i.who_class == "low_bone_mass"
    assert i.lowest_t.value == -1.4
    assert i.diagnosis == "osteoporosis"
    assert any("earlier T-score −2.6" in b for b in i.basis)


def test_earlier_osteoporotic_t_score_before_50_does_not_persist(run):
    earlier = EXAM.replace(year=EXAM.year - 5)  # aged 48 then
    i = run(t("spine", -1.4), t("hip", -2.6, when=earlier), age=53)
    assert i.diagnosis == "low_bone_mass"


def test_earlier_t_score_above_minus_2_5_does_not_persist(run):
    i = run(t("spine", -1.4), t("hip", -2.4, when=EXAM.replace(year=EXAM.year - 2)))
    assert i.diagnosis == "low_bone_mass"


# -- very high risk features (osteoporosis) ------------------------------------------------------------
def test_fracture_within_12_months_is_very_high_risk(run):
    recent = run(t("spine", -2.6), fracture("S52.501A", onset=day(300)))
    assert recent.risk == "very_high"
    assert len(recent.risk_reasons) == 1 and "last 12 months" in recent.risk_reasons[0]
    old = run(t("spine", -2.6), fracture("S52.501A", onset=day(400)))
    assert (old.risk, old.risk_reasons) == ("high", [])


def test_fracture_while_on_therapy_is_very_high_risk(run):
    i = run(t("spine", -2.6), med("46041", start=day(900)), fracture("S52.501A", onset=day(500)))
    assert i.risk == "very_high"
    # a record without words of its own is named from the CMS ICD-10-CM release
    assert i.risk_reasons == ["fracture while on alendronate: Unspecified fracture of the lower end of right radius, "
                              f"initial encounter for closed fracture ({day(500).isoformat()})"]
    assert [m.drug for m in i.active_therapies] == ["alendronate"]


def test_fracture_before_therapy_started_is_not_on_therapy(run):
    i = run(t("spine", -2.6), med("46041", start=day(400)), fracture("S52.501A", onset=day(500)))
    assert (i.risk, i.risk_reasons) == ("high", [])


def test_fracture_after_completed_therapy_ended_is_not_on_therapy(run):
    i = run(t("spine", -2.6), med("46041", start=day(2000), status="completed", end=day(900)),
            fracture("S52.501A", onset=day(500)))
    assert (i.risk, i.risk_reasons) == ("high", [])
    assert i.active_therapies == []


def test_two_distinct_fractures_are_very_high_risk(run):
    one = run(t("spine", -2.6), fracture("M80.031A", onset=day(800)))
    assert one.risk == "high"
    two = run(t("spine", -2.6), fracture("M80.031A", onset=day(800)), fracture("S72.001A", onset=day(500)))
    assert two.risk == "very_high"
    assert two.risk_reasons == ["multiple fractures (2 recorded)"]


def test_one_fracture_coded_twice_is_not_multiple_fractures(run):
    # the same hip fracture on the problem list (SNOMED) and as an encounter diagnosis (ICD-10-CM)
    i = run(t("spine", -2.6), fracture("S72.001A", onset=day(500)), fracture("5913000", system=SNOMED, onset=day(500)))
    assert (i.risk, i.risk_reasons) == ("high", [])


def test_hip_and_vertebral_fractures_on_the_same_day_are_multiple(run):
    i = run(t("spine", -2.6), fracture("M80.08XA", onset=day(500)), fracture("M80.051A", onset=day(500)))
    assert i.risk == "very_high"
    assert i.risk_reasons == ["multiple fractures (2 recorded)"]


def test_long_term_glucocorticoid_condition_alone_is_named_not_very_high_risk(run):
    """Rules §2 as revised with §6.1 (ACR 2022): use alone is named on the cards, not very high risk."""
    i = run(t("spine", -2.6), condition("Z79.52"))
    assert i.risk == "high" and i.risk_reasons == []
    assert len(i.glucocorticoids) == 1 and "Z79.52" in i.glucocorticoids[0]


def test_fracture_on_long_term_glucocorticoids_is_very_high_risk(run):
    i = run(t("spine", -2.6), condition("Z79.52"), fracture("S52.501A", onset=day(400)))
    assert i.risk == "very_high"
    assert any(r.startswith("fracture while on long-term glucocorticoids") for r in i.risk_reasons)


@pytest.mark.parametrize("days, named", [(60, False), (88, False), (89, True), (200, True)])
def test_prednisone_counts_from_90_days(run, days, named):
    """An active prednisone order of unknown dose: long-term from 90 days of use (the start day counts),
    named with its dose unknown; not very high risk by itself."""
    i = run(t("spine", -2.6), med("8640", start=day(days)))
    assert i.risk == "high"
    assert bool(i.glucocorticoids) is named
    if named:
        assert "dose unknown" in i.glucocorticoids[0]


def test_completed_prednisone_is_not_current_glucocorticoid_use(run):
    i = run(t("spine", -2.6), med("8640", start=day(400), status="completed"))
    assert i.risk == "high"


def test_very_high_risk_features_need_osteoporosis(run):
    i = run(t("spine", -1.5), condition("Z79.52"), fracture("S52.501A", onset=day(30)))
    assert i.diagnosis == "low_bone_mass"
    assert i.risk == "frax_needed"


# -- low bone mass and FRAX ------------------------------------------------------------------------
def test_scenario_11_low_bone_mass_without_frax_needs_frax(run):
    i = run(t("spine", -1.8), age=66)
    assert (i.diagnosis, i.risk, i.treatment_indicated) == ("low_bone_mass", "frax_needed", False)


@pytest.mark.parametrize("hip, risk", [(2.9, "frax_low"), (3.0, "frax_high"), (4.5, "frax_high")])
def test_frax_hip_threshold_3_percent(run, hip, risk):
    i = run(t("spine", -1.8), frax("hip", hip))
    assert i.risk == risk
    assert i.treatment_indicated is (risk == "frax_high")


@pytest.mark.parametrize("major, risk", [(19.9, "frax_low"), (20.0, "frax_high")])
def test_frax_major_threshold_20_percent(run, major, risk):
    i = run(t("spine", -1.8), frax("hip", 1.0), frax("major", major))
    assert i.risk == risk


def test_latest_frax_wins(run):
    i = run(t("spine", -1.8), frax("hip", 4.0, when=day(700)), frax("hip", 2.0, when=day(20)))
    assert i.risk == "frax_low"


# -- missing data ------------------------------------------------------------------------------------
def test_no_birth_date_is_undetermined(run):
    i = run(t("spine", -3.2), birth=NO_BIRTH)
    assert (i.method, i.diagnosis, i.age_at_exam, i.risk) == ("undetermined", "undetermined", None, None)
    assert any("birth date" in n for n in i.notes)


def test_no_dxa(run):
    i = run()
    assert i.exam is None
    assert i.diagnosis == "no_dxa"
    assert i.risk is None
    assert run(birth=NO_BIRTH).diagnosis == "no_dxa"
    assert run(age=40).diagnosis == "no_dxa"


def test_ignored_scores_do_not_make_an_exam(run, knowledge):
    r = t("spine", -3.3)
    r["status"] = "entered-in-error"
    assert run(r).diagnosis == "no_dxa"


def test_a_later_heel_scan_does_not_hide_the_diagnostic_exam(run):
    i = run(t("spine", -2.7, EXAM - timedelta(days=60)), t("calcaneus", -1.0, EXAM))
    assert i.exam.date == EXAM - timedelta(days=60)
    assert i.lowest_t.value == -2.7
    assert i.diagnosis == "osteoporosis"
