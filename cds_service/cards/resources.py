"""Suggested FHIR R4 resources, built as JSON and validated with fhir.resources' R4B models.

Validating a resource with the models costs about a millisecond, and the hook offers several. So
each order is validated once per drug (or test) as a template with a stand-in patient and reason,
and the hook fills in the patient reference and reason text, both plain strings of already
validated shape, into a copy.
"""
from __future__ import annotations

import json
from datetime import date
from functools import lru_cache
from typing import Any

import orjson

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from ..knowledge import Knowledge

def _validated(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(data).model_dump(mode="json", exclude_none=True)



def _fill(template: str, patient_id: str, reason: str) -> dict[str, Any]:
    out = orjson.loads(template)  # a fresh copy; faster than deepcopy for plain JSON
    out["subject"] = {"reference": f"Patient/{patient_id}"}
    out["reasonCode"] = [{"text": reason}]
    return out


def medication_request(k: Knowledge, drug: str, patient_id: str, reason: str, start: date | None = None) -> dict[str, Any]:
    """A draft order of the drug's regimen; ``start``: the first dose not before that day (a follow-on
    timed to when the previous drug stops covering), in the timing's bounds and the dosage text."""
    out = _fill(_medication_template(k, drug), patient_id, reason)
    if start is not None:
        dosage = out["dosageInstruction"][0]
        repeat = dosage["timing"]["repeat"]
        if "boundsDuration" not in repeat:  # bounds[x] is one choice: a course length stays as it is
            repeat["boundsPeriod"] = {"start": start.isoformat()}
        dosage["text"] = f"{dosage['text']} (first dose on or after {start.isoformat()})"
    return out


def service_request(k: Knowledge, loinc: str, display: str, patient_id: str, reason: str) -> dict[str, Any]:
    return _fill(_service_template(k, loinc, display), patient_id, reason)


@lru_cache(maxsize=256)
def _medication_template(k: Knowledge, drug: str) -> str:
    return json.dumps(_build_medication_request(k, drug, "template", "template"))


@lru_cache(maxsize=256)
def _service_template(k: Knowledge, loinc: str, display: str) -> str:
    return json.dumps(_build_service_request(k, loinc, display, "template", "template"))


def _build_medication_request(k: Knowledge, drug: str, patient_id: str, reason: str) -> dict[str, Any]:
    r = k.treatment["regimens"][drug]
    label = k.drugs[drug].label if drug in k.drugs else r["rxnorm"]["display"]
    repeat: dict[str, Any] = dict(r["timing"])
    if r.get("duration"):
        d = r["duration"]
        repeat["boundsDuration"] = {"value": d["value"], "unit": d["unit"], "system": k.system["ucum"],
                                    "code": d["unit"]}
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
                                              "system": k.system["ucum"], "code": r["dose"]["unit"]}}],
        }],
    }
    return _validated(MedicationRequest, data)


def _build_service_request(k: Knowledge, loinc: str, display: str, patient_id: str, reason: str) -> dict[str, Any]:
    data = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": [{"system": k.system["loinc"], "code": loinc, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [{"text": reason}],
    }
    return _validated(ServiceRequest, data)
