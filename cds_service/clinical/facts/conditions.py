"""Conditions, their encounters and the external causes of fractures (rules §1, §6.3)."""
from __future__ import annotations

from typing import Any

from ...knowledge.terminology import norm_icd
from .model import (ConditionFact, ExternalCause, Facts, Ignored, _codings, _display, _encounter_ref, _first_code,
                    _ref, _text_of, parse_date)


class ConditionReader:
    """Mixed into FactBuilder: reads Conditions and Encounters."""

    def _encounter(self, enc: dict[str, Any], facts: Facts) -> None:
        """An Encounter's start, for dating the initial-encounter fracture codes that refer to it."""
        if not isinstance(enc.get("id"), str) or self._other_patient(enc, facts):
            return
        period = enc.get("period") if isinstance(enc.get("period"), dict) else {}
        facts.encounters[f"Encounter/{enc['id']}"] = parse_date(period.get("start"))

    def _external_causes(self, cond: dict[str, Any], facts: Facts) -> None:
        """High-energy external-cause codes (rules §6.3) in the Condition's code or its evidence."""
        causes = self.k.fracture_rules.causes
        icd = self.k.system["icd10cm"]
        codings = _codings(cond.get("code"))
        evidence = cond.get("evidence") if isinstance(cond.get("evidence"), list) else []
        for ev in evidence:
            concepts = ev.get("code") if isinstance(ev, dict) else None
            for concept in concepts if isinstance(concepts, list) else []:
                codings += _codings(concept)
        found = []
        for c in codings:
            code = c.get("code")
            if not isinstance(code, str) or self.k.index.system_uri(c.get("system")) != icd:
                continue
            norm = norm_icd(code)
            cause = next((x for x in causes if x.covers(norm)), None)
            if cause is not None:
                found.append((cause, code.strip()))
        if not found or self._other_patient(cond, facts):
            return
        if _first_code(cond.get("verificationStatus")) in self.cond_excluded:
            return
        period = cond.get("onsetPeriod") if isinstance(cond.get("onsetPeriod"), dict) else {}
        onset = parse_date(cond.get("onsetDateTime")) or parse_date(period.get("start"))
        for cause, code in found:
            facts.external_causes.append(ExternalCause(
                cause.id, cause.label, code, onset, parse_date(cond.get("recordedDate")),
                _encounter_ref(cond), _ref(cond)))

    def _condition(self, cond: dict[str, Any], facts: Facts) -> None:
        codings = _codings(cond.get("code"))
        matches = self.k.match_condition(codings)
        if not matches:
            if codings and self.k.relevant_unmatched_condition(codings, _text_of(cond.get("code"))) \
                    and not self._other_patient(cond, facts):
                label = _display(cond.get("code")) or _first_code(cond.get("code")) or "condition"
                facts.ignored.append(Ignored(_ref(cond), f"{label}: {self.k.unmatched_condition[2]}"))
            return
        ref = _ref(cond)
        if self._other_patient(cond, facts):
            return
        verification = _first_code(cond.get("verificationStatus"))
        clinical = _first_code(cond.get("clinicalStatus"))
        if verification in self.cond_excluded:
            facts.ignored.append(Ignored(ref, f"condition verification status is {verification}"))
            return
        period = cond.get("onsetPeriod") if isinstance(cond.get("onsetPeriod"), dict) else {}
        stated = parse_date(cond.get("onsetDateTime")) or parse_date(period.get("start"))
        recorded = parse_date(cond.get("recordedDate"))
        onset = stated or recorded
        confirmed = verification in self.cond_confirmed
        active = clinical in self.cond_active and confirmed
        for m in matches:
            concept = self.k.concept(m.concept)
            if not confirmed and not concept.get("counts_unconfirmed"):
                facts.ignored.append(Ignored(ref, f"{concept['label']}: verification status "
                                                  f"{verification}, only confirmed conditions count"))
                continue
            if not active and not self.k.counts_by_onset(m.concept):
                continue  # resolved or unconfirmed conditions do not count (rules §1)
            if self.k.counts_by_onset(m.concept) and onset is None:
                facts.ignored.append(Ignored(ref, f"{concept['label']} without an onset or recorded date"))
            # the record's own words; without them, the code set's name for the code (CMS, SNOMED)
            display = _display(cond.get("code")) or m.hit.code.display or m.coding["code"]
            # a fracture is never dated by its recordedDate as if it were the onset (rules §6.3)
            facts.conditions.append(ConditionFact(
                concept=m.concept, label=concept["label"], code=m.coding["code"],
                system=m.coding.get("system", ""), display=display,
                onset=stated if m.site is not None else onset, active=active, fracture_site=m.site, resource=ref,
                recorded=recorded, encounter=_encounter_ref(cond)))

