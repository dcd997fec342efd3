"""FHIR R4 JSON → Facts (clinical rules §1: reading the data)."""
from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.clinical.facts import FactBuilder, Facts

from .fhir_builders import AS_OF, ICD, LOINC, PID, RXNORM, SNOMED, UCUM

_ids = itertools.count(1)


# -- builders ------------------------------------------------------------------------------------
def ago(days: int) -> str:
    return (AS_OF - timedelta(days=days)).isoformat()


def patient(sex: str = "female", birth: str | None = "1955-03-15") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Patient", "id": PID, "gender": sex}
    if birth:
        r["birthDate"] = birth
    return r


def quantity(value: float, unit: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit is not None:
        q.update(unit=unit, system=UCUM, code=unit)
    return q


def obs(code: str | None, value: float | None = None, unit: str | None = "{T-score}", *, days_ago: int = 14,
        status: str = "final", text: str | None = None, display: str | None = None,
        body_site: dict[str, Any] | None = None, subject: str = PID, rid: str | None = None,
        **extra: Any) -> dict[str, Any]:
    coding = [{"system": LOINC, "code": code, **({"display": display} if display else {})}] if code else []
    r: dict[str, Any] = {
        "resourceType": "Observation", "id": rid or f"o{next(_ids)}", "status": status,
        "code": {"coding": coding, **({"text": text} if text else {})},
        "subject": {"reference": f"Patient/{subject}"},
    }
    if days_ago is not None:
        r["effectiveDateTime"] = ago(days_ago)
    if value is not None:
        r["valueQuantity"] = quantity(value, unit)
    if body_site is not None:
        r["bodySite"] = body_site
    r.update(extra)
    return r


def lab(code: str, value: float, unit: str, *, display_unit: str | None = None, **kw: Any) -> dict[str, Any]:
    r = obs(code, value, unit, **kw)
    if display_unit:
        r["valueQuantity"]["unit"] = display_unit
    return r


def condition(code: str, system: str = ICD, *, clinical: str = "active", verification: str = "confirmed",
              onset: str | None = None, subject: str = PID, rid: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition", "id": rid or f"c{next(_ids)}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": clinical}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": verification}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
    }
    if onset:
        r["onsetDateTime"] = onset
    return r


def med(code: str | None = None, text: str | None = None, *, display: str | None = None, status: str = "active",
        authored: str | None = None, rtype: str = "MedicationRequest", subject: str = PID,
        rid: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code, **({"display": display} if display else {})}]
    if text:
        concept["text"] = text
    r: dict[str, Any] = {"resourceType": rtype, "id": rid or f"m{next(_ids)}", "status": status,
                         "medicationCodeableConcept": concept, "subject": {"reference": f"Patient/{subject}"}}
    if rtype == "MedicationRequest":
        r["intent"] = "order"
        r["authoredOn"] = authored or ago(100)
    else:
        r["effectivePeriod"] = {"start": authored or ago(100)}
    return r


@pytest.fixture()
def build(knowledge):
    def _build(*resources: dict[str, Any], pat: dict[str, Any] | None = None) -> Facts:
        return FactBuilder(knowledge).build(pat or patient(), list(resources), AS_OF)
    return _build


def reasons(facts: Facts, rid: str) -> list[str]:
    return [i.reason for i in facts.ignored if i.resource == f"Observation/{rid}" or i.resource.endswith("/" + rid)]


# -- DXA scores ----------------------------------------------------------------------------------
@pytest.mark.parametrize("code, kind, site, laterality", [
    ("38267-1", "t_score", "lumbar_spine", None),
    ("38264-8", "t_score", "total_hip", None),
    ("80945-9", "t_score", "total_hip", "right"),
    ("80946-7", "t_score", "total_hip", "left"),
    ("38263-0", "t_score", "femoral_neck", None),
    ("80947-5", "t_score", "femoral_neck", "right"),
    ("80948-3", "t_score", "femoral_neck", "left"),
    ("80943-4", "t_score", "radius_33", "right"),
    ("80944-2", "t_score", "radius_33", "left"),
    ("85394-5", "z_score", "lumbar_spine", None),
    ("80933-5", "z_score", "total_hip", None),
    ("80937-6", "z_score", "total_hip", "right"),
    ("80938-4", "z_score", "total_hip", "left"),
    ("80934-3", "z_score", "femoral_neck", None),
    ("80939-2", "z_score", "femoral_neck", "right"),
    ("80940-0", "z_score", "femoral_neck", "left"),
    ("80932-7", "z_score", "radius_33", None),
    ("80935-0", "z_score", "radius_33", "right"),
    ("80936-8", "z_score", "radius_33", "left"),
])
def test_score_codes_give_kind_site_and_laterality(build, code, kind, site, laterality):
    facts = build(obs(code, -2.3, days_ago=10, rid="dxa"))
    assert len(facts.scores) == 1
    s = facts.scores[0]
    assert (s.kind, s.site, s.laterality) == (kind, site, laterality)
    assert s.value == -2.3
    assert s.diagnostic is True
    assert s.date == date(2026, 5, 22)
    assert s.code == code
    assert s.resource == "Observation/dxa"
    assert s.site_note is None
    assert facts.ignored == []


@pytest.mark.parametrize("unit", ["{T-score}", "{SD}", None])
def test_score_accepts_any_ucum_annotation_or_no_unit(build, unit):
    facts = build(obs("38267-1", -1.7, unit))
    assert [s.value for s in facts.scores] == [-1.7]


def test_score_with_a_non_score_unit_is_ignored_with_reason(build):
    facts = build(obs("38267-1", 0.85, "g/cm2", rid="bad-unit"))
    assert facts.scores == []
    assert any("g/cm2" in r for r in reasons(facts, "bad-unit"))


def test_t_scores_inside_a_dxa_panel_are_read_from_components(build):
    panel = obs("83311-1", None, rid="panel", component=[
        {"code": {"coding": [{"system": LOINC, "code": "38267-1"}]}, "valueQuantity": quantity(-2.7, "{T-score}")},
        {"code": {"coding": [{"system": LOINC, "code": "80946-7"}]}, "valueQuantity": quantity(-1.9, "{T-score}")},
        {"code": {"coding": [{"system": LOINC, "code": "85394-5"}]}, "valueQuantity": quantity(-0.4, "{Z-score}")},
        {"code": {"coding": [{"system": LOINC, "code": "9999-9"}]}, "valueQuantity": quantity(12, "kg")},
    ])
    facts = build(panel)
    got = sorted((s.kind, s.site, s.laterality, s.value, s.resource) for s in facts.scores)
    assert got == [
        ("t_score", "lumbar_spine", None, -2.7, "Observation/panel component 0"),
        ("t_score", "total_hip", "left", -1.9, "Observation/panel component 1"),
        ("z_score", "lumbar_spine", None, -0.4, "Observation/panel component 2"),
    ]


def test_panel_with_a_non_counted_status_contributes_nothing(build):
    panel = obs("83311-1", None, rid="panel", status="preliminary", component=[
        {"code": {"coding": [{"system": LOINC, "code": "38267-1"}]}, "valueQuantity": quantity(-2.7, "{T-score}")},
    ])
    facts = build(panel)
    assert facts.scores == []
    assert [i.resource for i in facts.ignored] == ["Observation/panel"]


def test_38265_5_without_body_site_is_site_not_stated_never_radius(build):
    facts = build(obs("38265-5", -3.1, display="DXA [T-score] Bone density"))
    [s] = facts.scores
    assert s.site == "not_stated"
    assert s.site != "radius_33"
    assert s.site_label == "site not stated"
    assert s.diagnostic is True
    assert s.site_note is not None and "not stated" in s.site_note
    assert "forearm" not in s.site_label


@pytest.mark.parametrize("body_site", [
    {"coding": [{"system": SNOMED, "code": "62413002", "display": "Bone structure of radius"}]},
    {"coding": [{"system": SNOMED, "code": "62413002"}]},
    {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "62413002"}]},  # SNOMED CT by its OID
    {"text": "left forearm"},
    {"text": "Left Forearm"},
], ids=["snomed+display", "snomed-only", "snomed-oid", "text", "text-mixed-case"])
def test_38265_5_with_forearm_body_site_is_radius(build, body_site):
    facts = build(obs("38265-5", -2.6, body_site=body_site))
    [s] = facts.scores
    assert s.site == "radius_33"
    assert s.site_note is None


@pytest.mark.parametrize("concept_kw", [
    {"text": "DXA Radius and Ulna [T-score] Bone density"},
    {"display": "DXA Radius and Ulna [T-score] Bone density"},
])
def test_38265_5_named_radius_in_code_text_but_no_body_site_is_still_not_stated(build, concept_kw):
    facts = build(obs("38265-5", -2.6, **concept_kw))
    [s] = facts.scores
    assert s.site == "not_stated"
    assert s.site_note is not None


def test_38265_5_with_non_forearm_snomed_body_site_is_read_from_it(build):
    facts = build(obs("38265-5", -2.6, body_site={"coding": [{"system": SNOMED, "code": "122496007"}]}))
    assert [s.site for s in facts.scores] == ["lumbar_spine"]


@pytest.mark.parametrize("code, laterality", [("38266-3", None), ("80949-1", "right"), ("80950-9", "left")])
def test_calcaneus_t_score_is_not_diagnostic(build, code, laterality):
    facts = build(obs(code, -3.4))
    [s] = facts.scores
    assert (s.site, s.diagnostic, s.laterality) == ("calcaneus", False, laterality)


# -- which Observations count ----------------------------------------------------------------------
@pytest.mark.parametrize("status", ["entered-in-error", "preliminary", "cancelled", "registered", None])
def test_non_counted_statuses_are_ignored_with_reason(build, status):
    r = obs("38267-1", -2.9, rid="st", status=status)
    if status is None:
        del r["status"]
    facts = build(r, lab("17861-6", 9.4, "mg/dL", status=status or "unknown", rid="stlab"))
    assert facts.scores == []
    assert facts.labs == {}
    assert [i.resource for i in facts.ignored] == ["Observation/st", "Observation/stlab"]
    assert f"status is {status or 'missing'}" in facts.ignored[0].reason


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_counted_statuses_are_used(build, status):
    facts = build(obs("38267-1", -2.9, status=status), lab("17861-6", 9.4, "mg/dL", status=status))
    assert [s.value for s in facts.scores] == [-2.9]
    assert facts.latest_lab("calcium").value == 9.4
    assert facts.ignored == []


def test_missing_effective_date_is_ignored_with_reason(build):
    facts = build(obs("38267-1", -2.9, days_ago=None, rid="nodate"),
                  lab("17861-6", 9.4, "mg/dL", days_ago=None, rid="nodatelab"))
    assert facts.scores == []
    assert facts.labs == {}
    assert [(i.resource, i.reason) for i in facts.ignored] == [
        ("Observation/nodate", "no effective date"), ("Observation/nodatelab", "no effective date")]


def test_effective_period_start_and_effective_instant_are_accepted(build):
    a = obs("38267-1", -2.1, days_ago=None, effectivePeriod={"start": "2026-04-02T09:00:00Z",
                                                            "end": "2026-04-02T09:30:00Z"})
    b = obs("38264-8", -1.4, days_ago=None, effectiveInstant="2026-04-03T10:15:00.000Z")
    facts = build(a, b)
    assert sorted((s.site, s.date) for s in facts.scores) == [
        ("lumbar_spine", date(2026, 4, 2)), ("total_hip", date(2026, 4, 3))]
    assert facts.ignored == []


def test_score_without_a_numeric_value_is_ignored(build):
    r = obs("38267-1", None, rid="noval")
    facts = build(r)
    assert facts.scores == []
    assert "no numeric value" in reasons(facts, "noval")[0]
    r = obs("38267-1", None, rid="text", valueString="osteopenic")  # text that is not a number
    facts = build(r)
    assert facts.scores == []
    assert "not a number" in reasons(facts, "text")[0]


def test_observation_of_another_patient_is_ignored(build):
    facts = build(obs("38267-1", -3.5, subject="someone-else", rid="other"),
                  obs("38264-8", -1.2, rid="mine"))
    assert [s.resource for s in facts.scores] == ["Observation/mine"]
    [ign] = facts.ignored
    assert ign.resource == "Observation/other"
    assert "Patient/someone-else" in ign.reason


def test_unrelated_observations_are_skipped_silently(build):
    facts = build(obs("8302-2", 170, "cm"))  # body height
    assert facts.scores == [] and facts.labs == {} and facts.ignored == []


# -- labs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, value, unit, display_unit, analyte, expected, canonical", [
    ("17861-6", 9.4, "mg/dL", None, "calcium", 9.4, "mg/dL"),
    ("2000-8", 2.35, "mmol/L", None, "calcium", 2.35 * 4.008, "mg/dL"),
    ("62292-8", 85, "nmol/L", None, "vitamin_d", 85 / 2.496, "ng/mL"),
    ("1989-3", 30, "ng/mL", None, "vitamin_d", 30, "ng/mL"),
    ("2160-0", 70.72, "umol/L", "µmol/L", "creatinine", 70.72 / 88.42, "mg/dL"),
    ("2731-8", 4.24, "pmol/L", None, "pth", 4.24 * 9.43, "pg/mL"),
    ("1751-7", 40, "g/L", None, "albumin", 4.0, "g/dL"),
    ("1751-7", 3.8, "g/dL", None, "albumin", 3.8, "g/dL"),
    ("2777-1", 1.13, "mmol/L", None, "phosphate", 1.13 * 3.097, "mg/dL"),
], ids=["ca-mass", "ca-molar", "vitd-nmol", "vitd3", "creat-umol", "pth-pmol", "alb-gL", "alb-gdL", "phos-mmol"])
def test_labs_are_converted_to_the_canonical_unit(build, code, value, unit, display_unit, analyte, expected,
                                                   canonical):
    facts = build(lab(code, value, unit, display_unit=display_unit, rid="lab"))
    got = facts.latest_lab(analyte)
    assert got is not None
    assert got.value == pytest.approx(expected, abs=1e-3)
    assert got.unit == canonical
    assert got.original == f"{value:g} {unit}"
    assert got.resource == "Observation/lab"


def test_spot_values_of_the_conversions(build):
    facts = build(lab("2000-8", 2.5, "mmol/L"), lab("62292-8", 50, "nmol/L"), lab("2160-0", 88.42, "umol/L"),
                  lab("2731-8", 10, "pmol/L"), lab("1751-7", 35, "g/L"))
    assert facts.latest_lab("calcium").value == pytest.approx(10.02, abs=1e-3)
    assert facts.latest_lab("vitamin_d").value == pytest.approx(20.03, abs=1e-2)
    assert facts.latest_lab("creatinine").value == pytest.approx(1.0, abs=1e-3)
    assert facts.latest_lab("pth").value == pytest.approx(94.3, abs=1e-3)
    assert facts.latest_lab("albumin").value == pytest.approx(3.5, abs=1e-3)


def test_lab_unit_taken_from_unit_when_code_is_absent(build):
    r = lab("2000-8", 2.35, "mmol/L")
    del r["valueQuantity"]["code"]
    facts = build(r)
    assert facts.latest_lab("calcium").value == pytest.approx(9.419, abs=1e-3)


@pytest.mark.parametrize("unit", ["mEq/L", "", "furlongs"])
def test_unknown_lab_unit_is_ignored_with_reason(build, unit):
    r = lab("17861-6", 9.4, unit, rid="odd")
    if not unit:
        r["valueQuantity"] = {"value": 9.4}
    facts = build(r)
    assert facts.latest_lab("calcium") is None
    [reason] = reasons(facts, "odd")
    assert "not known" in reason and "value not used" in reason


def test_latest_lab_wins(build):
    facts = build(lab("17861-6", 8.1, "mg/dL", days_ago=30),
                  lab("17861-6", 9.9, "mg/dL", days_ago=5, rid="newest"),
                  lab("2000-8", 2.2, "mmol/L", days_ago=200))
    latest = facts.latest_lab("calcium")
    assert (latest.value, latest.resource, latest.date) == (9.9, "Observation/newest", date(2026, 5, 27))
    assert [x.value for x in facts.labs["calcium"]] == pytest.approx([8.8176, 8.1, 9.9])
    assert facts.latest_lab("pth") is None


def test_frax_read_from_code_text(build):
    facts = build(obs(None, 3.4, "%", text="FRAX 10-year hip fracture risk", rid="fh"),
                  obs(None, 18.0, "%", text="FRAX 10-year major osteoporotic fracture risk", rid="fm"))
    assert sorted((f.fracture, f.percent, f.resource) for f in facts.frax) == [
        ("hip", 3.4, "Observation/fh"), ("major", 18.0, "Observation/fm")]


# -- conditions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, system, concept, site", [
    ("M80.08XA", ICD, "fragility_fracture", "vertebral"),
    ("M80.051A", ICD, "fragility_fracture", "hip"),
    ("M80.031A", ICD, "fragility_fracture", "wrist"),
    ("S52.501A", ICD, "fragility_fracture", "wrist"),
    ("S42.201A", ICD, "fragility_fracture", "humerus"),
    ("S32.401A", ICD, "fragility_fracture", "pelvis"),
    ("359817006", SNOMED, "fragility_fracture", "hip"),
    ("263102004", SNOMED, "fragility_fracture", "wrist"),
    ("S72.001A", ICD, "fragility_fracture", "hip"),
    ("S72.21XA", ICD, "fragility_fracture", "hip"),
    ("S32.010A", ICD, "fragility_fracture", "vertebral"),
    ("M48.50XA", ICD, "fragility_fracture", "vertebral"),
    ("Z87.310", ICD, "fragility_fracture", "unspecified"),
    ("5913000", SNOMED, "fragility_fracture", "hip"),
    ("42942008", SNOMED, "fragility_fracture", "vertebral"),
    ("443165006", SNOMED, "fragility_fracture", "unspecified"),
    ("M81.0", ICD, "osteoporosis", None),
    ("64859006", SNOMED, "osteoporosis", None),
    ("102447009", SNOMED, "osteoporosis", None),
    ("Z78.0", ICD, "postmenopausal", None),
    ("Z79.52", ICD, "long_term_glucocorticoids", None),
    ("K22.0", ICD, "oesophageal_disorder", None),
])
def test_condition_codes_map_to_concepts(build, code, system, concept, site):
    facts = build(condition(code, system, onset="2025-01-10"))
    [c] = [c for c in facts.conditions if c.concept == concept]
    assert (c.concept, c.fracture_site, c.code, c.active) == (concept, site, code, True)
    assert c.onset == date(2025, 1, 10)


@pytest.mark.parametrize("code, system", [("M80.08XA", ICD), ("M80.031A", ICD), ("Z87.310", ICD),
                                          ("443165006", SNOMED)])
def test_osteoporotic_fracture_codes_are_osteoporosis_and_a_fracture(build, code, system):
    """An osteoporotic-fracture code states both: the VSAC osteoporosis value sets hold it too."""
    facts = build(condition(code, system, onset="2025-01-10"))
    assert sorted(c.concept for c in facts.conditions) == ["fragility_fracture", "osteoporosis"]


@pytest.mark.parametrize("code, concepts", [("M81", ["osteoporosis"]),
                                            ("M80.8", ["fragility_fracture", "osteoporosis"])])
def test_an_icd_category_wholly_in_a_value_set_matches(build, code, concepts):
    """A record coded with the category (every code under which is listed) is that concept."""
    assert sorted(c.concept for c in build(condition(code, ICD)).conditions) == concepts


def test_unrelated_and_near_miss_codes_are_not_matched(build):
    # S72.401A: lower end of the femur (the shaft, S72.3-, is read since it has a value set)
    facts = build(condition("S72.401A", ICD), condition("S72", ICD), condition("S12.000A", ICD),
                  condition("44054006", SNOMED), condition("M80.08XA", "http://example.org/other"))
    assert facts.conditions == []


def test_resolved_osteoporosis_does_not_count_but_resolved_fracture_does(build):
    facts = build(condition("M81.0", clinical="resolved", onset="2020-01-01"),
                  condition("S72.001A", clinical="resolved", onset="2021-03-04", rid="frac"))
    assert [(c.concept, c.active, c.onset, c.resource) for c in facts.conditions] == [
        ("fragility_fracture", False, date(2021, 3, 4), "Condition/frac")]


@pytest.mark.parametrize("clinical", ["inactive", "remission"])
def test_inactive_postmenopausal_state_does_not_count(build, clinical):
    assert build(condition("Z78.0", clinical=clinical)).conditions == []


def test_unconfirmed_osteoporosis_does_not_count(build):
    assert build(condition("M81.0", verification="provisional")).conditions == []


@pytest.mark.parametrize("code", ["M81.0", "S72.001A"])
def test_entered_in_error_condition_is_ignored_with_reason(build, code):
    facts = build(condition(code, verification="entered-in-error", onset="2025-01-01", rid="err"))
    assert facts.conditions == []
    [ign] = facts.ignored
    assert ign.resource == "Condition/err"
    assert "entered-in-error" in ign.reason


def test_condition_of_another_patient_is_ignored(build):
    facts = build(condition("M81.0", subject="other", rid="oc"))
    assert facts.conditions == []
    assert [i.resource for i in facts.ignored] == ["Condition/oc"]


# -- medications -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, drug", [
    ({"code": "46041"}, "alendronate"),
    ({"code": "904431"}, "alendronate"),
    ({"code": "905024"}, "risedronate"),
    ({"code": "77655"}, "zoledronic_acid"),
    ({"code": "705875"}, "zoledronic_acid"),
    ({"code": "993452"}, "denosumab"),
    ({"code": "1435117"}, "teriparatide"),
    ({"code": "1921082"}, "abaloparatide"),
    ({"code": "72143"}, "raloxifene"),
    ({"code": "8640"}, "glucocorticoid"),
    ({"code": "904419"}, "alendronate"),
    ({"text": "Alendronic acid 10 MG Oral Tablet"}, "alendronate"),
    ({"text": "Denosumab-bbdz 60 mg/mL [Jubbonti]"}, "denosumab"),
    ({"code": "32915"}, "teriparatide"),
    ({"code": "2123190"}, "romosozumab"),
    ({"text": "Fosamax 70 mg tablet weekly"}, "alendronate"),
    ({"text": "Alendronate sodium 70 MG Oral Tablet"}, "alendronate"),
    ({"text": "Prolia 60 mg/mL prefilled syringe"}, "denosumab"),
    ({"code": "999999", "display": "Abaloparatide 80 MCG pen"}, "abaloparatide"),
    ({"text": "Evenity 105 mg/1.17 mL"}, "romosozumab"),
], ids=lambda v: str(v))
def test_medications_matched_by_ingredient_product_or_name(build, kw, drug):
    facts = build(med(**kw, authored="2025-02-01", rid="rx"))
    [m] = facts.medications
    assert (m.drug, m.status, m.start, m.resource) == (drug, "active", date(2025, 2, 1), "MedicationRequest/rx")


def test_medication_statement_is_read(build):
    facts = build(med("46041", rtype="MedicationStatement", authored="2024-05-01", rid="ms"))
    [m] = facts.medications
    assert (m.drug, m.drug_class, m.start, m.resource) == (
        "alendronate", "oral_bisphosphonate", date(2024, 5, 1), "MedicationStatement/ms")


@pytest.mark.parametrize("kw", [
    {"code": "1860480", "display": "abaloparatide 2000 MCG/ML"},
    {"code": "1860480", "text": "Tymlos"},
    {"code": "1046398", "display": "denosumab 120 MG/1.7ML Injection [Xgeva]"},
    {"code": "1046398"},
    {"text": "Xgeva 120 mg SC"},
    {"text": "Zometa 4 mg IV (zoledronic acid)"},
], ids=["docetaxel-named-abaloparatide", "docetaxel-tymlos-text", "xgeva-display", "xgeva-code",
        "xgeva-text", "zometa-text"])
def test_oncology_and_wrong_codes_are_never_therapy(build, knowledge, kw):
    facts = build(med(**kw))
    assert [m for m in facts.medications if m.drug_class in knowledge.therapy_classes] == []
    # an oncology strength is read as such (for the oncology rules), docetaxel not at all
    assert all(m.drug_class == "oncology_antiresorptive" for m in facts.medications)


@pytest.mark.parametrize("status", ["draft", "cancelled", "entered-in-error", "unknown"])
def test_medication_request_with_non_counted_status_is_ignored(build, status):
    """Rules §6.1: cancelled (withdrawn before use), entered-in-error, draft and unknown orders are not
    exposure (stopped and on-hold orders are read: tests/unit/test_therapy.py)."""
    facts = build(med("46041", status=status, rid="rx"))
    assert facts.medications == []
    [ign] = facts.ignored
    assert ign.resource == "MedicationRequest/rx"
    assert status in ign.reason


def test_completed_medication_request_counts(build):
    facts = build(med("46041", status="completed", authored="2020-01-01"))
    [m] = facts.medications
    assert (m.status, m.start) == ("completed", date(2020, 1, 1))


def test_medication_of_another_patient_is_ignored(build):
    facts = build(med("46041", subject="other", rid="rx"))
    assert facts.medications == []
    assert [i.resource for i in facts.ignored] == ["MedicationRequest/rx"]


def test_unrelated_medication_is_skipped_silently(build):
    facts = build(med("197361", text="Amlodipine 5 MG Oral Tablet"))
    assert facts.medications == [] and facts.ignored == []


# -- patient -----------------------------------------------------------------------------------------
def test_patient_sex_and_birth_date(build):
    facts = build(pat=patient("male", "1960-07-04"))
    assert (facts.patient.id, facts.patient.sex, facts.patient.birth_date) == ("p1", "male", date(1960, 7, 4))
    assert build(pat=patient("female", None)).patient.birth_date is None


def test_the_same_resource_reached_twice_is_read_once(build):
    r = obs("38267-1", -2.9, rid="dup")
    facts = build(r, dict(r), condition("M81.0", rid="dupc"), condition("M81.0", rid="dupc"))
    assert [s.resource for s in facts.scores] == ["Observation/dup"]
    assert [c.resource for c in facts.conditions] == ["Condition/dupc"]


# -- found in review: fixes with their tests -------------------------------------------------------
@pytest.mark.parametrize("text", ["denosumab 120 MG in 1.7 ML Injection", "zoledronic acid 4 MG in 5 ML Injection"])
def test_oncology_strengths_named_without_a_brand_are_not_therapy(build, text):
    facts = build(med(text=text))
    assert [m.drug_class for m in facts.medications] == ["oncology_antiresorptive"]


def test_osteoporosis_strengths_are_still_therapy(build):
    facts = build(med(text="denosumab 60 MG/ML Prefilled Syringe"), med(text="zoledronic acid 5 MG in 100 ML"))
    assert sorted(m.drug for m in facts.medications) == ["denosumab", "zoledronic_acid"]


def test_score_unit_written_without_braces_is_accepted(build):
    facts = build(obs("38267-1", -2.1, "T-score"))
    assert [s.value for s in facts.scores] == [-2.1]


@pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed"])
def test_unconfirmed_fracture_does_not_count_but_unconfirmed_mi_does(build, verification):
    facts = build(condition("M80.08XA", verification=verification, rid="frac"),
                  condition("I21.4", verification=verification, rid="mi"))
    assert [c.concept for c in facts.conditions] == ["myocardial_infarction"]
    assert any(i.resource == "Condition/frac" and verification in i.reason for i in facts.ignored)


# -- relevant records that match no value set: listed as not used, never dropped (issue 13) ------
def _coded(code: str, display: str, system: str = SNOMED) -> dict[str, Any]:
    c = condition(code, system)
    c["code"]["coding"][0]["display"] = display
    return c


@pytest.mark.parametrize("code, display", [
    ("16114001", "Fracture of ankle (disorder)"),  # Synthea: a fracture outside the site value sets
    ("58150001", "Fracture of clavicle (disorder)"),
    ("125605004", "Fracture of bone (disorder)"),
])
def test_fracture_outside_the_site_value_sets_is_listed_as_not_used(build, code, display):
    c = _coded(code, display)
    facts = build(c)
    assert facts.conditions == []
    assert [i.resource for i in facts.ignored] == [f"Condition/{c['id']}"]
    assert "not counted" in facts.ignored[0].reason


@pytest.mark.parametrize("code, display", [
    ("278588009", "Fractured dental filling (finding)"),  # Synthea's dental module: not a bone
    ("1259293006", "Application of composite dental filling material to dentin of tooth following fracture"),
])
def test_a_dental_fracture_is_not_an_osteoporosis_record(build, code, display):
    facts = build(_coded(code, display))
    assert facts.conditions == [] and facts.ignored == []
