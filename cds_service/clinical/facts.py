"""FHIR R4 JSON → plain typed facts.

Only resources whose codes the rules read are looked at; everything else is skipped by code
before any model is built. A resource that looks relevant but cannot be used (no value, no
date, unknown unit, wrong status) is never dropped silently: it is listed in ``Facts.ignored``
with the reason, and the cards say so.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable

from ..knowledge import Knowledge
from ..knowledge.terminology import norm_icd

FHIR_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
ENCOUNTER_REF = re.compile(r"(?:^|/)Encounter/([^/]+?)(?:/_history/[^/]+)?$")
PATIENT_REF = re.compile(r"(?:^|/)Patient/([^/]+?)(?:/_history/[^/]+)?$")
# a member of a report or panel: "Observation/id", a full URL to it, or a Bundle's "urn:uuid:id"
MEMBER_REF = re.compile(r"(?:(?:^|/)Observation/([^/]+?)(?:/_history/[^/]+)?|^urn:(?:uuid|oid):(.+))$")
# a number written as text in valueString: "-2.7", "−2.7" (Unicode minus), "+1.0"; nothing else
NUMBER_TEXT = re.compile(r"^\s*([+\-\u2212\u2013]?)\s*(\d+(?:\.\d+)?|\.\d+)\s*$")
DRUG_MEMO_SIZE = 4096  # medication concepts remembered per process (they repeat across patients)
DRUG_MEMO_TEXT = 300  # longest concept text remembered: the memo's memory stays small whatever is sent


def parse_date(value: Any) -> date | None:
    """A FHIR date, dateTime or instant → its calendar date (partial dates → first day)."""
    if not isinstance(value, str):
        return None
    m = FHIR_DATE.match(value.strip())
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return None


DAYS_PER_MONTH = 30.4375  # the mean Gregorian month: months here are spans, not calendar months
DAYS_PER_YEAR = 365.25


def months_between(earlier: date, later: date) -> float:
    return (later - earlier).days / DAYS_PER_MONTH


def years_between(earlier: date, later: date) -> float:
    return (later - earlier).days / DAYS_PER_YEAR


def months_after(start: date, months: float) -> date:
    """The date ``months`` after ``start``; past the calendar's ends (a record dated 9999-12-31) it
    stays at the first or last representable day instead of failing."""
    try:
        return start + timedelta(days=int(months * DAYS_PER_MONTH))
    except OverflowError:
        return date.max if months > 0 else date.min


def age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Ignored:
    resource: str  # e.g. "Observation/abc"
    reason: str
    group: str = ""  # "dxa" for a DXA record: the card for unreadable DXA results lists these


@dataclass(frozen=True)
class Score:
    """One DXA result: a T-score, Z-score or BMD at one site on one date."""
    kind: str  # t_score | z_score | bmd
    site: str
    site_label: str
    diagnostic: bool
    laterality: str | None
    value: float
    unit: str
    date: date
    code: str
    resource: str
    site_note: str | None = None
    status: str = ""
    issued: str = ""  # as written (ISO 8601 sorts as text): the later wins between equal corrections


@dataclass(frozen=True)
class Lab:
    analyte: str
    label: str
    value: float  # in the canonical unit
    unit: str  # canonical unit
    original: str  # value and unit as recorded
    date: date
    resource: str
    low: float | None = None
    high: float | None = None
    interpretation: str | None = None  # H, L, N ... when the Observation carries one
    code: str = ""  # the LOINC code it was read from
    status: str = ""
    issued: str = ""


@dataclass(frozen=True)
class ConditionFact:
    concept: str
    label: str
    code: str
    system: str
    display: str
    onset: date | None  # a fracture's: its stated onset only (rules §6.3); other concepts: onset, else recordedDate
    active: bool
    fracture_site: str | None
    resource: str
    recorded: date | None = None  # recordedDate
    encounter: str | None = None  # "Encounter/{id}" of Condition.encounter


@dataclass(frozen=True)
class ExternalCause:
    """An ICD-10-CM external-cause code of high energy (rules §6.3), as its own Condition, a coding of a
    fracture Condition or in Condition.evidence."""
    cause: str  # knowledge id: transport | fall_from_height
    label: str
    code: str
    onset: date | None
    recorded: date | None
    encounter: str | None
    resource: str


@dataclass(frozen=True)
class MedicationFact:
    drug: str
    label: str
    drug_class: str
    status: str
    start: date | None
    last_dose: date | None
    end: date | None
    resource: str
    display: str


@dataclass(frozen=True)
class Frax:
    fracture: str  # hip | major
    percent: float
    date: date
    resource: str


@dataclass
class Patient:
    id: str
    sex: str  # female | male | other | unknown
    birth_date: date | None
    deceased: bool = False  # deceasedBoolean true, or deceasedDateTime on or before the evaluation date


@dataclass
class Facts:
    as_of: date
    patient: Patient
    scores: list[Score] = field(default_factory=list)
    labs: dict[str, list[Lab]] = field(default_factory=dict)
    conditions: list[ConditionFact] = field(default_factory=list)
    medications: list[MedicationFact] = field(default_factory=list)
    frax: list[Frax] = field(default_factory=list)
    external_causes: list[ExternalCause] = field(default_factory=list)
    encounters: dict[str, date | None] = field(default_factory=dict)  # "Encounter/{id}" → its start
    ignored: list[Ignored] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # data group → why it could not be read
    # Observation id → (date, parent reference) of the DiagnosticReport or panel that lists it
    parent_dates: dict[str, tuple[date, str]] = field(default_factory=dict, repr=False, compare=False)
    _by_concept: tuple[int, dict[str, list[ConditionFact]]] | None = field(default=None, repr=False, compare=False)

    def latest_lab(self, analyte: str) -> Lab | None:
        values = self.labs.get(analyte)
        return values[-1] if values else None

    def conditions_of(self, concept: str) -> list[ConditionFact]:
        """The conditions of one concept. Many rules ask, so they are grouped once (and again if the
        list has grown since)."""
        index = self._by_concept
        if index is None or index[0] != len(self.conditions):
            groups: dict[str, list[ConditionFact]] = {}
            for c in self.conditions:
                groups.setdefault(c.concept, []).append(c)
            index = self._by_concept = (len(self.conditions), groups)
        return list(index[1].get(concept, ()))


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType', 'Resource')}/{resource.get('id', '(no id)')}"


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _text_of(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")] + [c.get("display") for c in _codings(concept)]
    return " ".join(p for p in parts if isinstance(p, str))


def _display(concept: Any) -> str:
    """The concept's text, else its first coding's display."""
    if isinstance(concept, dict) and isinstance(concept.get("text"), str) and concept["text"].strip():
        return concept["text"].strip()
    for c in _codings(concept):
        if isinstance(c.get("display"), str) and c["display"].strip():
            return c["display"].strip()
    return ""


def _effective(resource: dict[str, Any]) -> date | None:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return parse_date(resource[key])
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        return parse_date(period.get("start")) or parse_date(period.get("end"))
    return None


def _parent_dates(resources: list[Any]) -> dict[str, tuple[date, str]]:
    """Members of DiagnosticReports (``result``) and panel Observations (``hasMember``) → the
    parent's effective date: a member without a date of its own takes it (rules §6.4)."""
    out: dict[str, tuple[date, str]] = {}
    for r in resources:
        if not isinstance(r, dict):
            continue
        rtype = r.get("resourceType")
        if rtype == "DiagnosticReport":
            refs = r.get("result")
        elif rtype == "Observation" and "hasMember" in r:
            refs = r.get("hasMember")
        else:
            continue
        if not isinstance(refs, list):
            continue
        try:
            when = _effective(r)
        except (AttributeError, TypeError, ValueError):
            when = None
        if when is None:
            continue
        for ref in refs:
            text = ref.get("reference") if isinstance(ref, dict) else None
            m = MEMBER_REF.search(text) if isinstance(text, str) else None
            if m:
                out.setdefault(m.group(1) or m.group(2), (when, _ref(r)))
    return out


def _value(element: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None, str | None]:
    """The numeric value of an Observation or component: (number, its quantity, why not)."""
    q = element.get("valueQuantity")
    if isinstance(q, dict):
        v = _number(q)
        return (v, q, None) if v is not None else (None, q, "has no numeric value")
    text = element.get("valueString")
    if isinstance(text, str):
        m = NUMBER_TEXT.match(text)
        if m is None:
            return None, None, "has a text value (valueString) that is not a number"
        v = float(m.group(2))
        return (-v if m.group(1) in ("-", "\u2212", "\u2013") else v), None, None
    return None, None, "has no numeric value"


def _effective_key(resource: dict[str, Any]) -> str:
    """The effective date as written, for sorting newest first (ISO 8601 sorts as text)."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        v = resource.get(key)
        if isinstance(v, str):
            return v
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return period["start"]
    return ""


def _number(quantity: Any) -> float | None:
    if not isinstance(quantity, dict):
        return None
    v = quantity.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) and abs(f) < 1e9 else None


def _unit(quantity: dict[str, Any]) -> str:
    for key in ("code", "unit"):
        u = quantity.get(key)
        if isinstance(u, str) and u.strip():
            return u.strip()
    return ""


class FactBuilder:
    """Reads FHIR R4 resources (JSON dicts) into Facts using the knowledge files."""

    def __init__(self, knowledge: Knowledge):
        self.k = knowledge
        self.loinc = knowledge.system["loinc"]
        # LOINC by its canonical URI or an alias of terminology.yaml (its OID)
        self._loinc_systems = frozenset([self.loinc] + knowledge.raw["terminology"]["systems"]["loinc"].get("aliases", []))
        self.counted_status = set(knowledge.threshold("observation_status_counted"))
        self.med_status = list(knowledge.threshold("medication_status_counted"))
        self.cond_excluded = set(knowledge.threshold("condition_verification_excluded"))
        self.cond_confirmed = set(knowledge.threshold("condition_verification_confirmed"))
        self.cond_active = set(knowledge.threshold("condition_clinical_active"))
        self._supersedes = frozenset(knowledge.threshold("result_status_supersedes"))
        self._future_days = int(knowledge.threshold("result_future_tolerance_days"))
        self._drug_memo: dict[tuple[Any, ...], str | None] = {}
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
                elif rtype in ("MedicationRequest", "MedicationStatement"):
                    self._medication(r, facts)
            except (AttributeError, TypeError, ValueError, KeyError, OverflowError):
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
        return facts

    def _lab_only(self, obs: dict[str, Any], codes: list[str]) -> str | None:
        """The analyte of an Observation that is a lab result and nothing else the rules read."""
        lab_by_code = self.k.lab_by_code
        lab = next((c for c in codes if c in lab_by_code), None)
        if lab is None or not self._not_lab_only.isdisjoint(codes):
            return None
        text = obs["code"].get("text") if isinstance(obs.get("code"), dict) else None
        if isinstance(text, str) and "frax" in text.lower():
            return None
        return lab_by_code[lab]

    def _read_labs(self, deferred: dict[str, list[tuple[str, dict[str, Any], list[str]]]], facts: Facts) -> None:
        """Read each analyte's results newest first: every result of the last 12 months (so that a
        recent unusable one is reported), and back until one usable result is found. Older results
        are superseded by that one and are not read (the latest value wins, rules §1)."""
        months = float(self.k.threshold("lab_max_age_months"))
        cutoff = months_after(facts.as_of, -months).isoformat()
        for analyte, items in deferred.items():
            items.sort(key=lambda t: t[0], reverse=True)
            for key, r, codes in items:
                read = facts.labs.get(analyte)
                # older than the window and a usable result is read: stop, but read the rest of that
                # result's day (a correction of it may follow)
                if key and key < cutoff and read and key[:10] < read[-1].date.isoformat():
                    break
                try:
                    self._observation(r, facts, codes)
                except (AttributeError, TypeError, ValueError, KeyError, OverflowError):
                    facts.ignored.append(Ignored(_ref(r), "malformed: an element does not have its FHIR R4 type"))

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

    # -- observations ----------------------------------------------------------------------
    def _loinc_codes(self, concept: Any) -> list[str]:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return []
        loinc = self._loinc_systems
        return [c["code"] for c in codings
                if isinstance(c, dict) and isinstance(c.get("system"), str) and c["system"] in loinc
                and isinstance(c.get("code"), str)]

    def _observation(self, obs: dict[str, Any], facts: Facts, codes: list[str]) -> None:
        """``codes``: the Observation's LOINC codes, read once by ``build``."""
        dxa = next((c for c in codes if c in self.k.dxa_by_code), None)
        panel = any(c in self.k.dxa_panel_codes for c in codes)
        lab = next((c for c in codes if c in self.k.lab_by_code), None)
        frax = self._frax_kind(obs, codes)
        if not (dxa or panel or lab or frax):
            unread = next((c for c in codes if c in self._dxa_unread), None)
            if unread and not self._other_patient(obs, facts):
                facts.ignored.append(Ignored(_ref(obs), f"DXA code {unread} "
                                             f"({_display(obs.get('code')) or 'no display'}): {self._dxa_unread_reason}",
                                             "dxa"))
            return
        ref = _ref(obs)
        if self._other_patient(obs, facts):
            return
        status = obs.get("status")
        if status not in self.counted_status:
            facts.ignored.append(Ignored(ref, f"status is {status or 'missing'}, only {', '.join(sorted(self.counted_status))} results count",
                                         "dxa" if (dxa or panel) else ""))
            return
        group = "dxa" if (dxa or panel) else ""
        when = _effective(obs)
        if when is None and isinstance(obs.get("id"), str) and obs["id"] in facts.parent_dates:
            when = facts.parent_dates[obs["id"]][0]  # dated by its DiagnosticReport or panel (rules §6.4)
        if when is None:
            facts.ignored.append(Ignored(ref, "no effective date", group))
            return
        if (when - facts.as_of).days > self._future_days:
            facts.ignored.append(Ignored(ref, f"dated in the future ({when.isoformat()}, after the evaluation date)",
                                         group))
            return
        status = status if isinstance(status, str) else ""
        issued = obs.get("issued") if isinstance(obs.get("issued"), str) else ""
        if dxa:
            self._score(obs, dxa, obs, when, ref, facts, obs.get("code"), status, issued)
        if panel:
            components = obs.get("component")
            if not isinstance(components, list):
                if not dxa:
                    facts.ignored.append(Ignored(ref, "DXA panel without a component list", "dxa"))
                components = []
            for i, comp in enumerate(components):
                if not isinstance(comp, dict):
                    continue
                ccode = next((c for c in self._loinc_codes(comp.get("code")) if c in self.k.dxa_by_code), None)
                if ccode:
                    self._score(obs, ccode, comp, when, f"{ref} component {i}", facts,
                                comp.get("code"), status, issued)
        if lab:
            self._lab(obs, lab, when, ref, facts, status, issued)
        if frax:
            value = _value(obs)[0]
            if value is None:
                facts.ignored.append(Ignored(ref, "FRAX result without a numeric value"))
            else:
                facts.frax.append(Frax(frax, value, when, ref))

    def _frax_kind(self, obs: dict[str, Any], codes: list[str]) -> str | None:
        if self.k.frax_codes:
            for c in _codings(obs.get("code")):
                if c.get("code") in self.k.frax_codes:
                    return self.k.frax_codes[c["code"]]
        if codes and all(c in self.k.lab_by_code or c in self.k.dxa_by_code for c in codes):
            return None  # coded as a lab or DXA result: not a FRAX result
        text = _text_of(obs.get("code")).lower()
        if "frax" not in text:
            return None
        for kind, words in self.k.raw["labs"]["frax"]["text_patterns"].items():
            if all(w in text for w in words):
                return kind
        return None

    def _score(self, obs: dict[str, Any], code: str, element: dict[str, Any], when: date, ref: str, facts: Facts,
               code_concept: Any, status: str = "", issued: str = "") -> None:
        entry = self.k.dxa_by_code[code]
        value, quantity, why = _value(element)
        if value is None:
            facts.ignored.append(Ignored(ref, f"DXA result {code} {why}", "dxa"))
            return
        site, note = entry.site, None
        if entry.ambiguous_site:
            site, note = self._resolve_site(obs, code_concept)
        info = self.k.site(site)
        unit = _unit(quantity) if isinstance(quantity, dict) else ""
        if entry.kind != "bmd" and unit and not (unit.startswith("{") or unit in ("1", "SD") or "score" in unit.lower()):
            facts.ignored.append(Ignored(ref, f"DXA score {code} has unit {unit!r}, expected a score annotation such as {{T-score}}",
                                         "dxa"))
            return
        facts.scores.append(Score(
            kind=entry.kind, site=site, site_label=info["label"], diagnostic=bool(info["diagnostic"]),
            laterality=entry.laterality, value=value, unit=unit, date=when, code=code, resource=ref,
            site_note=note, status=status, issued=issued))

    def _resolve_site(self, obs: dict[str, Any], code_concept: Any) -> tuple[str, str | None]:
        body = obs.get("bodySite")
        for c in _codings(body):
            if self.k.index.system_uri(c.get("system")) == self.k.system["snomed"] and c.get("code") in self.k.body_site_snomed:
                return self.k.body_site_snomed[c["code"]], None
        body_text = _text_of(body).lower()
        code_text = (code_concept.get("text") or "").lower() if isinstance(code_concept, dict) else ""
        for kw in self.k.body_site_keywords:
            if kw["text"] in body_text:
                return kw["site"], None
            if not kw.get("body_site_only") and kw["text"] in code_text:
                return kw["site"], None
        return "not_stated", "the measurement site is not stated (LOINC 38265-5 without a body site)"

    def _lab(self, obs: dict[str, Any], code: str, when: date, ref: str, facts: Facts, status: str = "",
             issued: str = "") -> None:
        key = self.k.lab_by_code[code]
        a = self.k.analyte(key)
        value, q, why = _value(obs)
        if value is None:
            facts.ignored.append(Ignored(ref, f"{a['label']} {why}"))
            return
        unit = _unit(q) if q is not None else ""
        factor = _unit_factor(a["units"], unit)
        if factor is None:
            facts.ignored.append(Ignored(ref, f"{a['label']} unit {unit or '(none)'!r} is not known; value not used"))
            return
        low = high = None
        for rr in obs.get("referenceRange") or []:
            if isinstance(rr, dict):
                lo, hi = rr.get("low"), rr.get("high")
                lf = _unit_factor(a["units"], _unit(lo)) if isinstance(lo, dict) else None
                hf = _unit_factor(a["units"], _unit(hi)) if isinstance(hi, dict) else None
                if lf is not None and _number(lo) is not None:
                    low = round(_number(lo) * lf, 4)
                if hf is not None and _number(hi) is not None:
                    high = round(_number(hi) * hf, 4)
                break
        interp = None
        for c in _codings((obs.get("interpretation") or [None])[0]):
            if isinstance(c.get("code"), str):
                interp = c["code"]
                break
        facts.labs.setdefault(key, []).append(Lab(
            analyte=key, label=a["label"], value=round(value * factor, 4), unit=a["unit"],
            original=f"{value:g} {unit}".strip(), date=when, resource=ref, low=low, high=high,
            interpretation=interp, code=code, status=status, issued=issued))

    # -- conditions ------------------------------------------------------------------------
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

    # -- medications -----------------------------------------------------------------------
    def _medication(self, med: dict[str, Any], facts: Facts) -> None:
        concept = med.get("medicationCodeableConcept")
        drug = self.match_drug(concept)
        if drug is None:
            text = _text_of(concept)
            pattern, reason = self.k.unmatched_medication
            if text and pattern.search(text.lower()) and not self._other_patient(med, facts):
                facts.ignored.append(Ignored(_ref(med), f"{_display(concept) or text}: {reason}"))
            return
        d = self.k.drugs[drug]
        ref = _ref(med)
        if self._other_patient(med, facts):
            return
        status = med.get("status")
        if status not in self.med_status:
            facts.ignored.append(Ignored(ref, f"{d.label}: status {status or 'missing'} "
                                              f"(only {' or '.join(self.med_status)} count)"))
            return
        if med["resourceType"] == "MedicationRequest":
            start = parse_date(med.get("authoredOn"))
            bounds = None
            for di in med.get("dosageInstruction") or []:
                timing = di.get("timing") if isinstance(di, dict) else None
                rep = timing.get("repeat") if isinstance(timing, dict) else None
                rep = rep if isinstance(rep, dict) else {}
                if isinstance(rep.get("boundsPeriod"), dict):
                    bounds = rep["boundsPeriod"]
                    break
            if bounds:
                start = parse_date(bounds.get("start")) or start
            end = parse_date(bounds.get("end")) if bounds else None
            last = start if status == "completed" else None
        else:
            period = med.get("effectivePeriod") if isinstance(med.get("effectivePeriod"), dict) else {}
            start = parse_date(period.get("start")) or parse_date(med.get("effectiveDateTime"))
            end = parse_date(period.get("end"))
            last = parse_date(med.get("effectiveDateTime")) or end
            start = start or parse_date(med.get("dateAsserted"))
        facts.medications.append(MedicationFact(
            drug=drug, label=d.label, drug_class=d.drug_class, status=status, start=start, last_dose=last,
            end=end, resource=ref, display=_display(concept) or d.label))

    def match_drug(self, concept: Any) -> str | None:
        """The knowledge key of the drug a medicationCodeableConcept names, or None. The answer
        depends only on the concept's codes and its words, so it is remembered by those: the same
        few hundred medication concepts recur across patients."""
        codings = _codings(concept)
        pairs = tuple((c.get("system"), c.get("code")) for c in codings)
        text = _text_of(concept)
        if len(text) > DRUG_MEMO_TEXT or not all(isinstance(s, str) and isinstance(c, str) for s, c in pairs):
            return self.k.match_drug(codings, text)  # unusual concepts are not remembered
        key = (pairs, text)
        try:
            return self._drug_memo[key]
        except KeyError:
            pass
        found = self.k.match_drug(codings, text)
        if len(self._drug_memo) >= DRUG_MEMO_SIZE:
            self._drug_memo.clear()
        self._drug_memo[key] = found
        return found


def _supersede(items: list[Any], key: Any, supersedes: frozenset[str], facts: Facts, group: str) -> list[Any]:
    """Results of the same code and date: a corrected or amended one replaces the others (the later
    ``issued`` between corrections); the replaced ones are listed as superseded (rules §6.4)."""
    groups: dict[Any, list[Any]] = {}
    for x in items:
        groups.setdefault(key(x), []).append(x)
    if len(groups) == len(items):
        return items
    out: list[Any] = []
    for same in groups.values():
        corrections = [x for x in same if x.status in supersedes] if len(same) > 1 else []
        if not corrections:
            out += same
            continue
        winner = max(corrections, key=lambda x: x.issued)
        out.append(winner)
        for x in same:
            if x is not winner:
                facts.ignored.append(Ignored(x.resource, f"superseded by {winner.resource} ({winner.status}, "
                                                         f"same code and date)", group))
    return out


def _unit_factor(units: dict[str, float], unit: str) -> float | None:
    if unit in units:
        return units[unit]
    norm = unit.replace(" ", "").replace("µ", "u").replace("μ", "u").lower()
    for known, factor in units.items():
        if known.replace(" ", "").lower() == norm:
            return factor
    return None


def _encounter_ref(resource: dict[str, Any]) -> str | None:
    ref = resource.get("encounter")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        m = ENCOUNTER_REF.search(ref["reference"].strip())
        if m:
            return f"Encounter/{m.group(1)}"
    return None


def _first_code(concept: Any) -> str | None:
    for c in _codings(concept):
        if isinstance(c.get("code"), str):
            return c["code"]
    return None


def now_date() -> date:
    return datetime.now().date()
