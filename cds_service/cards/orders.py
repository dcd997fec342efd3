"""Cards for the order-select and order-sign services: one card per problem with a draft order,
with suggestions that fix the order (replace it, remove it) or add the missing labs."""
from __future__ import annotations

import copy
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest

from ..clinical.interpretation import capitalised
from ..clinical.orders import OrderIssue
from ..knowledge import Knowledge
from . import card, suggestion
from .resources import medication_request, service_request

TOPIC = {"contraindication": "safety", "caution": "safety", "duplicate": "safety", "course-limit": "therapy-management",
         "denosumab-stop": "therapy-management", "missing-labs": "monitoring"}


def _replacement(k: Knowledge, issue: OrderIssue, alt: str, patient_id: str) -> dict[str, Any] | None:
    """The draft order in full, with the medication and dosage of the alternative. A draft with
    other invalid fields is replaced by the fresh order keeping the draft's id and status; when even
    that is not a valid MedicationRequest, there is no update (never an error)."""
    fresh = medication_request(k, alt, patient_id, f"replaces {issue.order.label}: {issue.summary}")
    updated = copy.deepcopy(issue.order.resource)
    updated["medicationCodeableConcept"] = fresh["medicationCodeableConcept"]
    updated["dosageInstruction"] = fresh["dosageInstruction"]
    updated.setdefault("status", "draft")
    updated.setdefault("intent", "order")
    updated.setdefault("subject", {"reference": f"Patient/{patient_id}"})
    minimal = {**fresh, "id": issue.order.resource.get("id"), "status": updated["status"]}
    for candidate in (updated, minimal):
        try:
            return MedicationRequest.model_validate(candidate).model_dump(mode="json", exclude_none=True)
        except (ValueError, TypeError):
            continue
    return None


def order_cards(issues: list[OrderIssue], patient_id: str, k: Knowledge) -> list[dict[str, Any]]:
    out = []
    for issue in issues:
        sugg = []
        ref = issue.order.ref
        replacement = _replacement(k, issue, issue.replace_with[0], patient_id) if issue.replace_with and ref else None
        if replacement is not None:
            reg = k.treatment["regimens"][issue.replace_with[0]]
            sugg.append(suggestion(f"Replace with {reg['short']}", [{
                "type": "update", "description": f"Change the draft order to {reg['text']}",
                "resource": replacement}], recommended=True))
        if issue.remove and ref:
            sugg.append(suggestion(f"Remove the {issue.order.label} order", [{
                "type": "delete", "description": f"Remove the draft order for {issue.order.label}", "resourceId": ref}],
                recommended=not sugg))
        for d in issue.create:
            reg = k.treatment["regimens"][d]
            sugg.append(suggestion(f"Order {reg['short']}", [{
                "type": "create", "description": f"Draft order: {reg['text']}",
                "resource": medication_request(k, d, patient_id, issue.summary)}], recommended=False))
        for lab in issue.lab_orders:
            sugg.append(suggestion(f"Order {lab['display']}", [{
                "type": "create", "description": f"Draft order: {lab['display']}",
                "resource": service_request(k, lab["loinc"], lab["display"], patient_id,
                                            f"before the first dose of {issue.order.label}")}]))
        behaviour = "any" if issue.lab_orders or issue.create else "at-most-one"
        summary = capitalised(issue.summary)  # "Denosumab: …", not "denosumab: …"
        lines = [f"**{summary}**", "", f"Order: {issue.order.label}"
                 + (f" ({issue.order.ref})" if issue.order.ref else ""), ""] + issue.lines
        if issue.replace_with:
            lines += ["", "Safe alternatives for this patient: "
                      + ", ".join(k.treatment["regimens"][d]["short"] for d in issue.replace_with) + "."]
        out.append(card(k, topic=TOPIC[issue.kind], indicator=issue.severity, summary=summary,
                        detail="\n".join(lines), guidelines=issue.sources, suggestions=sugg or None,
                        selection_behavior=behaviour if sugg else None))
    return out
