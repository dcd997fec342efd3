"""Relevant resources with elements of the wrong shape are listed as not used, never a crash."""
from __future__ import annotations

from datetime import date

import pytest

from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import interpret

PATIENT = {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1950-01-01"}


def tscore(value):
    return {"resourceType": "Observation", "id": "o", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "38267-1"}]},
            "effectiveDateTime": "2026-05-01", "valueQuantity": {"value": value, "unit": "{T-score}"}}


@pytest.mark.parametrize("resource", [
    tscore(1e308),
    tscore(10 ** 400),
    {"resourceType": "Condition", "id": "c", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                                  "code": "M80.08XA"}]}, "onsetPeriod": "x"},
    {"resourceType": "MedicationRequest", "id": "m", "status": "active", "dosageInstruction": ["x"],
     "medicationCodeableConcept": {"text": "alendronate 70 mg"}},
    {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "38267-1"}]}, "effectivePeriod": "2026", "valueQuantity": "x"},
    {"resourceType": "Observation", "id": "o3", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "83311-1"}]}, "effectiveDateTime": "2026-05-01", "component": "x"},
])
def test_malformed_relevant_resource_is_not_a_crash(knowledge, resource):
    facts = FactBuilder(knowledge).build(PATIENT, [resource], date(2026, 6, 1))
    interpret(facts, knowledge)
    assert facts.scores == [] or all(abs(s.value) < 1e9 for s in facts.scores)
    ref = f"{resource['resourceType']}/{resource['id']}"
    used = {s.resource for s in facts.scores} | {c.resource for c in facts.conditions} | {m.resource for m in facts.medications}
    assert ref in used or any(i.resource == ref for i in facts.ignored)
