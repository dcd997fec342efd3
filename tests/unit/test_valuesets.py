"""The packaged value sets (issue 13): built from their sources and up to date, every code with its
provenance, and the codes and names that EHRs, the CDS Hooks sandbox and Synthea send matched to the
right concept (RxNorm, NDC, SNOMED CT, ICD-10-CM by its place in the code set, OID system aliases)."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical.facts import FactBuilder
from cds_service.knowledge import load_knowledge

ROOT = Path(__file__).resolve().parents[2]
VALUESETS = ROOT / "cds_service" / "knowledge" / "valuesets"
SANDBOX_CSV = ROOT / "terminology" / "sources" / "sandbox-medication-list-osteoporosis.csv"
VS_FILES = sorted(VALUESETS.glob("*.json"))

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
AS_OF = date(2026, 6, 1)


def sandbox_rows() -> list[dict[str, str]]:
    with SANDBOX_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# -- the build -------------------------------------------------------------------------------------
def test_build_valuesets_check_reports_the_packaged_files_up_to_date():
    if importlib.util.find_spec("simple_icd_10_cm") is None:
        pytest.skip("simple-icd-10-cm is not installed (pip install -e '.[test]'): "
                    "build_valuesets.py needs the CMS ICD-10-CM tabular release it ships")
    out = subprocess.run([sys.executable, str(ROOT / "terminology" / "build_valuesets.py"), "--check"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "out of date" not in out.stdout and "not built by the recipe" not in out.stdout


def test_every_valueset_file_is_loaded_under_its_name(knowledge):
    assert len(VS_FILES) >= 40
    assert sorted(knowledge.valuesets) == sorted(p.stem for p in VS_FILES)
    for p in VS_FILES:
        data = json.loads(p.read_text(encoding="utf-8"))
        assert data["name"] == p.stem
        assert len(knowledge.valuesets[p.stem].codes) == len(data["codes"]) > 0, p.name


# -- provenance ------------------------------------------------------------------------------------
COMMIT = re.compile(r"@[0-9a-f]{7,40}\b")
TABULAR = re.compile(r"\(icd10\w*-tabular-[A-Za-z]+-\d{1,2}-\d{4}\.xml\), via simple-icd-10-cm \d+\.\d+\.\d+")


def version_of(sid: str, src: dict[str, Any]) -> str | None:
    """What pins a source to one release: its version or date, the commit it was taken from, or
    (ICD-10-CM) the CMS tabular file and the package version."""
    if isinstance(src.get("version"), str) and src["version"].strip():
        return src["version"]
    m = COMMIT.search(src.get("published_in", ""))
    if m:
        return m.group(0)
    if sid == "icd10cm:cms":
        m = TABULAR.search(src.get("title", ""))
        return m.group(0) if m else None
    return None


@pytest.mark.parametrize("path", VS_FILES, ids=[p.stem for p in VS_FILES])
def test_every_source_is_pinned_to_a_version_or_date(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["sources"], f"{path.name} names no source"
    for sid, src in data["sources"].items():
        assert isinstance(src.get("title"), str) and src["title"].strip(), (path.name, sid)
        if sid.startswith("written:"):
            # the project's own clinical rules: cited by section, they have no outside release
            assert "clinical rules §" in src["title"], (path.name, sid, src)
            continue
        assert version_of(sid, src), f"{path.name}: source {sid} has no version, date or commit: {src}"
        if sid.startswith("vsac:"):
            oid, _, version = sid[len("vsac:"):].partition("|")
            assert src["oid"] == oid and src["version"] == version, (path.name, sid)
            assert re.fullmatch(r"\d{8}|\d+\.\d+\.\d+", version), (path.name, sid)
        if sid.startswith("rxnorm:"):
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", src["version"]) and sid == f"rxnorm:{src['version']}"


@pytest.mark.parametrize("path", VS_FILES, ids=[p.stem for p in VS_FILES])
def test_every_code_names_at_least_one_source_of_its_file(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    sources = set(data["sources"])
    used: set[str] = set()
    counts: dict[str, int] = {}
    for row in data["codes"]:
        system, code, _display, ids = row[:4]
        assert isinstance(ids, list) and ids, f"{path.name}: {code} has no source"
        missing = set(ids) - sources
        assert not missing, f"{path.name}: {code} names sources not in the file: {missing}"
        used.update(ids)
        counts[system] = counts.get(system, 0) + 1
        assert row[4:] in ([], ["check"]), (path.name, row)
    assert used == sources, f"{path.name}: sources no code names: {sources - used}"
    assert data["counts"] == counts


# -- the CDS Hooks sandbox's drug list -------------------------------------------------------------
# The ingredient a product name starts with → the drug concept it must be read as.
INGREDIENT = {
    "alendronate": "alendronate", "alendronic": "alendronate",
    "risedronate": "risedronate",
    "ibandronate": "ibandronate", "ibandronic": "ibandronate",
    "raloxifene": "raloxifene",
}
SANDBOX_PRODUCTS = {"alendronate": 26, "risedronate": 22, "ibandronate": 7, "raloxifene": 5}
ROWS = sandbox_rows()
ROW_IDS = [f"{r['code']}-{r['display']}" for r in ROWS]


def expected_drug(display: str) -> str:
    return INGREDIENT[display.split()[0].lower()]


def test_sandbox_list_is_what_the_tests_expect():
    assert list(ROWS[0]) == ["system", "code", "display", "source"]
    assert {r["system"] for r in ROWS} == {RXNORM}
    found: dict[str, int] = {}
    for r in ROWS:
        found[expected_drug(r["display"])] = found.get(expected_drug(r["display"]), 0) + 1
    assert found == SANDBOX_PRODUCTS
    assert len({r["code"] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_sandbox_product_matches_by_its_rxnorm_code_alone(knowledge, row):
    drug = expected_drug(row["display"])
    assert knowledge.match_drug([{"system": row["system"], "code": row["code"]}], "") == drug
    hits = knowledge.lookup(row["system"], row["code"])
    assert [h.valueset for h in hits] == [knowledge.drugs[drug].valueset]
    assert "cds-hooks-sandbox:medication-list" in hits[0].code.sources


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_sandbox_product_matches_by_its_name_alone(knowledge, row):
    drug = expected_drug(row["display"])
    assert knowledge.match_drug([], row["display"]) == drug
    # as a record carries it: text only, no coding
    assert FactBuilder(knowledge).match_drug({"text": row["display"]}) == drug
    assert FactBuilder(knowledge).match_drug({"coding": [{"display": row["display"]}]}) == drug


# -- Synthea's codes ---------------------------------------------------------------------------
SYNTHEA_DRUGS = [
    ("904419", "Alendronic acid 10 MG Oral Tablet", "alendronate"),
    ("993452", "1 ML denosumab 60 MG/ML Prefilled Syringe", "denosumab"),
    ("1114085", "100 ML zoledronic acid 0.04 MG/ML Injection", "zoledronic_acid_oncology"),
    ("312615", "prednisone 20 MG Oral Tablet", "glucocorticoid"),
    ("312617", "prednisone 5 MG Oral Tablet", "glucocorticoid"),
]
SYNTHEA_CONDITIONS = [
    ("359817006", "Closed fracture of hip (disorder)", {("fragility_fracture", "hip")}),
    ("263102004", "Fracture subluxation of wrist (disorder)", {("fragility_fracture", "wrist")}),
    ("65966004", "Fracture of forearm (disorder)", {("fragility_fracture", "wrist")}),
    ("15724005", "Fracture of vertebral column without spinal cord injury (disorder)", {("fragility_fracture", "vertebral")}),
    ("1734006", "Fracture of vertebral column with spinal cord injury (disorder)", {("fragility_fracture", "vertebral")}),
    ("443165006", "Osteoporotic fracture of bone (disorder)", {("osteoporosis", None), ("fragility_fracture", "unspecified")}),
    ("64859006", "Osteoporosis (disorder)", {("osteoporosis", None)}),
]
# relevant to the rules but in no value set: listed as data not used, never dropped silently
SYNTHEA_NOT_USED = [
    ("MedicationRequest", RXNORM, "1737449", "10 ML Pamidronate Disodium 3 MG/ML Injection"),
    ("Condition", SNOMED, "125605004", "Fracture of bone (disorder)"),
    ("Condition", SNOMED, "58150001", "Fracture of clavicle (disorder)"),
    ("Condition", SNOMED, "16114001", "Fracture of ankle (disorder)"),
]


@pytest.mark.parametrize("code,display,drug", SYNTHEA_DRUGS, ids=[c for c, _, _ in SYNTHEA_DRUGS])
def test_synthea_drug_codes(knowledge, code, display, drug):
    assert knowledge.match_drug([{"system": RXNORM, "code": code}], "") == drug
    assert knowledge.match_drug([{"system": RXNORM, "code": code, "display": display}], display) == drug


def test_synthea_zoledronic_acid_4_mg_is_the_oncology_concept_not_osteoporosis_therapy(knowledge):
    assert [h.valueset for h in knowledge.lookup(RXNORM, "1114085")] == ["zoledronic_acid_oncology"]
    assert knowledge.drugs["zoledronic_acid_oncology"].drug_class not in knowledge.therapy_classes
    assert knowledge.drugs["zoledronic_acid"].drug_class in knowledge.therapy_classes


@pytest.mark.parametrize("code,display,concepts", SYNTHEA_CONDITIONS, ids=[c for c, _, _ in SYNTHEA_CONDITIONS])
def test_synthea_condition_codes(knowledge, code, display, concepts):
    found = {(m.concept, m.site) for m in knowledge.match_condition([{"system": SNOMED, "code": code}])}
    assert found == concepts


@pytest.mark.parametrize("kind,system,code,display", SYNTHEA_NOT_USED, ids=[c for _, _, c, _ in SYNTHEA_NOT_USED])
def test_synthea_codes_outside_the_value_sets_are_in_none(knowledge, kind, system, code, display):
    assert knowledge.lookup(system, code) == []


def _synthea_condition(rid: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": {"reference": "urn:uuid:p1"}, "onsetDateTime": "2025-03-01T10:00:00-05:00"}


def _synthea_med(rid: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                          "text": display},
            "subject": {"reference": "urn:uuid:p1"}, "authoredOn": "2025-01-10T10:00:00-05:00"}


def test_synthea_bundle_through_the_fact_builder(knowledge):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-02-01"}
    resources: list[dict[str, Any]] = []
    for i, (code, display, _) in enumerate(SYNTHEA_DRUGS):
        resources.append(_synthea_med(f"m{i}", code, display))
    for i, (code, display, _) in enumerate(SYNTHEA_CONDITIONS):
        resources.append(_synthea_condition(f"c{i}", code, display))
    for kind, _system, code, display in SYNTHEA_NOT_USED:
        resources.append(_synthea_med(f"x{code}", code, display) if kind == "MedicationRequest"
                         else _synthea_condition(f"x{code}", code, display))
    facts = FactBuilder(knowledge).build(patient, resources, AS_OF)

    assert {m.resource: m.drug for m in facts.medications} == {
        f"MedicationRequest/m{i}": drug for i, (_, _, drug) in enumerate(SYNTHEA_DRUGS)}
    got: dict[str, set[tuple[str, str | None]]] = {}
    for c in facts.conditions:
        got.setdefault(c.resource, set()).add((c.concept, c.fracture_site))
    assert got == {f"Condition/c{i}": concepts for i, (_, _, concepts) in enumerate(SYNTHEA_CONDITIONS)}

    ignored = {i.resource: i.reason for i in facts.ignored}
    assert set(ignored) == {f"{kind}/x{code}" for kind, _, code, _ in SYNTHEA_NOT_USED}
    pamidronate = ignored["MedicationRequest/x1737449"]
    assert "Pamidronate" in pamidronate and "not read as therapy" in pamidronate
    for _kind, _system, code, display in SYNTHEA_NOT_USED[1:]:
        assert display in ignored[f"Condition/x{code}"] and "not counted" in ignored[f"Condition/x{code}"]


# -- ICD-10-CM ----------------------------------------------------------------------------------
ICD_CODES = [
    ("M81.0", {("osteoporosis", None)}),
    ("M80.08XA", {("osteoporosis", None), ("fragility_fracture", "vertebral")}),
    ("S72.001A", {("fragility_fracture", "hip")}),
    ("S52.501A", {("fragility_fracture", "wrist")}),
]


def _forms(code: str) -> list[str]:
    return [code, code.replace(".", ""), code.lower(), code.replace(".", "").lower(), f" {code} "]


@pytest.mark.parametrize("code,concepts", ICD_CODES, ids=[c for c, _ in ICD_CODES])
def test_icd10cm_billable_codes_in_every_written_form(knowledge, code, concepts):
    for form in _forms(code):
        found = {(m.concept, m.site) for m in knowledge.match_condition([{"system": ICD, "code": form}])}
        assert found == concepts, form


@pytest.fixture()
def category_site(tmp_path: Path) -> Path:
    """A site folder whose osteoporosis and hip/wrist value sets list only categories."""
    vs = tmp_path / "valuesets"
    vs.mkdir()

    def write(name: str, codes: list[str]) -> None:
        data = json.loads((VALUESETS / f"{name}.json").read_text(encoding="utf-8"))
        data["codes"] = [["icd10cm", c, f"category {c}", ["icd10cm:cms"]] for c in codes]
        data["sources"] = {"icd10cm:cms": {"title": "test: categories only"}}
        (vs / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")

    write("osteoporosis", ["M81", "M80.0"])
    write("fracture_hip", ["S72.0"])
    write("fracture_wrist", ["S52.5"])
    return tmp_path


@pytest.mark.parametrize("code,valueset,category,concept", [
    ("M81.0", "osteoporosis", "M81", ("osteoporosis", None)),
    ("M80.08XA", "osteoporosis", "M80.0", ("osteoporosis", None)),
    ("S72.001A", "fracture_hip", "S72.0", ("fragility_fracture", "hip")),
    ("S52.501A", "fracture_wrist", "S52.5", ("fragility_fracture", "wrist")),
])
def test_icd10cm_billable_child_matches_through_its_listed_category(category_site, code, valueset, category, concept):
    k = load_knowledge(site_directory=category_site)
    assert [c.code for c in k.valuesets[valueset].codes] == [category] or valueset == "osteoporosis"
    for form in _forms(code):
        hits = [h for h in k.lookup(ICD, form) if h.valueset == valueset]
        assert [(h.code.code, h.via) for h in hits] == [(category, f"ICD-10-CM category {category}")], form
        assert concept in {(m.concept, m.site) for m in k.match_condition([{"system": ICD, "code": form}])}, form
    # the category itself is matched as a code
    assert [h.via for h in k.lookup(ICD, category) if h.valueset == valueset] == ["code"]


def test_icd10cm_category_does_not_cover_its_siblings(category_site):
    k = load_knowledge(site_directory=category_site)
    assert [h for h in k.lookup(ICD, "M80.88XA") if h.valueset == "osteoporosis"] == []  # under M80.8, not M80.0
    assert [h for h in k.lookup(ICD, "S72.301A") if h.valueset == "fracture_hip"] == []  # femoral shaft: S72.3


@pytest.mark.parametrize("code", ["M8", "M", "8", "", "   ", ".", "M8.", "81.0", "XYZ"])
def test_icd10cm_non_codes_do_not_match(knowledge, code):
    assert knowledge.lookup(ICD, code) == []
    assert knowledge.match_condition([{"system": ICD, "code": code}]) == []


def test_icd10cm_code_under_another_or_no_system_does_not_match(knowledge):
    for system in (SNOMED, RXNORM, None, "", "http://example.org/icd"):
        assert knowledge.match_condition([{"system": system, "code": "M81.0"}]) == [], system
    assert knowledge.match_condition([{"code": "M81.0"}]) == []


# -- drug names ---------------------------------------------------------------------------------
NAMES = [
    ("ALENDRONATE SODIUM 70 mg tab", "alendronate"),
    ("alendronic acid", "alendronate"),
    ("Fosamax", "alendronate"),
    ("Fosamax Plus D 70 mg/2800 IU", "alendronate"),
    ("risedronate sodium DR", "risedronate"),
    ("Atelvia 35 mg", "risedronate"),
    ("Boniva 150 mg monthly", "ibandronate"),
    ("Prolia 60 mg/mL", "denosumab"),
    ("denosumab-bbdz", "denosumab"),  # a Prolia biosimilar
    ("Jubbonti (denosumab-bbdz) 60 mg", "denosumab"),
    ("Xgeva 120 mg", "denosumab_oncology"),
    ("Wyost (denosumab-bbdz) 120 mg/1.7 mL", "denosumab_oncology"),
    ("denosumab 120 mg/1.7 mL", "denosumab_oncology"),
    ("Reclast 5 mg/100 mL", "zoledronic_acid"),
    ("zoledronic acid 5 mg/100 mL", "zoledronic_acid"),
    ("zoledronic acid 4 mg/5 mL", "zoledronic_acid_oncology"),
    ("Zometa", "zoledronic_acid_oncology"),
    ("Forteo 20 mcg daily", "teriparatide"),
    ("Yorvipath", "teriparatide_hypoparathyroidism"),
    ("Tymlos", "abaloparatide"),
    ("Evenity", "romosozumab"),
    ("Evista 60 mg", "raloxifene"),
    ("prednisone 5 mg", "glucocorticoid"),
    # prednisolone is a glucocorticoid in its own right, not read as prednisone
    ("prednisolone 5 mg", "glucocorticoid"),
    ("methylprednisolone 4 mg", "glucocorticoid"),
    ("calcium carbonate 500 mg", "calcium_carbonate"),
    ("vitamin D3 1000 unit", "cholecalciferol"),
]
NOT_NAMES = [
    "calcitriol 0.25 mcg",  # not calcium, not cholecalciferol
    "ergocalciferol 50000 unit",  # vitamin D2, not cholecalciferol
    "calcium",  # the salt is named with it
    "calcium citrate 950 mg",
    "alendronatex",
    "Fosamaxx",
    "Prolian",
    "nonprednisone",
    "hydroxyprednisone",
    "vitamin d",
    "hydrocortisone cream",  # counted by its systemic codes only
]


@pytest.mark.parametrize("text,drug", NAMES, ids=[t for t, _ in NAMES])
def test_drug_names_are_normalised(knowledge, text, drug):
    assert knowledge.match_drug([], text) == drug


@pytest.mark.parametrize("text", NOT_NAMES)
def test_a_word_inside_another_word_is_not_a_drug_name(knowledge, text):
    assert knowledge.match_drug([], text) is None


def test_the_longest_name_wins_inside_a_longer_word(knowledge):
    assert knowledge.drug_names.find("methylprednisolone 4 mg") == [("glucocorticoid", "methylprednisolone")]
    assert knowledge.drug_names.find("prednisolone") == [("glucocorticoid", "prednisolone")]
    assert knowledge.drug_names.find("calcitriol") == []


# -- NDC ----------------------------------------------------------------------------------------
def test_ndc_from_the_alendronate_value_set():
    data = json.loads((VALUESETS / "alendronate.json").read_text(encoding="utf-8"))
    assert ["ndc", "00006027001"] in [row[:2] for row in data["codes"]]


@pytest.mark.parametrize("form", ["00006027001", "00006-0270-01", "0006-0270-01", "00006-270-01", "00006-0270-1",
                                  " 0006-0270-01 "],
                         ids=["11-digit", "5-4-2", "4-4-2", "5-3-2", "5-4-1", "spaces"])
def test_ndc_in_every_form_matches_the_same_concept(knowledge, form):
    assert [h.valueset for h in knowledge.lookup(NDC, form)] == ["alendronate"]
    assert knowledge.match_drug([{"system": NDC, "code": form}], "") == "alendronate"


@pytest.mark.parametrize("form", ["00006027002", "0006-0270-02", "6-270-1", "0006027001"])
def test_other_ndcs_do_not_match(knowledge, form):
    assert knowledge.lookup(NDC, form) == []


# -- OID system aliases -------------------------------------------------------------------------
ALIASES = [
    ("rxnorm", "urn:oid:2.16.840.1.113883.6.88", "904419", "alendronate"),
    ("ndc", "urn:oid:2.16.840.1.113883.6.69", "0006-0270-01", "alendronate"),
    ("snomed", "urn:oid:2.16.840.1.113883.6.96", "359817006", "fracture_hip"),
    ("icd10cm", "urn:oid:2.16.840.1.113883.6.90", "M81.0", "osteoporosis"),
    ("icd10cm", "http://hl7.org/fhir/sid/icd-10", "S72.001A", "fracture_hip"),
    ("loinc", "urn:oid:2.16.840.1.113883.6.1", "98979-8", "lab_egfr"),
]


def test_aliases_are_those_of_terminology_yaml(knowledge):
    systems = knowledge.raw["terminology"]["systems"]
    for key, alias, _, _ in ALIASES:
        assert alias in systems[key]["aliases"]


@pytest.mark.parametrize("key,alias,code,valueset", ALIASES, ids=[a for _, a, _, _ in ALIASES])
def test_oid_alias_matches_like_the_canonical_uri(knowledge, key, alias, code, valueset):
    canonical = knowledge.lookup(knowledge.system[key], code)
    assert [h.valueset for h in canonical] == [valueset] or valueset in [h.valueset for h in canonical]
    assert knowledge.lookup(alias, code) == canonical
    # a system URI that is not an alias does not
    assert knowledge.lookup(alias + "9", code) == []


def test_oid_aliases_reach_the_facts(knowledge):
    """Records that name their code systems by OID are read as those with the canonical URIs."""
    pid = "p1"
    subject = {"reference": f"Patient/{pid}"}
    resources = [
        {"resourceType": "MedicationRequest", "id": "rx", "status": "active", "intent": "order",
         "authoredOn": "2026-01-10", "subject": subject,
         "medicationCodeableConcept": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "904419"}]}},
        {"resourceType": "Condition", "id": "cx", "subject": subject, "onsetDateTime": "2025-02-01",
         "clinicalStatus": {"coding": [{"code": "active"}]}, "verificationStatus": {"coding": [{"code": "confirmed"}]},
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "S72.001A"}]}},
        {"resourceType": "Observation", "id": "egfr", "status": "final", "subject": subject,
         "effectiveDateTime": "2026-05-01",
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "98979-8"}]},
         "valueQuantity": {"value": 25, "unit": "mL/min/{1.73_m2}", "code": "mL/min/{1.73_m2}"}},
        {"resourceType": "Observation", "id": "dxa", "status": "final", "subject": subject,
         "effectiveDateTime": "2026-05-01",
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "38267-1"}]},
         "valueQuantity": {"value": -2.7, "unit": "{T-score}", "code": "{T-score}"}},
    ]
    facts = FactBuilder(knowledge).build({"resourceType": "Patient", "id": pid, "gender": "female",
                                          "birthDate": "1955-01-01"}, resources, AS_OF)
    assert [m.drug for m in facts.medications] == ["alendronate"]
    assert [(c.concept, c.fracture_site) for c in facts.conditions] == [("fragility_fracture", "hip")]
    assert [(lab.analyte, lab.value) for lab in facts.labs.get("egfr", [])] == [("egfr", 25.0)]
    assert [(s.kind, s.site, s.value) for s in facts.scores] == [("t_score", "lumbar_spine", -2.7)]
    assert facts.ignored == []
