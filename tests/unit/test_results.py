"""Results as they arrive (clinical rules §6.4): future dates, corrections, text values, parent dates,
calcium (ionized, albumin correction), kidney function (eGFR codes, CKD-EPI 2021, Cockcroft-Gault) and
high calcium by PTH, each at its boundary."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cds_service.clinical.advice import Evaluator, ckd_epi_2021, cockcroft_gault
from cds_service.clinical.facts import FactBuilder

from .test_advice import TERIPARATIDE, blocked, high, ids, lab, run, statement, very_high  # noqa: F401 (run: fixture)
from .test_interpretation import AS_OF, LOINC, PID, UCUM, born, day, patient, t


def obs(code: str, value: Any = None, unit: str = "mg/dL", *, when=None, rid=None, status="final",
        issued=None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Observation", "id": rid or f"r{code}-{id(extra)}-{value}", "status": status,
                         "code": {"coding": [{"system": LOINC, "code": code}]},
                         "subject": {"reference": f"Patient/{PID}"}}
    if when is not None:
        r["effectiveDateTime"] = when.isoformat()
    if value is not None:
        r["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if issued:
        r["issued"] = issued
    r.update(extra)
    return r


def facts_of(knowledge, *resources, sex="female", age=65, birth=None):
    return FactBuilder(knowledge).build(patient(sex, birth or born(age)), list(resources), AS_OF)


def reasons(facts, rid):
    return [i.reason for i in facts.ignored if i.resource == f"Observation/{rid}"]


# -- dated in the future -----------------------------------------------------------------------------
@pytest.mark.parametrize("days_ahead, used", [(0, True), (1, True), (2, False), (400, False)])
def test_future_dated_result_boundary(knowledge, days_ahead, used):
    when = AS_OF + timedelta(days=days_ahead)
    f = facts_of(knowledge, obs("98979-8", 74, "mL/min/{1.73_m2}", when=when, rid="future"),
                 obs("38267-1", -2.7, "{T-score}", when=when, rid="tfuture"))
    assert bool(f.labs.get("egfr")) is used
    assert bool(f.scores) is used
    assert bool(reasons(f, "future")) is (not used)
    if not used:
        assert "dated in the future" in reasons(f, "future")[0]
        assert [i.group for i in f.ignored if i.resource == "Observation/tfuture"] == ["dxa"]


def test_future_egfr_does_not_hide_the_current_one(knowledge, run):
    a = run(*high(obs("98979-8", 74, "mL/min/{1.73_m2}", when=AS_OF + timedelta(days=30)), egfr=26))
    assert "alendronate" in blocked(a) and "egfr-below-35" in ids(a)


# -- corrections ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["corrected", "amended"])
def test_correction_supersedes_final_of_same_code_and_date(knowledge, status):
    when = day(20)
    f = facts_of(knowledge, obs("38267-1", -1.9, "{T-score}", when=when, rid="final"),
                 obs("38267-1", -2.7, "{T-score}", when=when, rid="corr", status=status))
    assert [s.value for s in f.scores] == [-2.7]
    assert "superseded by Observation/corr" in reasons(f, "final")[0]


def test_later_issued_wins_between_corrections(knowledge):
    when = day(20)
    f = facts_of(knowledge, obs("17861-6", 8.1, when=when, rid="c2", status="corrected", issued="2026-01-02T10:00:00Z"),
                 obs("17861-6", 9.3, when=when, rid="c3", status="corrected", issued="2026-01-03T10:00:00Z"),
                 obs("17861-6", 7.0, when=when, rid="f1"))
    assert [x.value for x in f.labs["calcium"]] == [9.3]
    assert {i.resource for i in f.ignored} == {"Observation/c2", "Observation/f1"}


def test_corrections_of_another_date_or_code_do_not_supersede(knowledge):
    f = facts_of(knowledge, obs("38267-1", -1.9, "{T-score}", when=day(20), rid="a"),
                 obs("38267-1", -2.7, "{T-score}", when=day(21), rid="b", status="corrected"),
                 obs("38264-8", -2.0, "{T-score}", when=day(20), rid="c", status="corrected"))
    assert len(f.scores) == 3 and not f.ignored


# -- valueString -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("-2.7", -2.7), ("\u22122.7", -2.7), (" -3 ", -3.0), ("+0.5", 0.5)])
def test_number_in_value_string_is_read(knowledge, text, value):
    f = facts_of(knowledge, obs("38267-1", when=day(10), valueString=text))
    assert [s.value for s in f.scores] == [value]


@pytest.mark.parametrize("text", ["osteoporotic", "< -2.5", "-2.7 SD?", "", "2.7.1"])
def test_text_that_is_not_a_number_is_listed(knowledge, text):
    f = facts_of(knowledge, obs("38267-1", when=day(10), rid="txt", valueString=text))
    assert f.scores == [] and "not a number" in reasons(f, "txt")[0]


# -- dates on a parent -------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", ["Observation/m1", "https://fhir.example/Observation/m1/_history/2", "urn:uuid:m1"])
def test_member_takes_its_diagnostic_reports_date(knowledge, ref):
    report = {"resourceType": "DiagnosticReport", "id": "dr", "status": "final",
              "code": {"coding": [{"system": LOINC, "code": "38269-7"}]},
              "effectiveDateTime": day(15).isoformat(), "result": [{"reference": ref}]}
    f = facts_of(knowledge, obs("38267-1", -2.8, "{T-score}", rid="m1"), report)
    assert [(s.value, s.date) for s in f.scores] == [(-2.8, day(15))]


def test_member_takes_its_panels_date_and_own_date_wins(knowledge):
    panel = {"resourceType": "Observation", "id": "p", "status": "final",
             "code": {"coding": [{"system": LOINC, "code": "24323-8"}]}, "effectiveDateTime": day(15).isoformat(),
             "hasMember": [{"reference": "Observation/ca"}, {"reference": "Observation/own"}]}
    f = facts_of(knowledge, obs("17861-6", 9.1, rid="ca"), obs("2160-0", 0.9, rid="own", when=day(3)), panel)
    assert f.labs["calcium"][0].date == day(15)
    assert f.labs["creatinine"][0].date == day(3)


def test_member_without_any_date_is_listed(knowledge):
    f = facts_of(knowledge, obs("38267-1", -2.8, "{T-score}", rid="nodate"))
    assert reasons(f, "nodate") == ["no effective date"]


# -- calcium ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("albumin, expected", [(3.9, 8.48), (4.0, 8.4), (4.1, 8.4), (4.6, 8.4)])
def test_albumin_correction_only_below_4(knowledge, albumin, expected):
    f = facts_of(knowledge, obs("17861-6", 8.4, when=day(5)), obs("1751-7", albumin, "g/dL", when=day(5)))
    assert Evaluator(f, knowledge).calcium.value == pytest.approx(expected)


def test_normal_calcium_with_high_albumin_blocks_nothing(run):
    a = run(*high(lab("albumin", 4.6), calcium=8.6))  # old rule: 8.6 + 0.8 × (4.0 − 4.6) = 8.12 "low"
    assert "hypocalcaemia" not in ids(a)


def test_ionized_calcium_wins_over_total(knowledge, run):
    ion = obs("1994-3", 1.05, "mmol/L", when=day(30))  # 4.2 mg/dL: low
    a = run(*high(ion, calcium=9.4))
    assert "hypocalcaemia" in ids(a)
    a = run(*high(obs("1994-3", 1.25, "mmol/L", when=day(30)), calcium=8.0))  # normal ionized, low total
    assert "hypocalcaemia" not in ids(a)


def test_low_calcium_blocks_romosozumab(run):
    a = run(*very_high(calcium=8.0))
    assert "romosozumab" in blocked(a)
    assert "romosozumab" not in a.treatment.offered


@pytest.mark.parametrize("albumin, egfr, ionized, asks", [
    (2.9, 68, False, True), (3.0, 68, False, False), (3.5, 29, False, True), (3.5, 30, False, False),
    (2.9, 25, True, False)])
def test_ionized_calcium_asked_before_denosumab_zoledronic_acid_romosozumab(run, albumin, egfr, ionized, asks):
    extra = [lab("albumin", albumin)] + ([obs("1994-3", 1.2, "mmol/L", when=day(30))] if ionized else [])
    a = run(*very_high(*extra, egfr=egfr))
    assert ("ionized-calcium-needed" in ids(a)) is asks
    if asks:
        f = next(f for f in a.findings if f.id == "ionized-calcium-needed")
        assert set(f.warns) == {"denosumab", "zoledronic_acid", "romosozumab"}


# -- kidney function ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scr, age, sex, expected", [
    # CKD-EPI 2021 (Inker LA et al. NEJM 2021;385:1737-49) worked by hand from the published equation
    # 142 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.200 × 0.9938^age (× 1.012 female); e.g. 2.0 mg/dL, 80, F:
    # 142 × (2.0/0.7)^−1.2 × 0.9938^80 × 1.012 = 142 × 0.2837 × 0.6081 × 1.012 = 24.8
    (1.0, 50, "female", 69), (1.0, 50, "male", 92), (0.7, 40, "female", 112), (2.0, 80, "female", 25),
    (1.2, 60, "male", 69)])
def test_ckd_epi_2021_worked_values(knowledge, scr, age, sex, expected):
    assert round(ckd_epi_2021(scr, age, sex, knowledge)) == expected


def test_ckd_epi_needs_a_sex(knowledge):
    assert ckd_epi_2021(1.0, 50, "unknown", knowledge) is None


@pytest.mark.parametrize("scr, age, kg, sex, expected", [
    (1.0, 80, 60, "male", 50.0), (1.0, 80, 60, "female", 42.5), (2.0, 70, 72, "male", 35.0)])
def test_cockcroft_gault(knowledge, scr, age, kg, sex, expected):
    assert cockcroft_gault(scr, age, kg, sex, knowledge) == pytest.approx(expected)


def test_egfr_computed_from_creatinine_when_none_recorded(knowledge):
    f = facts_of(knowledge, obs("2160-0", 2.0, when=day(10)), age=80)
    e = Evaluator(f, knowledge).egfr
    assert e is not None and round(e.value) == 25 and "CKD-EPI 2021" in e.label and "Inker" in e.label


def test_race_coded_egfr_not_used_beside_a_race_free_one(knowledge):
    f = facts_of(knowledge, obs("48643-1", 40, "mL/min/{1.73_m2}", when=day(5)),
                 obs("98979-8", 33, "mL/min/{1.73_m2}", when=day(5)))
    assert Evaluator(f, knowledge).egfr.value == 33


def test_race_coded_egfr_not_used_beside_a_creatinine(knowledge):
    f = facts_of(knowledge, obs("48643-1", 40, "mL/min/{1.73_m2}", when=day(5)), obs("2160-0", 2.0, when=day(5)),
                 age=80)
    e = Evaluator(f, knowledge).egfr
    assert round(e.value) == 25 and e.analyte == "egfr"


def test_race_coded_egfr_used_when_nothing_else(knowledge):
    f = facts_of(knowledge, obs("48643-1", 40, "mL/min/{1.73_m2}", when=day(5)))
    assert Evaluator(f, knowledge).egfr.value == 40


def _weight(kg: float, days: int = 20) -> dict[str, Any]:
    return obs("29463-7", kg, "kg", when=day(days))


@pytest.mark.parametrize("crcl, below35, below30", [(29, True, True), (30, True, False), (34, True, False),
                                                    (35, False, False)])
def test_clearance_decides_bisphosphonate_limits(run, crcl, below35, below30):
    # man aged 70, creatinine 1.0: CrCl = 70 × weight / 72 → weight = crcl × 72 / 70; eGFR recorded 68
    a = run(*high(_weight(crcl * 72 / 70), creatinine=1.0), sex="male", age=70)
    assert ("alendronate" in blocked(a)) is below35 and ("zoledronic_acid" in blocked(a)) is below35
    assert ("risedronate" in blocked(a)) is below30 and ("ibandronate" in blocked(a)) is below30
    # denosumab's caution stays by eGFR (68 here): never from the clearance
    assert "egfr-below-30" not in ids(a) and "denosumab" not in a.treatment.warnings


def test_old_weight_gives_no_clearance(run):
    a = run(*high(_weight(20, days=400), creatinine=1.0), sex="male", age=70)
    assert "egfr-below-35" not in ids(a)


@pytest.mark.parametrize("egfr, caution", [(29, True), (30, False)])
def test_denosumab_caution_by_egfr_and_calcium_within_14_days(run, egfr, caution):
    a = run(*high(obs("1994-3", 1.2, "mmol/L", when=day(30)), egfr=egfr))
    f = [f for f in a.findings if f.id == "egfr-below-30" and f.kind == "contraindication"]
    assert bool(f) is caution
    if caution:
        assert "denosumab" in f[0].warns and "within 14 days of each dose" in f[0].action


# -- high calcium and PTH -----------------------------------------------------------------------------
@pytest.mark.parametrize("pth, independent", [(9, True), (19, True), (19.9, True), (20, False), (40, False)])
def test_high_calcium_by_pth_boundary(run, pth, independent):
    a = run(*very_high(calcium=11.6, pth=pth))
    assert ("hypercalcaemia-pth-independent" in ids(a)) is independent
    assert ("hyperparathyroidism" in ids(a)) is (not independent)
    if independent:
        assert a.treatment.offered == []  # no drug start until explained
        f = next(f for f in a.findings if f.id == "hypercalcaemia-pth-independent" and f.kind == "secondary_cause")
        assert "PTHrP" in f.action and "free light chains" in f.action and "thiazides" in f.action
        assert all("primary hyperparathyroidism" not in x.message.lower() for x in a.findings)
    else:
        f = next(f for f in a.findings if f.id == "hyperparathyroidism" and f.kind == "contraindication")
        assert "urine calcium/creatinine" in f.action and "primary hyperparathyroidism likely" in f.message


def test_high_calcium_without_pth_asks_for_it(run):
    a = run(*very_high(calcium=10.8, pth=None))
    assert "hypercalcaemia-pth-unknown" in ids(a)
    assert {"teriparatide", "abaloparatide"} <= blocked(a)


def test_high_calcium_on_teriparatide_is_first_the_drugs_effect(run):
    a = run(*very_high(statement(TERIPARATIDE, day(100)), calcium=10.8, pth=9))
    found = {f.id for f in a.findings}
    assert "hypercalcaemia-on-pth-analogue" in found
    assert not {"hypercalcaemia-pth-independent", "hyperparathyroidism"} & found
    f = next(f for f in a.findings if f.id == "hypercalcaemia-on-pth-analogue")
    assert "at least 16 hours after a dose" in f.action


# -- found in review ---------------------------------------------------------------------------------
def test_an_ionized_calcium_does_not_hide_pth_mediated_hypercalcaemia(run):
    """PTH 95 with total calcium 10.1 (high-normal on the total scale) blocks the PTH analogues; an
    ionized calcium of 1.30 mmol/L (5.2 mg/dL, normal) must not lift that by being compared with 10.0."""
    a = run(*very_high(calcium=10.1, pth=95))
    assert {"teriparatide", "abaloparatide"} <= blocked(a)
    a = run(*very_high(obs("1994-3", 1.30, "mmol/L", when=day(30)), calcium=10.1, pth=95))
    assert {"teriparatide", "abaloparatide"} <= blocked(a)


def test_a_reported_corrected_calcium_never_lowers_the_measured_one(knowledge):
    """Total 10.6 (high) with albumin 4.8 and a lab-corrected 9.96: the high total is the one read."""
    f = facts_of(knowledge, *high(obs("29265-6", 9.96, when=day(30)), obs("1751-7", 4.8, "g/dL", when=day(30)),
                                  calcium=10.6))
    assert Evaluator(f, knowledge).lab("calcium").value == 10.6
    f = facts_of(knowledge, *high(obs("29265-6", 10.9, when=day(30)), calcium=10.6))  # a correction upwards
    assert Evaluator(f, knowledge).lab("calcium").value == 10.9


@pytest.mark.parametrize("sex", ["unknown", "other"])
def test_a_race_coded_egfr_is_kept_when_creatinine_cannot_be_computed(knowledge, sex):
    """eGFR 20 coded among blacks with a creatinine of 2.5 and sex not recorded as female or male:
    CKD-EPI cannot run, so the recorded eGFR is read and alendronate stays contraindicated."""
    f = facts_of(knowledge, obs("48643-1", 20, "mL/min/{1.73_m2}", when=day(20)), obs("2160-0", 2.5, when=day(20)),
                 sex=sex)
    assert Evaluator(f, knowledge).lab("kidney_function").value == 20
