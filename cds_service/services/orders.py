"""The order-select and order-sign services: safety checks on osteoporosis drug orders."""
from __future__ import annotations

from typing import Any

from ..cards.orders import order_cards
from ..clinical.advice import findings
from ..clinical.facts import FactBuilder, Facts
from ..clinical.interpretation import interpret
from ..clinical.orders import check_orders, read_drafts
from ..knowledge import Knowledge
from .base import CdsService
from .patient_view import prefetch_templates

SELECT_ID = "bone-health-order-select"
SIGN_ID = "bone-health-order-sign"


def _handler(use_selections: bool, builder: FactBuilder):
    """``builder``: one per service, made at start-up, so that its drug memo serves every call."""
    def handle(facts: Facts, k: Knowledge, request: dict[str, Any]) -> list[dict[str, Any]]:
        context = request.get("context") or {}
        selections = context.get("selections") if use_selections else None
        drafts = read_drafts(context.get("draftOrders"), selections, builder, k)
        if not drafts:
            return []
        interp = interpret(facts, k)
        issues = check_orders(drafts, facts, interp, findings(facts, k), k)
        return order_cards(issues, facts.patient.id, k)
    return handle


def _service(k: Knowledge, sid: str, hook: str, title: str, description: str, selections: bool) -> CdsService:
    return CdsService(
        id=sid, hook=hook, title=title, description=description,
        usage_requirements=("Needs the draft orders in context (FHIR R4 MedicationRequests) and read access to "
                            "Patient, Observation (labs, DXA), MedicationRequest, MedicationStatement, "
                            "MedicationAdministration, MedicationDispense, Condition and DiagnosticReport, and to "
                            "Medication for the records that name their drug by medicationReference."),
        prefetch=prefetch_templates(k), handler=_handler(selections, FactBuilder(k)), required_keys=("patient",),
        expected_types={"patient": "Patient"})


def order_select_service(k: Knowledge) -> CdsService:
    return _service(k, SELECT_ID, "order-select", "Bone health: osteoporosis drug order check (selection)",
                    "Checks the osteoporosis drug being selected against the patient's kidney function, calcium, "
                    "vitamin D, conditions and current therapy, and suggests a safe alternative.", True)


def order_sign_service(k: Knowledge) -> CdsService:
    return _service(k, SIGN_ID, "order-sign", "Bone health: osteoporosis drug order check (signing)",
                    "Before osteoporosis drug orders are signed: contraindications, duplicate therapy, course limits, "
                    "denosumab stopped without a follow-on, and labs missing before the first dose.", False)
