"""The patient rules (clinical rules §6.5) on records shaped as EHRs send them: local medication codes
beside RxNorm or none, the ICD-10-CM OID as the system, text doses, history codes; through the Flask app
(patient-view) and, for one, `cds-service evaluate`."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.cli import bundle_to_request
from cds_service.services.patient_view import prefetch_templates
from tests.conftest import hook_cards

TODAY = date.today()
ICD_OID = "urn:oid:2.16.840.1.113883.6.90"
EPIC_MED = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"
LOINC = "http://loinc.org"


def ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def chart(*resources: dict[str, Any], birth: str = "1948-05-02", **patient: Any) -> dict[str, Any]:
    pat = {"resourceType": "Patient", "id": "ehr", "gender": "female", "birthDate": birth, **patient}
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in (pat, *resources)]}


def t_score(value: float, code: str = "38263-0", days: int = 40) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"dxa-{code}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}], "text": "DXA T-score"},
            "subject": {"reference": "Patient/ehr"}, "effectiveDateTime": ago(days),
            "valueQuantity": {"value": value, "unit": "SD", "system": "http://unitsofmeasure.org", "code": "{T-score}"}}


def egfr(value: float = 72) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "egfr", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "98979-8"}]}, "subject": {"reference": "Patient/ehr"},
            "effectiveDateTime": ago(20), "valueQuantity": {"value": value, "unit": "mL/min/1.73m2",
                                                            "system": "http://unitsofmeasure.org", "code": "mL/min/{1.73_m2}"}}


def problem(rid: str, code: str, text: str, onset: str | None = None, status: str = "active") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Condition", "id": rid,
                         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                        "code": status}]},
                         "code": {"coding": [{"system": ICD_OID, "code": code.replace(".", "")}], "text": text},
                         "subject": {"reference": "Patient/ehr"}, "recordedDate": ago(400)}
    if onset:
        r["onsetDateTime"] = onset
    return r


def order(rid: str, local: str, text: str, start: str, rxnorm: str | None = None) -> dict[str, Any]:
    codings = [{"system": EPIC_MED, "code": local, "display": text.upper()}]
    if rxnorm:
        codings.append({"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm})
    return {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "authoredOn": start, "medicationCodeableConcept": {"coding": codings, "text": text},
            "subject": {"reference": "Patient/ehr"}, "dosageInstruction": [{"text": "as directed"}]}


@pytest.fixture()
def cards_of(client, knowledge, response_validator):
    templates = prefetch_templates(knowledge)

    def call(bundle: dict[str, Any]) -> list[dict[str, Any]]:
        return hook_cards(client, response_validator, bundle_to_request(bundle, None, templates, "patient-view"))
    return call


def topic(cards, name):
    return [c for c in cards if c["source"]["topic"]["code"] == name]


def drugs_ordered(cards) -> str:
    return json.dumps([s for c in cards for s in c.get("suggestions", [])])


def test_a_deceased_patient_gets_no_cards(cards_of):
    alive = chart(t_score(-3.4), egfr())
    assert cards_of(alive)  # the same chart alive gets its cards
    assert cards_of(chart(t_score(-3.4), egfr(), deceasedDateTime=ago(3))) == []
    assert cards_of(chart(t_score(-3.4), egfr(), deceasedBoolean=True)) == []


def test_bone_metastases_on_xgeva_are_left_to_oncology(cards_of):
    cards = cards_of(chart(
        t_score(-3.2), egfr(),
        problem("mets", "C79.51", "Secondary malignant neoplasm of bone", ago(200)),
        order("xgeva", "88123", "denosumab (XGEVA) 120 mg/1.7 mL injection", ago(150))))
    [treat] = topic(cards, "treatment")
    assert "oncology care leads" in treat["summary"] and treat["indicator"] == "warning"
    text = drugs_ordered(cards)
    assert "MedicationRequest" not in text  # no Prolia, teriparatide or any other drug order
    assert "Prolia with Xgeva is a duplicate" in treat["detail"] or "oncology" in treat["detail"]


def test_atypical_femoral_fracture_on_alendronate_is_critical_and_never_continue(cards_of):
    cards = cards_of(chart(
        t_score(-2.7), egfr(),
        order("aln", "10234", "alendronate (FOSAMAX) 70 MG tablet", ago(7 * 365), rxnorm="904431"),
        problem("aff", "M84.751A", "Atypical femoral fracture, right leg", ago(20))))
    critical = [c for c in topic(cards, "safety") if c["indicator"] == "critical"]
    assert len(critical) == 1
    assert "Stop the bisphosphonate" in critical[0]["detail"] and "image the other femur" in critical[0]["detail"]
    assert "Continue alendronate" not in json.dumps(cards)


def test_a_history_of_stroke_code_withholds_romosozumab(cards_of):
    cards = cards_of(chart(t_score(-3.6), egfr(),
                           problem("cva", "Z86.73", "History of cerebral infarction without residual deficits")))
    [treat] = topic(cards, "treatment")
    assert "romosozumab" not in drugs_ordered(cards).lower()
    assert "possibly recent" in treat["detail"]


def test_premature_menopause_at_46_reads_the_t_score(cards_of):
    birth = TODAY.replace(year=TODAY.year - 46).isoformat()
    cards = cards_of(chart(t_score(-2.8), egfr(), problem("pm", "E28.310", "Symptomatic premature menopause"),
                           birth=birth))
    [interp] = topic(cards, "bmd-interpretation")
    assert "Osteoporosis" in interp["summary"] and "T-score" in interp["summary"]
    assert topic(cards, "treatment")


def test_evaluate_gives_no_cards_for_a_deceased_patient(tmp_path):
    path = tmp_path / "deceased.json"
    path.write_text(json.dumps(chart(t_score(-3.4), egfr(), deceasedBoolean=True)))
    out = subprocess.run([sys.executable, "-m", "cds_service.cli", "evaluate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cards"] == []
