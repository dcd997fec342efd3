"""Suggested FHIR R4 resources, built as JSON and validated with fhir.resources' R4B models."""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from ..knowledge import Knowledge

UCUM = "http://unitsofmeasure.org"


def _validated(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(data).model_dump(mode="json", exclude_none=True)


def medication_request(k: Knowledge, drug: str, patient_id: str, reason: str) -> dict[str, Any]:
    r = k.treatment["regimens"][drug]
    label = k.drugs[drug].label if drug in k.drugs else r["rxnorm"]["display"]
    repeat: dict[str, Any] = dict(r["timing"])
    if r.get("duration"):
        d = r["duration"]
        repeat["boundsDuration"] = {"value": d["value"], "unit": d["unit"], "system": UCUM, "code": d["unit"]}
    data = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {
            "coding": [{"system": k.system["rxnorm"], "code": r["rxnorm"]["code"], "display": r["rxnorm"]["display"]}],
            "text": label,
        },
        "reasonCode": [{"text": reason}],
        "dosageInstruction": [{
            "text": r["text"],
            "timing": {"repeat": repeat},
            "route": {"coding": [{"system": k.system["snomed"], "code": r["route"]["code"],
                                  "display": r["route"]["display"]}]},
            "doseAndRate": [{"doseQuantity": {"value": r["dose"]["value"], "unit": r["dose"]["unit"],
                                              "system": UCUM, "code": r["dose"]["unit"]}}],
        }],
    }
    return _validated(MedicationRequest, data)


def service_request(k: Knowledge, loinc: str, display: str, patient_id: str, reason: str) -> dict[str, Any]:
    data = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": [{"system": k.system["loinc"], "code": loinc, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": reason}],
    }
    return _validated(ServiceRequest, data)
