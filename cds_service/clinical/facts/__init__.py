"""FHIR R4 JSON → plain typed facts.

Only resources whose codes the rules read are looked at; everything else is skipped by code
before any model is built. A resource that looks relevant but cannot be used (no value, no
date, unknown unit, wrong status) is never dropped silently: it is listed in ``Facts.ignored``
with the reason, and the cards say so.

The readers live beside this module, one per kind of resource (observations, conditions,
medications), and the therapy timelines (therapy.py) are built from the medication records once
per call; ``FactBuilder`` puts them together.
"""
from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from ...knowledge import Knowledge
from .conditions import ConditionReader
from .medications import KIND, MedicationReader
from .model import (DAYS_PER_MONTH, DAYS_PER_YEAR, ConditionFact, Exposure, ExternalCause, Facts, Frax, Ignored,
                    Lab, MedicationFact, Patient, Score, Therapy, _effective_key, _parent_dates, _ref, _supersede,
                    age_on, months_after, months_between, now_date, parse_date, years_between)
from .model import PATIENT_REF
from .observations import ObservationReader
from .therapy import GlucocorticoidCourse, build_therapies, glucocorticoid_courses

__all__ = ["DAYS_PER_MONTH", "DAYS_PER_YEAR", "ConditionFact", "Exposure", "ExternalCause", "FactBuilder", "Facts",
           "Frax", "GlucocorticoidCourse", "Ignored", "Lab", "MedicationFact", "Patient", "Score", "Therapy",
           "age_on", "months_after", "months_between", "now_date", "parse_date", "years_between"]


class FactBuilder(ObservationReader, ConditionReader, MedicationReader):
    """Reads FHIR R4 resources (JSON dicts) into Facts using the knowledge files."""

    def __init__(self, knowledge: Knowledge):
        self.k = knowledge
        self.loinc = knowledge.system["loinc"]
        # LOINC by its canonical URI or an alias of terminology.yaml (its OID)
        self._loinc_systems = frozenset([self.loinc] + knowledge.raw["terminology"]["systems"]["loinc"].get("aliases", []))
        self.counted_status = set(knowledge.threshold("observation_status_counted"))
        self.cond_excluded = set(knowledge.threshold("condition_verification_excluded"))
        self.cond_confirmed = set(knowledge.threshold("condition_verification_confirmed"))
        self.cond_active = set(knowledge.threshold("condition_clinical_active"))
        self._supersedes = frozenset(knowledge.threshold("result_status_supersedes"))
        self._future_days = int(knowledge.threshold("result_future_tolerance_days"))
        self._init_medications()
        # codes that make an Observation more than a lab result (DXA scores, panels, FRAX)
        self._not_lab_only = frozenset(knowledge.dxa_by_code) | frozenset(knowledge.dxa_panel_codes) \
            | frozenset(knowledge.frax_codes)
        # DXA codes of the published DXA value set that the rules do not read: said, never skipped silently
        dxa = knowledge.raw["terminology"]["unmatched_relevant"]["dxa"]
        self._dxa_unread = frozenset(c.code for c in knowledge.valuesets[dxa["valueset"]].codes
                                     if c.system == self.loinc) - self._not_lab_only
        self._dxa_unread_reason = dxa["reason"]

    # -- entry point -----------------------------------------------------------------------
    def build(self, patient: dict[str, Any], resources: Iterable[dict[str, Any]], as_of: date,
              unavailable: dict[str, str] | None = None) -> Facts:
        facts = Facts(as_of=as_of, patient=self.patient(patient, as_of), unavailable=dict(unavailable or {}))
        resources = resources if isinstance(resources, list) else list(resources)
        facts.parent_dates = _parent_dates(resources)
        parents = facts.parent_dates
        seen: set[tuple[str, str]] = set()
        # lab results are picked by code first and read newest first (see _read_labs): a long
        # history costs a sort of strings, not a full reading of every old result
        deferred: dict[str, list[tuple[str, dict[str, Any], list[str]]]] = {}
        # Medications by id, for medicationReference (rules §6.1): "Medication/{id}" and "urn:uuid:{id}"
        medications = {r["id"]: r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Medication"
                       and isinstance(r.get("id"), str)}
        for r in resources:
            if not isinstance(r, dict):
                continue
            rtype, rid = r.get("resourceType"), r.get("id")
            if isinstance(rid, str):
                if (rtype, rid) in seen:  # the same resource reached through two prefetch keys
                    continue
                seen.add((rtype, rid))
            try:
                if rtype == "Observation":
                    codes = self._loinc_codes(r.get("code"))
                    analyte = self._lab_only(r, codes)
                    if analyte:
                        key = _effective_key(r)
                        if not key and parents and isinstance(rid, str) and rid in parents:
                            key = parents[rid][0].isoformat()
                        deferred.setdefault(analyte, []).append((key, r, codes))
                    else:
                        self._observation(r, facts, codes)
                elif rtype == "Condition":
                    self._external_causes(r, facts)
                    self._condition(r, facts)
                elif rtype == "Encounter":
                    self._encounter(r, facts)
                elif rtype in KIND:
                    self._medication(r, facts, medications)
            except (AttributeError, TypeError, ValueError, KeyError, ArithmeticError):
                # a relevant resource whose elements are not shaped as FHIR R4: said, never dropped silently
                facts.ignored.append(Ignored(_ref(r), "malformed: an element does not have its FHIR R4 type"))
        self._read_labs(deferred, facts)
        supersedes = self._supersedes
        for analyte, values in facts.labs.items():
            values = _supersede(values, lambda x: (x.code, x.date), supersedes, facts, "")
            # between results of one date a correction, then the later issued, is the latest
            values.sort(key=lambda lab: (lab.date, lab.status in supersedes, lab.issued))
            facts.labs[analyte] = values
        facts.scores = _supersede(facts.scores, lambda s: (s.code, s.kind, s.site, s.laterality, s.date), supersedes,
                                  facts, "dxa")
        facts.scores.sort(key=lambda s: (s.date, s.kind, s.site))
        facts.medications.sort(key=lambda m: (m.start or date.min))
        facts.therapies = build_therapies(facts, self.k)
        facts.glucocorticoid = glucocorticoid_courses(facts, self.k)
        return facts


    @staticmethod
    def _other_patient(resource: dict[str, Any], facts: Facts) -> bool:
        """True (and noted) when the resource names a different Patient as its subject."""
        for key in ("subject", "patient"):
            ref = resource.get(key)
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                m = PATIENT_REF.search(ref["reference"])
                if m and facts.patient.id and m.group(1) != facts.patient.id:
                    facts.ignored.append(Ignored(_ref(resource), f"refers to Patient/{m.group(1)}, not this patient"))
                    return True
        return False

    def patient(self, resource: dict[str, Any], as_of: date | None = None) -> Patient:
        gender = resource.get("gender")
        sex = gender if gender in ("female", "male", "other", "unknown") else "unknown"
        died = parse_date(resource.get("deceasedDateTime"))
        deceased = resource.get("deceasedBoolean") is True or (died is not None and (as_of is None or died <= as_of))
        return Patient(id=str(resource.get("id", "")), sex=sex, birth_date=parse_date(resource.get("birthDate")),
                       deceased=deceased)

