"""Treatment, contraindications, therapy management and monitoring (clinical rules §3-§4)."""
from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.advice import Advice, Evaluator, advise
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import interpret

from .test_interpretation import AS_OF, LOINC, PID, RXNORM, UCUM, born, condition, day, fracture, frax, med, \
    patient, t, z
from .fhir_builders import lines_of, summary_of

_ids = itertools.count(1)
MONTH = 30.4375

ALENDRONATE, ZOLEDRONIC, DENOSUMAB, TERIPARATIDE = "46041", "77655", "993449", "32915"  # teriparatide: RxNorm IN 32915 (110634 was in no source)
ALL_DRUGS = ["romosozumab", "teriparatide", "abaloparatide", "alendronate", "risedronate", "ibandronate",
             "zoledronic_acid", "denosumab"]

LAB_CODES = {"calcium": ("17861-6", "mg/dL"), "phosphate": ("2777-1", "mg/dL"), "vitamin_d": ("62292-8", "ng/mL"),
             "pth": ("2731-8", "pg/mL"), "creatinine": ("2160-0", "mg/dL"), "egfr": ("98979-8", "mL/min/{1.73_m2}"),
             "tsh": ("3016-3", "mIU/L"), "albumin": ("1751-7", "g/dL"), "alp": ("6768-6", "U/L")}
RECENT = {"calcium": 9.4, "phosphate": 3.5, "vitamin_d": 34, "pth": 40, "creatinine": 0.8, "egfr": 68, "tsh": 1.8}


# -- builders ------------------------------------------------------------------------------------
def months_ago(months: float) -> date:
    return AS_OF - timedelta(days=round(months * MONTH))


def lab(analyte: str, value: float, when: date | None = None, *, unit: str | None = None,
        low: float | None = None, high: float | None = None, flag: str | None = None) -> dict[str, Any]:
    code, default_unit = LAB_CODES[analyte]
    u = unit or default_unit
    r: dict[str, Any] = {"resourceType": "Observation", "id": f"l{next(_ids)}", "status": "final",
                         "code": {"coding": [{"system": LOINC, "code": code}]},
                         "subject": {"reference": f"Patient/{PID}"},
                         "effectiveDateTime": (when or day(30)).isoformat(),
                         "valueQuantity": {"value": value, "unit": u, "system": UCUM, "code": u}}
    if low is not None or high is not None:
        rr: dict[str, Any] = {}
        if low is not None:
            rr["low"] = {"value": low, "unit": u, "system": UCUM, "code": u}
        if high is not None:
            rr["high"] = {"value": high, "unit": u, "system": UCUM, "code": u}
        r["referenceRange"] = [rr]
    if flag:
        r["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                            "code": flag}]}]
    return r


def labs(when: date | None = None, **override: Any) -> list[dict[str, Any]]:
    """The scenarios' "recent labs"; override a value, or drop one with None."""
    values = {**RECENT, **override}
    return [lab(a, v, when) for a, v in values.items() if v is not None]


def statement(code: str, when: date, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationStatement", "id": f"s{next(_ids)}", "status": status,
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
            "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": when.isoformat()}


def build(knowledge, *resources: dict[str, Any], sex: str = "female", age: int = 65):
    facts = FactBuilder(knowledge).build(patient(sex, born(age)), list(resources), AS_OF)
    interp = interpret(facts, knowledge)
    return interp, facts


@pytest.fixture()
def run(knowledge):
    def _run(*resources: dict[str, Any], sex: str = "female", age: int = 65) -> Advice:
        interp, facts = build(knowledge, *resources, sex=sex, age=age)
        return advise(interp, facts, knowledge)
    return _run


def ids(a: Advice) -> set[str]:
    return {f.id for f in a.findings if f.kind == "contraindication"}


def blocked(a: Advice) -> set[str]:
    return {d for f in a.findings if f.kind == "contraindication" for d in f.blocks}


def high(*extra: dict[str, Any], **lab_override: Any) -> list[dict[str, Any]]:
    """Osteoporosis, high (not very high) risk: T −2.6, recent labs."""
    return [t("spine", -2.6), *labs(**lab_override), *extra]


def very_high(*extra: dict[str, Any], **lab_override: Any) -> list[dict[str, Any]]:
    return [t("spine", -3.5), *labs(**lab_override), *extra]


def kinds(a: Advice) -> list[str]:
    return [m.kind for m in a.management]


def loincs(a: Advice) -> list[str]:
    return [o.loinc for o in a.orders]


# -- baseline --------------------------------------------------------------------------------------
def test_recent_normal_labs_raise_no_contraindication(run):
    a = run(*high())
    assert ids(a) == set()
    assert [f for f in a.findings if f.kind == "secondary_cause"] == []


# -- eGFR ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("egfr, below35, below30", [
    (68, False, False), (35.1, False, False), (35, False, False), (34.9, True, False),
    (30, True, False), (29.9, True, True), (25, True, True)])
def test_egfr_boundaries(run, egfr, below35, below30):
    a = run(*high(egfr=egfr))
    assert ("egfr-below-35" in ids(a)) is below35
    assert ("egfr-below-30" in ids(a)) is below30
    plan = a.treatment
    assert plan is not None
    for drug in ("alendronate", "zoledronic_acid"):
        assert (drug in plan.offered) is (not below35)
        assert (drug in plan.not_offered) is below35
    assert ("risedronate" in plan.offered) is (not below30)
    assert ("ibandronate" in blocked(a)) is below30
    # denosumab: offered only once a bisphosphonate is blocked; never blocked by eGFR
    assert ("denosumab" in plan.offered) is below35
    assert ("denosumab" in plan.warnings) is below30
    if below30:
        # and, with no ionized calcium recorded, the request for one (rules §6.4)
        assert [f.id for f in plan.warnings["denosumab"]] == ["egfr-below-30", "ionized-calcium-needed"]
        assert plan.offered == ["denosumab"]


def test_egfr_below_30_evidence_names_the_value(run):
    a = run(*high(egfr=29.9))
    f = next(f for f in a.findings if f.id == "egfr-below-30" and f.kind == "contraindication")
    assert any("29.9" in e for e in f.evidence)
    assert "denosumab" in f.warns and "denosumab" not in f.blocks


def test_ckd_stage_4_without_egfr_counts_as_both(run):
    a = run(*high(condition("N18.4"), egfr=None))
    assert {"egfr-below-35", "egfr-below-30"} <= ids(a)
    assert a.treatment.offered == ["denosumab"]
    assert "denosumab" in a.treatment.warnings
    assert {"alendronate", "zoledronic_acid", "risedronate", "ibandronate"} <= blocked(a)


def test_resolved_ckd_condition_does_not_count(run):
    a = run(*high(condition("N18.4", clinical="resolved"), egfr=None))
    assert not {"egfr-below-35", "egfr-below-30"} & ids(a)


# -- calcium ---------------------------------------------------------------------------------------
BISPHOS_AND_DMAB = {"alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab"}


@pytest.mark.parametrize("value, low", [(8.4, True), (8.5, False), (8.6, False)])
def test_calcium_default_range_boundary(run, value, low):
    a = run(*high(calcium=value))
    assert ("hypocalcaemia" in ids(a)) is low
    if low:
        assert BISPHOS_AND_DMAB <= blocked(a)
        assert a.treatment.offered == []
        assert set(a.treatment.not_offered) == {"alendronate", "risedronate", "zoledronic_acid", "denosumab"}
    else:
        assert a.treatment.offered == ["alendronate", "risedronate", "zoledronic_acid"]


@pytest.mark.parametrize("value, range_low, fires", [(8.6, 8.8, True), (8.8, 8.8, False), (8.4, 8.0, False)])
def test_calcium_reference_range_overrides_default(run, value, range_low, fires):
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", value, low=range_low, high=10.6))
    assert ("hypocalcaemia" in ids(a)) is fires


def test_calcium_interpretation_low_flag_counts(run):
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", 9.0, flag="L"))
    assert "hypocalcaemia" in ids(a)
    assert BISPHOS_AND_DMAB <= blocked(a)


def test_calcium_interpretation_normal_flag_overrides_value(run):
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", 8.4, flag="N"))
    assert "hypocalcaemia" not in ids(a)


def test_albumin_corrected_calcium_is_computed(run, knowledge):
    res = [t("spine", -2.6), *labs(calcium=8.3), lab("albumin", 3.0)]
    interp, facts = build(knowledge, *res)
    ca = Evaluator(facts, knowledge).calcium
    assert ca.value == pytest.approx(9.1)
    assert "corrected" in ca.label
    a = advise(interp, facts, knowledge)
    assert "hypocalcaemia" not in ids(a)
    assert "alendronate" in a.treatment.offered


def test_albumin_too_far_from_calcium_is_not_paired(run):
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", 8.3, day(30)), lab("albumin", 3.0, day(60)))
    assert "hypocalcaemia" in ids(a)


def test_hypocalcaemia_condition_counts(run):
    a = run(*high(condition("E83.51")))
    assert "hypocalcaemia" in ids(a)


# -- vitamin D -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, unit, deficient", [
    (19.9, "ng/mL", True), (20, "ng/mL", False), (49, "nmol/L", True), (50, "nmol/L", False)])
def test_vitamin_d_boundary_and_units(run, value, unit, deficient):
    a = run(t("spine", -3.5), *labs(vitamin_d=None), lab("vitamin_d", value, unit=unit))
    assert ("vitamin-d-deficiency" in ids(a)) is deficient
    for drug in ("zoledronic_acid", "denosumab"):
        assert (drug in a.treatment.offered) is (not deficient)
    assert {"romosozumab", "teriparatide", "abaloparatide"} <= set(a.treatment.offered)
    secondary = {f.id: f for f in a.findings if f.kind == "secondary_cause"}
    assert ("vitamin-d-deficiency" in secondary) is deficient
    if deficient:
        assert secondary["vitamin-d-deficiency"].suggest == "cholecalciferol"


def test_vitamin_d_below_12_asks_for_osteomalacia_check(run):
    a = run(*high(vitamin_d=11.9))
    assert "osteomalacia-check" in {f.id for f in a.findings if f.kind == "secondary_cause"}
    a = run(*high(vitamin_d=12))
    assert "osteomalacia-check" not in {f.id for f in a.findings}


def test_vitamin_d_deficiency_does_not_block_oral_bisphosphonates(run):
    a = run(*high(vitamin_d=15))
    assert a.treatment.offered[:2] == ["alendronate", "risedronate"]
    assert "zoledronic_acid" in a.treatment.not_offered


# -- hyperparathyroidism ---------------------------------------------------------------------------
@pytest.mark.parametrize("calcium, pth, fires", [
    (10.3, 40, True), (10.2, 40, False), (10.0, 88, True), (9.4, 88, False), (10.0, 65, False), (10.9, 88, True)])
def test_hyperparathyroidism_blocks_pth_analogues(run, calcium, pth, fires):
    a = run(*very_high(calcium=calcium, pth=pth))
    assert ("hyperparathyroidism" in ids(a)) is fires
    for drug in ("teriparatide", "abaloparatide"):
        assert (drug in a.treatment.offered) is (not fires)
        assert (drug in a.treatment.not_offered) is fires
    assert "romosozumab" in a.treatment.offered


# -- Paget, radiation, ALP -------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [
    [condition("M88.0")], [condition("Z92.3")], [lab("alp", 130)]], ids=["paget", "radiation", "alp"])
def test_paget_radiation_alp_block_pth_analogues(run, extra):
    a = run(*very_high(*extra))
    assert "paget-radiation-alp" in ids(a)
    assert {"teriparatide", "abaloparatide"} <= set(a.treatment.not_offered)
    assert a.treatment.offered == ["romosozumab", "zoledronic_acid", "denosumab"]
    assert a.treatment.recommended == "romosozumab"


def test_alp_at_upper_limit_does_not_block(run):
    a = run(*very_high(lab("alp", 120)))
    assert "paget-radiation-alp" not in ids(a)


# -- romosozumab -----------------------------------------------------------------------------------
@pytest.mark.parametrize("code, months, fires", [
    ("I21.9", 11, True), ("I21.9", 13, False), ("I63.9", 6, True), ("I63.9", 11.9, True), ("I63.9", 12.5, False)])
def test_mi_or_stroke_in_last_12_months_blocks_romosozumab(run, code, months, fires):
    a = run(*very_high(condition(code, onset=months_ago(months))))
    assert ("mi-stroke-12-months" in ids(a)) is fires
    assert ("romosozumab" in a.treatment.offered) is (not fires)
    if fires:
        assert a.treatment.recommended == "teriparatide"
        assert [f.id for f in a.treatment.not_offered["romosozumab"]] == ["mi-stroke-12-months"]


def test_mi_after_request_date_does_not_count(run):
    a = run(*very_high(condition("I21.9", onset=AS_OF + timedelta(days=10))))
    assert "mi-stroke-12-months" not in ids(a)


def test_male_sex_blocks_romosozumab(run):
    a = run(*very_high(), sex="male", age=70)
    assert "male-sex" in ids(a)
    assert "romosozumab" not in a.treatment.offered
    assert a.treatment.recommended == "teriparatide"
    a = run(*very_high(), sex="female", age=70)
    assert "male-sex" not in ids(a)


# -- oesophagus ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["K22.2", "K22.0"])
def test_oesophageal_disorder_blocks_oral_bisphosphonates_only(run, code):
    a = run(*high(condition(code)))
    assert "oesophageal-disorder" in ids(a)
    assert blocked(a) == {"alendronate", "risedronate", "ibandronate"}
    assert a.treatment.offered == ["zoledronic_acid", "denosumab"]
    assert a.treatment.recommended == "zoledronic_acid"


# -- treatment plan --------------------------------------------------------------------------------
def test_very_high_risk_woman_plan(run):
    a = run(*very_high())
    p = a.treatment
    assert p.level == "very_high"
    assert p.offered == ["romosozumab", "teriparatide", "abaloparatide", "zoledronic_acid", "denosumab"]
    assert p.recommended == "romosozumab"
    assert p.not_offered == {} and p.warnings == {}
    assert "ACP-2023" in p.note and "ACP-2023" in p.guidelines
    assert "alendronate" not in p.offered


def test_high_risk_plan_bisphosphonate_first(run):
    p = run(*high()).treatment
    assert p.level == "high"
    assert p.offered == ["alendronate", "risedronate", "zoledronic_acid"]
    assert p.recommended == "alendronate"
    assert "denosumab" not in p.offered


def test_high_risk_only_iv_blocked_offers_denosumab_alternative(run):
    p = run(*high(egfr=34)).treatment
    assert p.offered == ["risedronate", "denosumab"]
    assert p.recommended == "risedronate"


def test_nothing_offered_when_everything_is_blocked(run):
    # man (romosozumab), Paget (PTH analogues), low calcium (zoledronic acid, denosumab)
    a = run(*very_high(condition("M88.0"), calcium=8.0), sex="male", age=70)
    assert a.treatment is not None
    assert a.treatment.offered == []
    assert a.treatment.recommended is None
    assert set(a.treatment.not_offered) == {"romosozumab", "teriparatide", "abaloparatide", "zoledronic_acid",
                                            "denosumab"}


def test_no_plan_when_already_treated(run):
    a = run(*high(med(ALENDRONATE, start=day(200))))
    assert a.treatment is None


def test_no_plan_for_low_bone_mass_without_frax(run):
    a = run(t("spine", -1.8), *labs())
    assert a.interp.diagnosis == "low_bone_mass"
    assert a.treatment is None


def test_no_plan_for_normal(run):
    a = run(t("spine", -0.5), *labs())
    assert a.treatment is None
    assert a.supportive == [] and a.orders == []


def test_no_plan_for_woman_45_by_z_score(run):
    a = run(t("spine", -2.8), z("spine", -1.2), *labs(), age=45)
    assert a.interp.method == "z_score"
    assert a.treatment is None


@pytest.mark.parametrize("hip, planned", [(3.0, True), (2.9, False)])
def test_low_bone_mass_with_frax_hip_3_percent_gets_high_plan(run, hip, planned):
    a = run(t("spine", -1.8), frax("hip", hip), *labs())
    if planned:
        assert a.treatment is not None and a.treatment.level == "high"
        assert a.treatment.recommended == "alendronate"
    else:
        assert a.treatment is None


def test_plan_lists_missing_calcium_and_vitamin_d_to_check(run):
    a = run(t("spine", -2.6), *labs(day(400)))
    assert a.treatment.labs_to_check
    joined = " ".join(a.treatment.labs_to_check)
    assert "Calcium" in joined and "Hydroxyvitamin D" in joined
    assert run(*high()).treatment.labs_to_check == []


def test_oral_bisphosphonate_instructions_when_offered(run):
    assert any("empty stomach" in s for s in run(*high()).supportive)
    assert not any("empty stomach" in s for s in run(*high(condition("K22.2"))).supportive)


# -- management: denosumab -------------------------------------------------------------------------
def test_denosumab_overdue_after_7_months(run):
    a = run(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(7.1)))
    m = next(m for m in a.management if m.kind == "denosumab-overdue")
    assert m.indicator == "critical"
    assert m.suggest == ["zoledronic_acid", "alendronate"]
    assert m.continue_drug == "denosumab"
    assert "denosumab-due" not in kinds(a)


def test_denosumab_overdue_suggestions_skip_blocked_drugs(run):
    a = run(t("spine", -2.6), *labs(egfr=32), statement(DENOSUMAB, months_ago(7.5)))
    m = next(m for m in a.management if m.kind == "denosumab-overdue")
    assert "zoledronic_acid" not in m.suggest and "alendronate" not in m.suggest


@pytest.mark.parametrize("months, indicator, dose_order", [(6.5, "warning", True), (6.9, "warning", True),
                                                          (3, "info", False)])
def test_denosumab_due(run, months, indicator, dose_order):
    """Rules §6.1: covered (under 6 months) is info with "continue"; due (6 to 7 months) is a warning whose
    "continue" carries the draft order for the dose, with the follow-on bisphosphonates beside it."""
    a = run(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(months)))
    assert kinds(a) == ["denosumab-due"]
    m = a.management[0]
    assert m.indicator == indicator
    assert m.continue_drug == "denosumab"
    assert m.dose_order is dose_order
    assert m.suggest == (["zoledronic_acid", "alendronate"] if dose_order else [])


def test_denosumab_given_5_months_ago_still_covers(run):
    """A completed statement of one denosumab dose 5 months ago: the dose covers 6 months (rules §6.1)."""
    a = run(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(5), status="completed"))
    assert kinds(a) == ["denosumab-due"] and a.management[0].indicator == "info"
    assert a.treatment is None


def test_denosumab_stopped_without_bisphosphonate_is_stopping(run):
    a = run(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(5), status="stopped"))
    m = next(m for m in a.management if m.kind == "denosumab-stopping")
    assert m.indicator == "warning"
    assert m.suggest == ["zoledronic_acid", "alendronate"]
    assert m.continue_drug is None
    assert a.treatment is None  # the denosumab card carries the follow-on, not an "untreated" card


def test_denosumab_followed_by_zoledronic_acid_in_time_is_fine(run):
    given = {"resourceType": "MedicationAdministration", "id": "za1", "status": "completed",
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": ZOLEDRONIC}]},
             "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": months_ago(2).isoformat()}
    a = run(t("spine", -2.6), *labs(), statement(DENOSUMAB, months_ago(8), status="completed"), given)
    assert not [k for k in kinds(a) if k.startswith("denosumab")]


# -- management: bisphosphonate duration -----------------------------------------------------------
def _yearly_infusions(n: int) -> list[dict[str, Any]]:
    """Zoledronic acid given yearly, n times, the last 6 months ago."""
    return [{"resourceType": "MedicationAdministration", "id": f"za{i}", "status": "completed",
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": ZOLEDRONIC}]},
             "subject": {"reference": f"Patient/{PID}"},
             "effectiveDateTime": months_ago(6 + 12 * i).isoformat()} for i in range(n)]


@pytest.mark.parametrize("drug, years, t_score, kind", [
    (ALENDRONATE, 5.1, -2.0, "drug-holiday"), (ALENDRONATE, 5.1, -2.6, "continue-bisphosphonate"),
    (ALENDRONATE, 4.9, -2.0, None), (ZOLEDRONIC, 3, -2.0, "drug-holiday"), (ZOLEDRONIC, 2, -2.0, None),
    (ZOLEDRONIC, 3, -2.5, "continue-bisphosphonate")])
def test_bisphosphonate_duration(run, drug, years, t_score, kind):
    """Rules §6.1 (ASBMR 2016): ≥ 5 years oral or 3 yearly zoledronic acid doses; a holiday only with hip
    T-scores above −2.5 (the latest DXA on therapy)."""
    records = _yearly_infusions(years) if drug == ZOLEDRONIC else \
        [med(drug, start=AS_OF - timedelta(days=round(years * 365.25)))]
    a = run(t("hip", t_score), t("neck", t_score + 0.1), *labs(), *records)
    got = [k for k in kinds(a) if k in ("drug-holiday", "continue-bisphosphonate")]
    assert got == ([kind] if kind else [])
    if kind == "continue-bisphosphonate":
        assert a.management[0].continue_drug in ("alendronate", "zoledronic_acid")
        assert a.management[0].suggest == []
    if kind == "drug-holiday":
        assert "2-4 years" in " ".join(lines_of(a.management[0]))
    assert a.treatment is None


def test_completed_bisphosphonate_gets_no_holiday_advice(run):
    a = run(t("spine", -2.0), *labs(), med(ALENDRONATE, start=day(2500), status="completed", end=day(300)))
    assert not {"drug-holiday", "continue-bisphosphonate"} & set(kinds(a))


# -- management: anabolic --------------------------------------------------------------------------
@pytest.mark.parametrize("months, done", [(24.5, True), (23.5, False)])
def test_teriparatide_course_complete(run, months, done):
    a = run(t("spine", -2.6), *labs(), med(TERIPARATIDE, start=months_ago(months)))
    assert ("anabolic-complete" in kinds(a)) is done
    if done:
        m = next(m for m in a.management if m.kind == "anabolic-complete")
        assert m.suggest and set(m.suggest) <= {"zoledronic_acid", "denosumab", "alendronate"}
        assert "teriparatide" not in m.suggest


# -- management: fracture on therapy ---------------------------------------------------------------
def test_fracture_on_alendronate_suggests_anabolic_never_alendronate(run):
    a = run(t("spine", -2.6), *labs(), med(ALENDRONATE, start=day(900)), fracture("M80.031A", onset=day(500)))
    m = next(m for m in a.management if m.kind == "fracture-on-therapy")
    assert m.indicator == "warning"
    assert set(m.suggest) == {"teriparatide", "abaloparatide", "romosozumab"}
    assert "alendronate" not in m.suggest
    assert a.treatment is None


def test_fracture_before_therapy_is_not_treatment_failure(run):
    a = run(t("spine", -2.6), *labs(), med(ALENDRONATE, start=day(400)), fracture("M80.031A", onset=day(500)))
    assert "fracture-on-therapy" not in kinds(a)


# -- monitoring ------------------------------------------------------------------------------------
WORKUP = ["17861-6", "2777-1", "62292-8", "2731-8", "2160-0", "3016-3"]


def test_old_labs_are_ordered(run):
    a = run(t("spine", -2.6), *labs(day(400)))
    assert [c for c in loincs(a) if c in WORKUP] == WORKUP


def test_no_labs_at_all_are_ordered(run):
    a = run(t("spine", -2.6))
    assert [c for c in loincs(a) if c in WORKUP] == WORKUP


def test_recent_labs_are_not_ordered(run):
    a = run(t("spine", -2.6), *labs())
    assert not set(loincs(a)) & set(WORKUP)


def test_lab_just_inside_12_months_is_recent(run):
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", 9.4, months_ago(11.9)))
    assert "17861-6" not in loincs(a)
    a = run(t("spine", -2.6), *labs(calcium=None), lab("calcium", 9.4, months_ago(12.2)))
    assert "17861-6" in loincs(a)


def test_recent_egfr_alone_satisfies_creatinine(run):
    a = run(t("spine", -2.6), *labs(day(400), egfr=None), lab("egfr", 68))
    assert "2160-0" not in loincs(a)
    assert "17861-6" in loincs(a)


@pytest.mark.parametrize("score, sex, age, extra, vfa", [
    (-2.6, "female", 60, [], True),
    (-2.5, "female", 60, [], True),
    (-1.5, "female", 70, [], True),
    (-1.5, "female", 69, [], False),
    (-1.5, "male", 80, [], True),
    (-1.5, "male", 79, [], False),
    (-1.5, "female", 60, [condition("Z79.52")], True),
    (-1.5, "female", 60, [condition("Z79.52", clinical="resolved")], False),
    (-0.9, "female", 75, [], False),
])
def test_vertebral_fracture_assessment(run, score, sex, age, extra, vfa):
    a = run(t("spine", score), *labs(), *extra, sex=sex, age=age)
    assert ("83014-1" in loincs(a)) is vfa


def test_repeat_dxa_after_starting_therapy(run):
    a = run(t("spine", -2.6, day(420)), *labs(), med(ALENDRONATE, start=months_ago(13)))
    assert "38268-9" in loincs(a)


def test_no_repeat_dxa_within_12_months_of_start(run):
    a = run(t("spine", -2.6, day(360)), *labs(), med(ALENDRONATE, start=months_ago(11)))
    assert "38268-9" not in loincs(a)


def test_no_repeat_dxa_when_dxa_after_start(run):
    a = run(t("spine", -2.6, day(100)), *labs(), med(ALENDRONATE, start=months_ago(13)))
    assert "38268-9" not in loincs(a)


def test_no_orders_for_normal_bone_density(run):
    a = run(t("spine", -0.5), *labs(day(400)))
    assert a.orders == []
