"""The bone-health patient-view service: interpretation of the latest DXA exam and its advice."""
from __future__ import annotations

from typing import Any

from ..cards.advice import advice_cards
from ..cards.interpretation import interpretation_card
from ..cards.results import unreadable_dxa_card
from ..clinical.advice import advise
from ..clinical.facts import Facts
from ..clinical.interpretation import interpret
from ..knowledge import Knowledge
from .base import CdsService

SERVICE_ID = "bone-health-patient-view"


def prefetch_templates(k: Knowledge) -> dict[str, str]:
    """Templates built from the knowledge files' code lists, using only the CDS Hooks 2.0
    recommended query subset: instance read, type search by patient and token codes."""
    loinc = k.system["loinc"]
    dxa = ",".join(f"{loinc}|{c}" for c in k.dxa_query_codes())
    labs = ",".join(f"{loinc}|{c}" for c in k.lab_query_codes())
    # reports whose results may carry no date of their own (rules §6.4): read for their dates
    reports = ",".join(f"{loinc}|{c}" for c in k.raw["labs"]["reports"]["codes"])
    return {
        "patient": "Patient/{{context.patientId}}",
        "dxa": "Observation?patient={{context.patientId}}&code=" + dxa,
        "labs": "Observation?patient={{context.patientId}}&code=" + labs,
        "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
        "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
        # what was given and what was handed out: the therapy timeline (rules §6.1)
        "medicationAdministrations": "MedicationAdministration?patient={{context.patientId}}",
        "medicationDispenses": "MedicationDispense?patient={{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}",
        "diagnosticReports": "DiagnosticReport?patient={{context.patientId}}&code=" + reports,
    }


def cards_for(facts: Facts, k: Knowledge, request: dict[str, Any]) -> list[dict[str, Any]]:
    interp = interpret(facts, k)
    advice = advise(interp, facts, k)
    cards = []
    c = interpretation_card(interp, facts, k, advice.therapy)
    if c:
        cards.append(c)
    elif interp.diagnosis == "no_dxa":
        c = unreadable_dxa_card(facts, k)  # DXA records on file, none usable: never silent (rules §6.4)
        if c:
            cards.append(c)
    cards += advice_cards(advice, facts, k)
    return cards


def patient_view_service(k: Knowledge) -> CdsService:
    return CdsService(
        id=SERVICE_ID,
        hook="patient-view",
        title="Bone health: DXA interpretation and osteoporosis care",
        description=("Reads the patient's DXA T-scores and Z-scores, fractures, labs, medications and "
                     "conditions, and answers with the interpretation of the latest bone density exam "
                     "(WHO/ISCD, AACE 2020) and the guideline-based advice that follows from it."),
        usage_requirements=("Needs read access to Patient, Observation (DXA results and labs), "
                            "MedicationRequest, MedicationStatement, MedicationAdministration, MedicationDispense, "
                            "Condition and DiagnosticReport (the dates of the results it lists), either as prefetch "
                            "or through fhirServer with fhirAuthorization; and to Medication, for the records that "
                            "name their drug by medicationReference (a contained Medication, one in the prefetch "
                            "Bundle, or Medication/{id} read from fhirServer)."),
        prefetch=prefetch_templates(k),
        handler=cards_for,
        required_keys=("patient", "dxa"),
        expected_types={"patient": "Patient"},
    )
