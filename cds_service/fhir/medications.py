"""Which Medication resources the medication records refer to, and which must be read (rules §6.1).

A MedicationRequest, MedicationStatement, MedicationAdministration or MedicationDispense may name
its drug by ``medicationReference`` instead of ``medicationCodeableConcept``. The reference is
resolved, in this order, to

- a contained Medication (``#id``): left to the facts layer, which reads ``contained``;
- a Medication already among the gathered resources (prefetched, included by the search with
  ``_include``, or put in the request by ``bundle_to_request``), matched by id for
  ``Medication/{id}``, for an absolute URL ending in ``Medication/{id}`` and for ``urn:uuid:{id}``;
- ``Medication/{id}`` read from the fhirServer, for a relative reference or an absolute one under
  the fhirServer's own base (the same rule as the fhirServer allowlist: scheme, host, port and
  whole path segments, after RFC 3986 normalisation: ``../`` and ``%2e%2e`` resolved; encoded
  slashes, user info and fragments never read). An absolute reference to any other server is never read, so that the
  access token is never sent anywhere but the fhirServer.

What cannot be resolved is not an error of the hook: the facts layer lists the record whose drug
is unknown under "data not used", and the reason for each reference is kept (ids and outcome only)
for the log and the audit.

This module is pure: it decides what to read; the engine reads it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .trust import UnsafeUrl, normalize_url, prefix_matches

MEDICATION_RECORDS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense")

# FHIR R4 id: 1-64 of [A-Za-z0-9-.]; "." and ".." are refused below (they would move the read to
# another path of the server)
_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(rf"^Medication/({_ID})(?:/_history/({_ID}))?$")
_ENDS_WITH = re.compile(rf"(?:^|/)Medication/({_ID})(?:/_history/{_ID})?$")
_URN_UUID = re.compile(rf"^urn:uuid:({_ID})$")  # matched to a Medication of that id

# reasons a reference is not read; fixed texts, no values from the record
ANOTHER_SERVER = "not read: an absolute reference to another server (the token goes to the fhirServer only)"
URN_NOT_IN_REQUEST = "not read: a Bundle-local urn:uuid reference with no such Medication in the request"
NOT_A_MEDICATION = "not read: not a reference to a Medication"
OVER_THE_CAP = "not read: over the cap of Medication reads per call (CDS_FHIR_MAX_MEDICATION_READS)"
NO_SERVER = "not read: no fhirServer the service may call"


@dataclass
class MedicationPlan:
    """``reads``: the relative paths to read from the fhirServer (``Medication/{id}``, or with
    ``/_history/{vid}``), distinct, in the order first referenced, at most the cap.
    ``skipped``: reference (as written, shortened) → why it is not read."""

    reads: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def medication_references(resources: Iterable[dict[str, Any]]) -> list[str]:
    """Every ``medicationReference.reference`` of the medication records, in order, distinct."""
    seen: dict[str, None] = {}
    for r in resources:
        if not isinstance(r, dict) or r.get("resourceType") not in MEDICATION_RECORDS:
            continue
        ref = r.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.strip():
            seen.setdefault(target.strip(), None)
    return list(seen)


def referenced_id(ref: str) -> str | None:
    """The Medication id a reference names: ``Medication/{id}`` (relative, versioned, or the end of
    an absolute URL) or ``urn:uuid:{id}``; None for anything else (``#contained`` included)."""
    urn = _URN_UUID.match(ref)
    if urn:
        return urn.group(1)
    tail = _ENDS_WITH.search(ref)
    return tail.group(1) if tail and _usable(tail.group(1)) else None


def _usable(ident: str) -> bool:
    return ident not in (".", "..")


def plan_medication_reads(resources: Iterable[dict[str, Any]], fhir_base: str | None,
                          cap: int) -> MedicationPlan:
    """What to read from the fhirServer so that every medication record's ``medicationReference``
    resolves. ``fhir_base``: the fhirServer the service may call (None when there is none, or it is
    not trusted); ``cap``: the most distinct Medications read per call."""
    resources = list(resources)
    have = {r.get("id") for r in resources
            if isinstance(r, dict) and r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)}
    plan = MedicationPlan()
    for n, ref in enumerate(medication_references(resources), 1):
        if ref.startswith("#"):
            continue  # contained: resolved by the facts layer from the record itself
        ident = referenced_id(ref)
        # what the log and audit may say of it: a Medication id, never the reference as the record wrote it
        # (an absolute URL may carry a host, a query or free text)
        key = f"Medication/{ident}" if ident is not None and _usable(ident) else f"(reference {n})"
        if ident is not None and ident in have:
            continue  # already among the gathered resources
        if _URN_UUID.match(ref):
            plan.skipped[key] = URN_NOT_IN_REQUEST
            continue
        if ident is None:
            plan.skipped[key] = NOT_A_MEDICATION
            continue
        if fhir_base is None:
            plan.skipped[key] = NO_SERVER
            continue
        relative = _on_server(ref, fhir_base)
        if relative is None:
            plan.skipped[key] = ANOTHER_SERVER
            continue
        path = _read_path(relative)
        if path is None:
            plan.skipped[key] = NOT_A_MEDICATION
            continue
        if path in plan.reads:
            continue
        if len(plan.reads) >= cap:
            plan.skipped[key] = OVER_THE_CAP
            continue
        plan.reads.append(path)
    return plan


def _on_server(ref: str, fhir_base: str) -> str | None:
    """``ref`` relative to the fhirServer: as it is when relative; the part after the base when it
    is an absolute URL under the base (scheme, host, port and whole path segments, as the allowlist
    matches); None for an absolute URL anywhere else."""
    if "://" not in ref:
        return ref
    try:
        ref = normalize_url(ref)  # "../" and "%2e%2e" resolved before matching, as the allowlist does
    except UnsafeUrl:
        return None
    base = fhir_base.rstrip("/")
    if not prefix_matches(base, ref):
        return None
    parts = urlsplit(ref)
    if parts.query or parts.fragment:
        return ""  # not a plain reference: never read
    return parts.path.rstrip("/")[len(urlsplit(base).path.rstrip("/")):].lstrip("/")


def _read_path(relative: str) -> str | None:
    """The path to read, ``Medication/{id}`` (or ``Medication/{id}/_history/{vid}``), or None."""
    m = _RELATIVE.match(relative)
    if not m or not _usable(m.group(1)) or (m.group(2) is not None and not _usable(m.group(2))):
        return None
    return relative


