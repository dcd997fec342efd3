"""Order checks for the patient rules (clinical rules §6.5): the pregnancy caution, oncology care, AFF and
ONJ, romosozumab after an undated MI."""
from __future__ import annotations

from cds_service.clinical.advice import findings
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import interpret
from cds_service.clinical.orders import check_orders, read_drafts
from tests.orders.test_orders_http import ago, bundle, condition, draft, statement
from tests.orders.test_orders_unit import AS_OF, good_labs, kinds, tscore


def run(knowledge, drafts, extra=(), birth="1952-03-01"):
    pat = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": birth}
    fb = FactBuilder(knowledge)
    facts = fb.build(pat, [tscore()] + good_labs() + list(extra), AS_OF)
    orders = read_drafts(bundle(*drafts), None, fb, knowledge)
    return check_orders(orders, facts, interpret(facts, knowledge), findings(facts, knowledge), knowledge)


def test_a_woman_under_50_ordering_denosumab_is_asked_to_exclude_pregnancy(knowledge):
    birth = AS_OF.replace(year=AS_OF.year - 42).isoformat()
    issues = run(knowledge, [draft("d", "denosumab")], birth=birth)
    assert kinds(issues) == [("caution", "warning", "denosumab")]
    assert "Exclude pregnancy" in issues[0].lines[0]


def test_no_pregnancy_caution_at_50_or_with_surgical_menopause(knowledge):
    birth50 = AS_OF.replace(year=AS_OF.year - 50).isoformat()
    assert run(knowledge, [draft("d", "denosumab")], birth=birth50) == []
    birth42 = AS_OF.replace(year=AS_OF.year - 42).isoformat()
    ovaries = condition("c", "Z90.722", "Acquired absence of ovaries, bilateral", ago(months=30), pid="p1")
    assert run(knowledge, [draft("d", "denosumab")], [ovaries], birth=birth42) == []


def test_prolia_ordered_with_bone_metastases_is_critical(knowledge):
    mets = condition("c", "C79.51", "Secondary malignant neoplasm of bone", ago(months=5), pid="p1")
    issues = run(knowledge, [draft("d", "denosumab"), draft("t", "teriparatide")], [mets])
    assert kinds(issues) == [("contraindication", "critical", "denosumab"),
                             ("contraindication", "critical", "teriparatide")]
    assert all("oncology care leads" in " ".join(i.lines) for i in issues)


def test_alendronate_ordered_after_an_atypical_femoral_fracture_on_it_is_critical(knowledge):
    past = statement("s", "alendronate", pid="p1", start=ago(months=70), end=ago(months=6), status="completed")
    aff = condition("c", "M84.751A", "Atypical femoral fracture, right leg", ago(months=2), pid="p1")
    issues = run(knowledge, [draft("a", "alendronate"), draft("r", "romosozumab")], [past, aff])
    assert kinds(issues) == [("contraindication", "critical", "alendronate"),
                             ("contraindication", "critical", "romosozumab")]


def test_romosozumab_with_an_old_mi_history_code_is_critical(knowledge):
    old_mi = condition("c", "I25.2", "Old myocardial infarction", ago(months=40), pid="p1")
    issues = run(knowledge, [draft("r", "romosozumab")], [old_mi])
    assert kinds(issues) == [("contraindication", "critical", "romosozumab")]
