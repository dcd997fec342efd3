"""The patient (clinical rules §6.5): deceased, surgical and premature menopause, bone malignancy and
oncology-strength antiresorptives, atypical femoral fracture and osteonecrosis of the jaw, romosozumab
after an older or undated MI or stroke, and the pregnancy caution."""
from __future__ import annotations

from datetime import timedelta

import pytest

from cds_service.cards.advice import advice_cards
from cds_service.clinical.advice import advise
from cds_service.clinical.facts import FactBuilder

from .test_advice import ALENDRONATE, DENOSUMAB, blocked, high, ids, kinds, med, months_ago, very_high
from .test_interpretation import AS_OF, ICD, SNOMED, born, condition, patient

XGEVA = "1046398"  # 1.7 ML denosumab 70 MG/ML Injection (120 mg)
ZOMETA = "1114085"  # 100 ML zoledronic acid 0.04 MG/ML Injection (4 mg)
ANTIRESORPTIVES = {"alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab"}


@pytest.fixture()
def cards(knowledge):
    def _cards(*resources, sex="female", age=65, pat=None):
        from cds_service.clinical.interpretation import interpret
        facts = FactBuilder(knowledge).build(pat or patient(sex, born(age)), list(resources), AS_OF)
        a = advise(interpret(facts, knowledge), facts, knowledge)
        return a, advice_cards(a, facts, knowledge)
    return _cards


def topic(cards, name):
    return [c for c in cards if c["source"]["topic"]["code"] == name]


# -- deceased -------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, deceased", [
    ({"deceasedBoolean": True}, True),
    ({"deceasedBoolean": False}, False),
    ({"deceasedDateTime": (AS_OF - timedelta(days=1)).isoformat()}, True),
    ({"deceasedDateTime": AS_OF.isoformat()}, True),
    ({"deceasedDateTime": (AS_OF + timedelta(days=1)).isoformat()}, False),  # not yet, on the evaluation date
    ({"deceasedDateTime": "not a date"}, False),
], ids=["boolean-true", "boolean-false", "yesterday", "today", "tomorrow", "unreadable"])
def test_deceased_is_read_from_boolean_or_date(knowledge, extra, deceased):
    pat = {**patient("female", born(70)), **extra}
    assert FactBuilder(knowledge).build(pat, [], AS_OF).patient.deceased is deceased


# -- postmenopausal from premature or surgical menopause ------------------------------------------
@pytest.mark.parametrize("code, system, post", [
    ("Z90.722", ICD, True), ("E28.310", ICD, True), ("E28.319", ICD, True), ("E89.40", ICD, True),
    ("E89.41", ICD, True), ("Z78.0", ICD, True), ("N95.1", ICD, True), ("76498008", SNOMED, True),
    ("Z90.710", ICD, False),  # hysterectomy alone (uterus and cervix absent) is not menopause
    ("Z90.721", ICD, False),  # one ovary absent
])
def test_surgical_and_premature_menopause_make_a_woman_under_50_postmenopausal(knowledge, code, system, post):
    from cds_service.clinical.interpretation import interpret
    from .test_interpretation import t
    facts = FactBuilder(knowledge).build(patient("female", born(44)), [t("spine", -2.7), condition(code, system)], AS_OF)
    interp = interpret(facts, knowledge)
    assert (interp.method == "t_score") is post
    assert (interp.diagnosis == "osteoporosis") is post


# -- pregnancy caution (said at order time: a premenopausal woman gets no treatment card) ----------
@pytest.mark.parametrize("age, extra, expected", [
    (49, [], True), (50, [], False), (45, [condition("Z90.722")], False), (45, [condition("Z90.722", clinical="resolved")], True),
], ids=["49", "50", "surgical-menopause", "resolved-record"])
def test_may_be_pregnant(knowledge, age, extra, expected):
    from cds_service.clinical.advice import may_be_pregnant
    facts = FactBuilder(knowledge).build(patient("female", born(age, AS_OF)), extra, AS_OF)
    assert may_be_pregnant(facts, knowledge) is expected
    facts = FactBuilder(knowledge).build(patient("male", born(age, AS_OF)), extra, AS_OF)
    assert may_be_pregnant(facts, knowledge) is False


# -- bone malignancy, oncology-strength antiresorptives ---------------------------------------------
@pytest.mark.parametrize("extra", [
    condition("C79.51"), condition("C79.52"), condition("C40.20"), condition("C41.2"), condition("C90.00"),
    med(XGEVA, months_ago(2)), med(ZOMETA, months_ago(2)),
], ids=["C79.51", "C79.52", "C40.20", "C41.2", "C90.00", "xgeva", "zometa"])
def test_bone_malignancy_or_oncology_dose_hands_bone_care_to_oncology(cards, extra):
    a, cs = cards(*very_high(extra))
    assert ids(a) & {"oncology-leads", "oncology-dose-antiresorptive"}
    assert ANTIRESORPTIVES | {"teriparatide", "abaloparatide"} <= blocked(a)
    assert a.treatment is not None and a.treatment.offered == []
    [treat] = topic(cs, "treatment")
    assert "oncology care leads" in treat["summary"] and treat["indicator"] == "warning"
    assert "suggestions" not in treat
    assert topic(cs, "safety") == [] or all("oncology" not in c["summary"] for c in topic(cs, "safety"))


def test_myeloma_in_remission_code_counts_but_an_unrelated_cancer_does_not(run_advice):
    assert "oncology-leads" in ids(run_advice(*high(condition("C90.01"))))
    assert "oncology-leads" not in ids(run_advice(*high(condition("C50.911"))))  # breast cancer, no bone metastases


def test_prolia_on_top_of_xgeva_is_stopped_not_continued(cards):
    a, cs = cards(*very_high(med(XGEVA, months_ago(3)), med(DENOSUMAB, months_ago(3))))
    assert a.treatment is None  # on an osteoporosis drug already
    safety = [c for c in topic(cs, "safety") if "oncology" in c["summary"].lower()]
    assert len(safety) == 1 and "Prolia with Xgeva is a duplicate" in safety[0]["detail"]
    assert not [c for c in cs if "Continue denosumab" in str(c.get("suggestions", ""))]


@pytest.fixture()
def run_advice(knowledge):
    from .test_advice import build

    def _run(*resources, sex="female", age=65):
        interp, facts = build(knowledge, *resources, sex=sex, age=age)
        return advise(interp, facts, knowledge)
    return _run


# -- atypical femoral fracture, osteonecrosis of the jaw -------------------------------------------
@pytest.mark.parametrize("code", ["M84.750A", "M84.751A", "M84.752D", "M87.180"])
def test_aff_or_onj_on_alendronate_is_critical_stop_and_never_continue(cards, code):
    start = months_ago(80)  # 6.6 years: without the complication this would be "continue" or a holiday
    a, cs = cards(*high(med(ALENDRONATE, start), condition(code, onset=months_ago(2))))
    assert "aff-onj-bisphosphonate" in ids(a)
    [safety] = [c for c in topic(cs, "safety") if c["indicator"] == "critical"]
    assert "Stop the bisphosphonate" in safety["detail"] and "not romosozumab" in safety["detail"]
    if code.startswith("M84"):
        assert "image the other femur" in safety["detail"]
    assert "continue-bisphosphonate" not in kinds(a) and "drug-holiday" not in kinds(a)
    assert not [c for c in cs if "Continue alendronate" in str(c.get("suggestions", ""))]


def test_aff_on_denosumab_is_never_an_abrupt_stop_and_never_continue(cards):
    a, cs = cards(*high(med(DENOSUMAB, months_ago(3)), condition("M84.751A", onset=months_ago(1))))
    assert "aff-onj-denosumab" in ids(a)
    [safety] = [c for c in topic(cs, "safety") if c["indicator"] == "critical"]
    assert "Do not stop denosumab abruptly" in safety["detail"]
    assert not [c for c in cs if "Continue denosumab" in str(c.get("suggestions", ""))]
    assert not [m for m in a.management if m.kind.startswith("denosumab")]


def test_aff_before_any_antiresorptive_is_not_an_antiresorptive_complication(run_advice):
    a = run_advice(*high(med(ALENDRONATE, months_ago(6)), condition("M84.750A", onset=months_ago(20))))
    assert "aff-onj-bisphosphonate" not in ids(a)


def test_aff_after_a_past_antiresorptive_is_critical_and_blocks_romosozumab(cards):
    past = med(ALENDRONATE, months_ago(90), status="completed")
    a, cs = cards(*very_high(past, condition("M84.750A", onset=months_ago(1))))
    assert "aff-onj-bisphosphonate" in ids(a)
    assert "romosozumab" in blocked(a) and set(a.treatment.offered) == {"teriparatide", "abaloparatide"}
    assert any(c["indicator"] == "critical" for c in topic(cs, "safety"))


def test_undated_aff_with_an_antiresorptive_counts(run_advice):
    a = run_advice(*high(med(ALENDRONATE, months_ago(30)), condition("M84.750A")))
    assert "aff-onj-bisphosphonate" in ids(a)


# -- romosozumab after an older or undated MI or stroke ---------------------------------------------
@pytest.mark.parametrize("code", ["I25.2", "Z86.73", "I69.351"])
def test_history_or_sequelae_codes_count_as_possibly_recent(run_advice, code):
    a = run_advice(*very_high(condition(code, onset=months_ago(40))))
    assert "mi-stroke-undated" in ids(a)
    assert "romosozumab" not in a.treatment.offered
    assert a.treatment.recommended == "teriparatide"


def test_mi_without_any_date_counts_as_possibly_recent(run_advice):
    a = run_advice(*very_high(condition("I21.4")))
    assert "mi-stroke-undated" in ids(a) and "romosozumab" not in a.treatment.offered


@pytest.mark.parametrize("months, offered_with_caution", [(11.9, False), (12.5, True), (40, True)])
def test_older_mi_offers_romosozumab_only_with_its_caution_and_never_first(cards, months, offered_with_caution):
    a, cs = cards(*very_high(condition("I21.4", onset=months_ago(months))))
    assert ("romosozumab" in a.treatment.offered) is offered_with_caution
    assert a.treatment.recommended == "teriparatide"
    if offered_with_caution:
        [treat] = topic(cs, "treatment")
        assert "cardiovascular death" in treat["detail"]
        romo = [s for s in treat["suggestions"] if "omosozumab" in s["label"]]
        assert romo and not romo[0].get("isRecommended")


def test_without_an_mi_romosozumab_is_still_first_for_very_high_risk(run_advice):
    a = run_advice(*very_high())
    assert a.treatment.recommended == "romosozumab"


def test_prolia_with_bone_metastases_alone_is_not_silently_stopped(cards):
    """Review finding: with C79.51 and Prolia (no oncology dose) the denosumab reminders vanished and
    nothing said to keep or hand it over. Oncology decides; denosumab is never stopped without a plan."""
    a, cs = cards(*very_high(condition("C79.51"), med(DENOSUMAB, months_ago(3))))
    assert "oncology-leads" in ids(a)
    assert any(m.kind.startswith("denosumab") for m in a.management)  # its dose reminder stays
    [card] = [c for c in topic(cs, "safety") if "oncology care leads" in c["detail"]]
    assert "never stopped without a plan" in card["detail"] and "stop or hold it" not in card["detail"]


def test_pth_independent_hypercalcaemia_blocks_starts_but_does_not_stop_alendronate(run_advice, cards):
    from .test_advice import lab
    a, cs = cards(*high(med(ALENDRONATE, months_ago(20)), calcium=11.6, pth=9))
    assert "hypercalcaemia-pth-independent" in ids(a)
    assert "stop or hold it" not in str(cs)


def test_subtrochanteric_fracture_on_alendronate_is_reviewed_never_continue(cards):
    """Review finding: S72.21XA on alendronate gave "Continue alendronate: fracture while on..." beside
    the atypical-femoral-fracture review."""
    a, cs = cards(*high(med(ALENDRONATE, months_ago(84)), condition("S72.21XA", onset=months_ago(2))))
    assert "atypical-femoral-fracture-review" in kinds(a)
    assert "continue-bisphosphonate" not in kinds(a) and "fracture-on-therapy" not in kinds(a)
    assert "Continue alendronate" not in str(cs)
