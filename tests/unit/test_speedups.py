"""The shortcuts taken for speed give the same answers as the long way round (see README, Benchmarks)."""
from __future__ import annotations

import gc
import uuid

from cds_service.cards import card, suggestion
from cds_service.clinical.facts import medications as facts_module
from cds_service.clinical.facts import model as facts_model
from cds_service.clinical.facts import FactBuilder
from cds_service.cli import GC_THRESHOLD, tune_gc
from cds_service.ids import new_id

from .fhir_builders import RXNORM
from .test_facts import med, patient
from .fhir_builders import AS_OF


def test_ids_are_version_7_uuids_in_creation_order():
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # time-ordered: audit rows append to their indexes
    for i in ids[:50]:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 7 and u.variant == uuid.RFC_4122


def test_card_and_suggestion_ids_are_version_7(knowledge):
    s = suggestion("Order something", [{"type": "create", "description": "x", "resource": {"resourceType": "X"}}])
    c = card(knowledge, topic="treatment", indicator="info", summary="s", detail="d", guidelines=["BHOF-2022"],
             suggestions=[s], selection_behavior="at-most-one")
    assert uuid.UUID(c["uuid"]).version == 7 and uuid.UUID(c["suggestions"][0]["uuid"]).version == 7


def test_cards_built_from_the_same_static_parts_do_not_share_them(knowledge):
    a = card(knowledge, topic="safety", indicator="warning", summary="a", detail="d", guidelines=["BHOF-2022", "AACE-2020"])
    b = card(knowledge, topic="safety", indicator="warning", summary="b", detail="d", guidelines=["BHOF-2022", "AACE-2020"])
    assert a["links"] == b["links"] and a["source"] == b["source"]
    a["links"].append({"label": "x", "url": "https://example.org", "type": "absolute"})
    a["source"]["topic"]["code"] = "changed"
    c = card(knowledge, topic="safety", indicator="warning", summary="c", detail="d", guidelines=["BHOF-2022", "AACE-2020"])
    assert c["links"] == b["links"] and c["source"]["topic"]["code"] == "safety"


def test_suggestions_leave_out_empty_fields_and_empty_actions():
    s = suggestion("Continue", [])
    assert "actions" not in s and set(s) == {"label", "uuid"}
    s = suggestion("Order", [{"type": "create", "description": "", "resource": {"resourceType": "X", "note": []}}],
                   recommended=False)
    assert s["actions"] == [{"type": "create", "resource": {"resourceType": "X", "note": []}}]
    assert s["isRecommended"] is False


def test_remembered_drug_matches_equal_fresh_ones(knowledge):
    concepts = [
        {"coding": [{"system": RXNORM, "code": "1115005"}]},
        {"coding": [{"system": RXNORM, "code": "1115005"}], "text": "ibandronate"},
        {"coding": [{"system": RXNORM, "code": "904419"}]},
        {"text": "Prolia 60 MG/ML injection"},
        {"text": "denosumab 120 mg"},
        {"text": "alendronate 70 mg weekly"},
        {"text": "lisinopril 10 mg"},
        {"coding": [{"system": "http://example.org/local", "code": "1115005"}]},
    ]
    memo = FactBuilder(knowledge)
    for _ in range(3):
        for concept in concepts:
            assert memo.match_drug(concept) == knowledge.match_drug(
                facts_model._codings(concept), facts_model._text_of(concept))
    assert len(memo._drug_memo) == len(concepts)


def test_a_malformed_code_does_not_change_later_answers(knowledge):
    """A number where RxNorm's code string belongs never matches by code; it must not be
    remembered as if it were that string (the memo is shared by every call in a worker)."""
    fb = FactBuilder(knowledge)
    good = {"coding": [{"system": RXNORM, "code": "46041"}]}
    assert FactBuilder(knowledge).match_drug(good) == "alendronate"
    assert fb.match_drug({"coding": [{"system": RXNORM, "code": 46041}]}) is None
    assert fb.match_drug(good) == "alendronate"
    assert fb.match_drug({"coding": [{"system": RXNORM, "code": 46041}]}) is None


def test_long_concept_texts_are_not_remembered(knowledge):
    fb = FactBuilder(knowledge)
    assert fb.match_drug({"text": "alendronate " + "x" * (facts_model.DRUG_MEMO_TEXT + 1)}) == "alendronate"
    assert fb._drug_memo == {}


def test_the_drug_memo_is_bounded(knowledge, monkeypatch):
    monkeypatch.setattr(facts_module, "DRUG_MEMO_SIZE", 10)
    fb = FactBuilder(knowledge)
    for n in range(25):
        fb.match_drug({"text": f"unknown drug {n}"})
        assert len(fb._drug_memo) <= 10
    facts = fb.build(patient(), [med(text="alendronate 70 mg", rid="m-alen")], AS_OF)
    assert [m.drug for m in facts.medications] == ["alendronate"]


def test_tune_gc_freezes_and_raises_the_threshold():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_icd_codes_match_the_longest_listed_prefix_as_a_scan_would(knowledge):
    """The ICD-10-CM index (lookups by code length) gives what a scan of every listed code for the
    longest one the code starts with would give."""
    from cds_service.knowledge.terminology import norm_icd
    icd = knowledge.system["icd10cm"]
    listed: dict[str, set[str]] = {}
    for name, vs in knowledge.valuesets.items():
        for c in vs.codes:
            if c.system == icd:
                listed.setdefault(norm_icd(c.code), set()).add(name)
    by_length = sorted(listed, key=len, reverse=True)
    probes = set()
    for p in list(listed)[::7]:  # a spread of the ~3,000 listed codes, each varied
        probes |= {p, p + "0", p + "XA", p[:-1], p[:3], "Z" + p}
    for code in sorted(probes):
        scan = next((listed[p] for p in by_length if code.startswith(p) and len(p) >= 3), set())
        fast = {h.valueset for h in knowledge.lookup(icd, code)}
        assert fast == scan, code
