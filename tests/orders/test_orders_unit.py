"""read_drafts and check_orders as pure functions, on small fact builders."""
from __future__ import annotations

from datetime import date

import pytest

from cds_service.cards.orders import order_cards
from cds_service.clinical.advice import findings
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import interpret
from cds_service.clinical.orders import check_orders, read_drafts
from tests.orders.test_orders_http import ago, bundle, condition, draft, service_request, statement

AS_OF = date.today()
LOINC = "http://loinc.org"


def patient(gender: str = "female", pid: str = "p1") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": "1952-03-01"}


def lab(rid: str, loinc: str, value: float, unit: str, when: str | None = None, pid: str = "p1") -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": when or ago(days=10),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def tscore(value: float = -3.0, pid: str = "p1") -> dict:
    return {"resourceType": "Observation", "id": "dxa", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "38267-1"}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": ago(days=10),
            "valueQuantity": {"value": value, "unit": "{T-score}", "system": "http://unitsofmeasure.org",
                              "code": "{T-score}"}}


def good_labs(**over) -> list[dict]:
    values = {"calcium": ("17861-6", 9.4, "mg/dL"), "vitamin_d": ("62292-8", 34, "ng/mL"),
              "creatinine": ("2160-0", 0.8, "mg/dL"), "egfr": ("98979-8", 70, "mL/min/{1.73_m2}"),
              "pth": ("2731-8", 40, "pg/mL")}
    out = []
    for key, (code, v, unit) in values.items():
        v = over.get(key, v)
        if v is not None:
            out.append(lab(f"lab-{key}", code, v, unit))
    return out


def run(knowledge, drafts: list[dict], resources: list[dict] | None = None, gender: str = "female",
        selections: list[str] | None = None):
    fb = FactBuilder(knowledge)
    facts = fb.build(patient(gender), [tscore()] + (good_labs() if resources is None else resources), AS_OF)
    orders = read_drafts(bundle(*drafts), selections, fb, knowledge)
    issues = check_orders(orders, facts, interpret(facts, knowledge), findings(facts, knowledge), knowledge)
    return orders, issues


def kinds(issues) -> list[tuple[str, str, str]]:
    return sorted((i.kind, i.severity, i.order.drug) for i in issues)


# -- read_drafts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("concept,expected", [
    ({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "904431"}]}, "alendronate"),
    ({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "46041"}]}, "alendronate"),
    ({"text": "Evenity 105 mg/1.17 mL"}, "romosozumab"),
    ({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1046398",
                  "display": "denosumab 120 MG [Xgeva]"}]}, None),
    ({"text": "Zometa 4 mg"}, None),
    ({"text": "calcium carbonate 500 mg"}, None),
    ({"text": "lisinopril 10 mg"}, None),
])
def test_read_drafts_recognises_drugs_by_product_ingredient_or_name(knowledge, concept, expected):
    orders = read_drafts(bundle(draft("d", "alendronate", medicationCodeableConcept=concept)), None,
                         FactBuilder(knowledge), knowledge)
    assert [o.drug for o in orders] == ([expected] if expected else [])


@pytest.mark.parametrize("value", [None, "x", 3, [], {"entry": None}, {"entry": "x"}, {"entry": [None, "s", 1]},
                                   {"entry": [{"resource": None}, {"resource": []}, {"resource": {"id": "x"}}]}])
def test_read_drafts_tolerates_anything(knowledge, value):
    assert read_drafts(value, None, FactBuilder(knowledge), knowledge) == []


def test_read_drafts_selections_and_stopping(knowledge):
    b = bundle(draft("a", "alendronate"), service_request("s"), draft("d", "denosumab", status="stopped"),
               draft("r", "romosozumab"))
    fb = FactBuilder(knowledge)
    assert [o.drug for o in read_drafts(b, ["MedicationRequest/r"], fb, knowledge)] == ["romosozumab"]
    assert read_drafts(b, [], fb, knowledge) == []
    assert read_drafts(b, ["ServiceRequest/s"], fb, knowledge) == []
    allo = read_drafts(b, None, fb, knowledge)
    assert [(o.drug, o.stopping) for o in allo] == [("alendronate", False), ("denosumab", True), ("romosozumab", False)]
    assert allo[0].ref == "MedicationRequest/a"


# -- check_orders ---------------------------------------------------------------------------------
def test_safe_order_has_no_issue(knowledge):
    assert run(knowledge, [draft("r", "romosozumab")])[1] == []


@pytest.mark.parametrize("over,drug", [
    ({"egfr": 30}, "alendronate"), ({"egfr": 30}, "zoledronic_acid"), ({"egfr": 28}, "risedronate"),
    ({"calcium": 8.0}, "denosumab"), ({"vitamin_d": 15}, "zoledronic_acid"),
    ({"calcium": 10.9, "pth": 88}, "teriparatide"),
])
def test_lab_contraindications(knowledge, over, drug):
    _, issues = run(knowledge, [draft("x", drug)], good_labs(**over))
    crit = [i for i in issues if i.severity == "critical"]
    assert [(i.kind, i.order.drug) for i in crit] == [("contraindication", drug)]
    assert crit[0].remove and drug not in crit[0].replace_with
    blocked = {d for f in findings_of(knowledge, over) for d in f.blocks}
    assert not blocked & set(crit[0].replace_with)
    assert crit[0].sources


@pytest.mark.parametrize("over,drug", [
    ({"egfr": 40}, "alendronate"), ({"egfr": 32}, "risedronate"), ({"vitamin_d": 25}, "denosumab"),
    ({"egfr": 32}, "denosumab"),
])
def test_lab_values_just_inside_the_limits_are_safe(knowledge, over, drug):
    assert run(knowledge, [draft("x", drug)], good_labs(**over))[1] == []


def test_egfr_below_30_denosumab_caution_only(knowledge):
    _, issues = run(knowledge, [draft("x", "denosumab")], good_labs(egfr=25))
    assert kinds(issues) == [("caution", "warning", "denosumab")]


def test_male_and_recent_stroke_block_romosozumab(knowledge):
    assert kinds(run(knowledge, [draft("r", "romosozumab")], gender="male")[1]) == \
        [("contraindication", "critical", "romosozumab")]
    stroke = condition("c", "I63.9", "Cerebral infarction, unspecified", ago(months=3), pid="p1")
    assert kinds(run(knowledge, [draft("r", "romosozumab")], good_labs() + [stroke])[1]) == \
        [("contraindication", "critical", "romosozumab")]
    # an MI more than 12 months ago: romosozumab only with the cardiovascular caution (rules §6.5; was: no card)
    old_mi = condition("c", "I21.4", "NSTEMI", ago(months=20), pid="p1")
    issues = run(knowledge, [draft("r", "romosozumab")], good_labs() + [old_mi])[1]
    assert kinds(issues) == [("caution", "warning", "romosozumab")]
    assert "cardiovascular death" in " ".join(issues[0].lines)


def test_achalasia_blocks_oral_not_iv_bisphosphonate(knowledge):
    ach = condition("c", "K22.0", "Achalasia of cardia", ago(months=40), pid="p1")
    assert kinds(run(knowledge, [draft("a", "alendronate")], good_labs() + [ach])[1]) == \
        [("contraindication", "critical", "alendronate")]
    assert run(knowledge, [draft("z", "zoledronic_acid")], good_labs() + [ach])[1] == []


def test_duplicate_of_an_active_drug_and_two_antiresorptive_drafts(knowledge):
    active = {"resourceType": "MedicationRequest", "id": "old", "status": "active", "intent": "order",
              "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                        "code": "993452"}], "text": "Prolia"},
              "subject": {"reference": "Patient/p1"}, "authoredOn": ago(months=10)}
    _, issues = run(knowledge, [draft("d", "denosumab")], good_labs() + [active])
    assert kinds(issues) == [("duplicate", "warning", "denosumab")] and issues[0].remove
    _, issues = run(knowledge, [draft("a", "alendronate"), draft("z", "zoledronic_acid")])
    assert kinds(issues) == [("duplicate", "warning", "alendronate"), ("duplicate", "warning", "zoledronic_acid")]
    # the same drug twice in one bundle is not the antiresorptive pair check, and a stopped draft never pairs
    _, issues = run(knowledge, [draft("a", "alendronate"), draft("z", "zoledronic_acid", status="cancelled")])
    assert issues == []


def test_course_limits(knowledge):
    long = statement("t", "teriparatide", pid="p1", start=ago(months=30), end=ago(months=5))
    _, issues = run(knowledge, [draft("t2", "teriparatide")], good_labs() + [long])
    assert kinds(issues) == [("course-limit", "warning", "teriparatide")]
    doses = [statement(f"r{i}", "romosozumab", pid="p1", when=ago(months=13 - i)) for i in range(12)]
    _, issues = run(knowledge, [draft("r", "romosozumab")], good_labs() + doses)
    assert kinds(issues) == [("course-limit", "warning", "romosozumab")]


def test_denosumab_stop(knowledge):
    _, issues = run(knowledge, [draft("d", "denosumab", status="stopped")])
    assert kinds(issues) == [("denosumab-stop", "warning", "denosumab")]
    assert set(issues[0].create) == {"zoledronic_acid", "alendronate"}
    _, issues = run(knowledge, [draft("d", "denosumab", status="stopped"), draft("a", "alendronate")])
    assert issues == []


def test_missing_labs_lists_only_the_missing_ones(knowledge):
    _, issues = run(knowledge, [draft("r", "romosozumab")], good_labs(vitamin_d=None, creatinine=None, egfr=None))
    assert kinds(issues) == [("missing-labs", "warning", "romosozumab")]
    assert sorted(l["loinc"] for l in issues[0].lab_orders) == ["2160-0", "62292-8"]
    old = [lab("old-ca", "17861-6", 9.4, "mg/dL", ago(months=18))]
    _, issues = run(knowledge, [draft("r", "romosozumab")], old)
    assert sorted(l["loinc"] for l in issues[0].lab_orders) == ["17861-6", "2160-0", "62292-8"]


def test_cards_from_issues_name_sources_and_have_override_reasons(knowledge, response_validator):
    _, issues = run(knowledge, [draft("a", "alendronate"), draft("d", "denosumab", status="stopped"),
                                draft("r", "romosozumab")], [lab("old", "98979-8", 25, "mL/min/{1.73_m2}")])
    cards = order_cards(issues, "p1", knowledge)
    assert len(cards) == len(issues) >= 3
    assert not list(response_validator.iter_errors({"cards": cards}))
    for c in cards:
        assert "**Sources**" in c["detail"] and c["overrideReasons"]


def findings_of(knowledge, over):
    facts = FactBuilder(knowledge).build(patient(), [tscore()] + good_labs(**over), AS_OF)
    return findings(facts, knowledge)
