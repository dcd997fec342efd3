"""Every code Synthea's modules emit (terminology/sources/synthea, upstream commit 215056e8) falls in the
concept a clinician would put it in, or in none (issue 13). The table was read code by code; a code not in
it must match no value set, so a new value-set build that pulls in an unrelated Synthea code fails here."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cds_service.knowledge import load_knowledge

CSV = Path(__file__).resolve().parents[2] / "terminology" / "sources" / "synthea" / "synthea_module_codes_215056e8.csv"
SYSTEMS = {"SNOMED-CT": "snomed", "RxNorm": "rxnorm", "LOINC": "loinc"}

# (system, code) -> the value sets it falls in
EXPECTED = {
    ("loinc", "1751-7"): {"lab_albumin"},
    ("loinc", "17861-6"): {"lab_calcium_total"},
    ("loinc", "49765-1"): {"lab_calcium_total"},
    ("loinc", "2160-0"): {"lab_creatinine"},
    ("loinc", "38483-4"): {"lab_creatinine"},
    ("loinc", "33914-3"): {"lab_egfr"},
    ("loinc", "38265-5"): {"dxa"},
    ("rxnorm", "904419"): {"alendronate"},  # Alendronic acid 10 MG Oral Tablet
    ("rxnorm", "993452"): {"denosumab"},  # 1 ML denosumab 60 MG/ML Prefilled Syringe (Prolia strength)
    ("rxnorm", "1114085"): {"zoledronic_acid_oncology"},  # 100 ML zoledronic acid 0.04 MG/ML: 4 mg, Zometa
    ("rxnorm", "312615"): {"glucocorticoid"},  # predniSONE 20 MG Oral Tablet
    ("rxnorm", "312617"): {"glucocorticoid"},  # predniSONE 5 MG Oral Tablet
    ("snomed", "64859006"): {"osteoporosis"},
    ("snomed", "443165006"): {"osteoporosis", "fracture_osteoporotic"},  # Osteoporotic fracture of bone
    ("snomed", "359817006"): {"fracture_hip"},  # Closed fracture of hip
    ("snomed", "15724005"): {"fracture_vertebral"},
    ("snomed", "1734006"): {"fracture_vertebral"},
    ("snomed", "263102004"): {"fracture_wrist"},  # Fracture subluxation of wrist
    ("snomed", "65966004"): {"fracture_wrist"},  # Fracture of forearm
    ("snomed", "312681000"): {"dxa"},  # Bone density scan (procedure)
    ("snomed", "22298006"): {"myocardial_infarction"},
    ("snomed", "129574000"): {"myocardial_infarction"},
    ("snomed", "399211009"): {"myocardial_infarction", "mi_stroke_undated"},  # History of MI: possibly recent (§6.5)
    ("snomed", "401303003"): {"myocardial_infarction"},
    ("snomed", "401314000"): {"myocardial_infarction"},
    ("snomed", "230690007"): {"stroke"},
    ("snomed", "431857002"): {"ckd_severe"},  # CKD stage 4
    ("snomed", "46177005"): {"ckd_severe"},  # end-stage renal disease
    ("snomed", "190905008"): {"malabsorption"},  # cystic fibrosis
}

# relevant to bone health by name, in no value set: listed under "data not used" on the card
NOT_USED_MEDICATIONS = {"1737449"}  # Pamidronate Disodium 3 MG/ML Injection
NOT_USED_CONDITIONS = {"125605004", "16114001", "58150001", "33737001", "263172003", "313423004"}
# bone, ankle, clavicle, rib, mandible fractures; "At increased risk of osteoporosis"

# near misses that must stay out: topical hydrocortisone, statin calcium salts, CKD stages 1-3
MUST_NOT_MATCH = {("rxnorm", "106258"), ("rxnorm", "859419"), ("rxnorm", "861646"), ("snomed", "431855005"),
                  ("snomed", "431856006"), ("snomed", "433144002"), ("snomed", "278588009")}


def synthea_rows() -> list[dict[str, str]]:
    seen, rows = set(), []
    for r in csv.DictReader(CSV.open(encoding="utf-8")):
        key = (SYSTEMS.get(r["system"]), r["code"])
        if key[0] and key not in seen:
            seen.add(key)
            rows.append(r)
    return rows


@pytest.fixture(scope="module")
def k():
    return load_knowledge()


def test_the_table_names_only_codes_synthea_emits():
    emitted = {(SYSTEMS[r["system"]], r["code"]) for r in synthea_rows()}
    assert len(emitted) > 1000
    assert set(EXPECTED) <= emitted and MUST_NOT_MATCH <= emitted
    assert {("rxnorm", c) for c in NOT_USED_MEDICATIONS} <= emitted
    assert {("snomed", c) for c in NOT_USED_CONDITIONS} <= emitted


def test_every_synthea_code_falls_in_the_expected_value_sets_or_none(k):
    wrong = []
    for r in synthea_rows():
        key = (SYSTEMS[r["system"]], r["code"])
        got = {h.valueset for h in k.lookup(k.system[key[0]], r["code"])}
        if got != EXPECTED.get(key, set()):
            wrong.append(f"{key} {r['display'][:50]!r}: {sorted(got)} expected {sorted(EXPECTED.get(key, set()))}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("key", sorted(MUST_NOT_MATCH))
def test_near_misses_are_not_read_as_a_concept(k, key):
    display = next(r["display"] for r in synthea_rows() if (SYSTEMS[r["system"]], r["code"]) == key)
    coding = [{"system": k.system[key[0]], "code": key[1], "display": display}]
    assert k.lookup(k.system[key[0]], key[1]) == []
    assert k.match_drug(coding, display) is None
    assert k.match_condition(coding) == []


def test_synthea_drugs_by_code_and_by_display(k):
    rx = k.system["rxnorm"]
    for r in synthea_rows():
        key = (SYSTEMS[r["system"]], r["code"])
        if key[0] != "rxnorm" or key not in EXPECTED:
            continue
        (drug,) = EXPECTED[key]
        assert k.match_drug([{"system": rx, "code": r["code"]}], "") == drug
        assert k.match_drug([], r["display"]) == drug, r["display"]  # the name alone, as a text-only record


def test_relevant_synthea_codes_outside_the_value_sets_are_recognised_as_relevant(k):
    rows = {r["code"]: r for r in synthea_rows()}
    pattern, _ = k.unmatched_medication
    for code in NOT_USED_MEDICATIONS:
        assert k.match_drug([{"system": k.system["rxnorm"], "code": code}], rows[code]["display"]) is None
        assert pattern.search(rows[code]["display"].lower())
    for code in NOT_USED_CONDITIONS:
        coding = [{"system": k.system["snomed"], "code": code}]
        assert k.match_condition(coding) == []
        assert k.relevant_unmatched_condition(coding, rows[code]["display"]), rows[code]["display"]
