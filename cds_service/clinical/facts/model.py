"""The typed facts the rules read, and the small readers of FHIR R4 JSON that every reader shares."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any


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


# what a medication record leaves uncertain (rules §6.1): the notes a timeline carries
DOSE_UNCERTAIN = "dose uncertain"  # a stopped administration: the dose may have been partly given
SUPPLY_ASSUMED = "supply assumed"  # a fill with no days' supply or countable quantity

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


def add_days(start: date, days: float) -> date:
    """``start`` plus ``days``; past the calendar's ends (a record ending 9999-12-31, a supply of 10,000
    years) it stays at the first or last representable day instead of failing."""
    try:
        return start + timedelta(days=int(days))
    except (OverflowError, ValueError):
        return date.max if days > 0 else date.min


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
    """One medication record as read (rules §6.1): what it says of one drug, before the records of
    that drug are put together into its timeline (``Therapy``)."""
    drug: str
    label: str
    drug_class: str
    kind: str  # request | statement | administration | dispense
    status: str
    resource: str
    display: str
    start: date | None  # the dose's date, or the start of the exposure the record gives
    end: date | None = None  # the end of the exposure the record gives; None: open (current) or a single dose
    dose: bool = False  # one dose of a dose-by-dose drug (an administration, a fill, a completed order)
    current: bool = False  # an active order or statement: meant to be taken now
    note: str | None = None  # "dose uncertain, confirm", "supply assumed" ...
    asserted: date | None = None  # a statement's dateAsserted
    on_hold: bool = False  # an order on hold: not current
    stopped: bool = False  # a stopped order or statement: the exposure ended at ``end``
    not_taken: bool = False  # a not-taken statement: only cancels older active orders
    route: str | None = None  # systemic | local | None (not stated); read for glucocorticoids
    daily_mg: float | None = None  # prednisone-equivalent mg/day (glucocorticoids); None: unreadable
    planned_days: int | None = None  # the length of course the record plans (glucocorticoids)
    supply_days: int | None = None  # the supply a fill or order gives (continuous drugs)



@dataclass(frozen=True)
class Exposure:
    """One dose (its cover) or one stretch of supply or exposure of a drug, from the record(s) behind it."""
    start: date
    end: date  # the last day covered
    resources: tuple[str, ...]
    kind: str  # administration | dispense | request | statement
    dose: bool  # a dose of a dose-by-dose drug
    note: str | None = None
    open: bool = False  # an order or statement in force: runs to the evaluation date


@dataclass(frozen=True)
class Therapy:
    """The timeline of one drug (rules §6.1), built once per call from every record of it."""
    drug: str
    label: str
    drug_class: str
    mode: str  # dose (dose by dose) | continuous
    as_of: date
    exposures: tuple[Exposure, ...]  # doses and stretches, merged, in date order
    spans: tuple[tuple[date, date], ...]  # covered stretches: the union, gaps bridged (continuous)
    records: tuple[MedicationFact, ...]
    current: tuple[MedicationFact, ...] = ()  # active orders and statements still in force
    stopped_on: date | None = None  # a stopped record, and when the exposure it gives ended
    on_hold_since: date | None = None
    no_supply_since: date | None = None  # an active order with fills in the record but none lately
    unverified: tuple[MedicationFact, ...] = ()  # statements with nothing behind them, asserted long ago
    not_taken: MedicationFact | None = None  # a not-taken statement newer than the active orders
    notes: tuple[str, ...] = ()

    @property
    def doses(self) -> tuple[Exposure, ...]:
        return tuple(e for e in self.exposures if e.dose)

    @property
    def first(self) -> date | None:
        starts = [e.start for e in self.exposures] + [r.start for r in self.current if r.start]
        return min(starts) if starts else None

    @property
    def last_dose(self) -> date | None:
        """The last dose given (dose-by-dose drugs), else the last day of exposure a record gives."""
        doses = [e.start for e in self.exposures if e.dose]
        if doses:
            return max(doses)
        ends = [min(e.end, self.as_of) for e in self.exposures if not e.open]
        return max(ends) if ends else None

    @property
    def covered_until(self) -> date | None:
        return max((e for _, e in self.spans), default=None)

    @property
    def covered(self) -> bool:
        """A dose or supply covers the evaluation date, or an order or statement is in force."""
        return bool(self.current) or any(s <= self.as_of <= e for s, e in self.spans)

    @property
    def on_therapy(self) -> bool:
        return self.covered

    @property
    def due(self) -> bool:
        """A dose-by-dose drug whose last dose has stopped covering, with no stop recorded, within one more
        interval: the next dose is due (or late), not a course that ended."""
        if self.mode != "dose" or self.covered or self.stopped_on is not None or not self.doses:
            return False
        cover = (self.doses[-1].end - self.doses[-1].start).days + 1
        until = self.covered_until
        return until is not None and (self.as_of - until).days <= cover

    @property
    def previously_treated(self) -> bool:
        return not self.covered and bool(self.exposures)

    @property
    def ended(self) -> date | None:
        """The day exposure ended, when it has: the end of the last covered stretch (or the stop)."""
        if self.covered:
            return None
        end = self.covered_until
        return min(end, self.as_of) if end else self.stopped_on

    @property
    def cumulative_days(self) -> int:
        """Days covered (the union of the stretches, to the evaluation date)."""
        total = 0
        for s, e in self.spans:
            e = min(e, self.as_of)
            if e >= s:
                total += (e - s).days + 1
        if self.current and not any(s <= self.as_of <= e for s, e in self.spans):
            start = min((r.start for r in self.current if r.start), default=None)
            last = max((e for _, e in self.spans if e < self.as_of), default=None)
            if start:
                begin = max(start, add_days(last, 1)) if last else start
                total += max(0, (self.as_of - begin).days + 1)
        return total

    @property
    def cumulative_months(self) -> float:
        return self.cumulative_days / DAYS_PER_MONTH

    @property
    def since(self) -> date | None:
        """The start of the stretch covering the evaluation date (a course restarted after a gap starts
        again), else None."""
        span = next((s for s, e in self.spans if s <= self.as_of <= e), None)
        starts = [r.start for r in self.current if r.start]
        if span is not None:
            return span
        return min(starts) if starts else None

    @property
    def start(self) -> date | None:
        """The current course's start when the drug covers the patient, else the first exposure."""
        return (self.since or self.first) if self.covered else self.first

    @property
    def display(self) -> str:
        """The words of the latest record (a product name as the chart writes it)."""
        return self.records[-1].display if self.records else self.label

    @property
    def resource(self) -> str:
        """The records behind the latest exposure or order (at most three, newest last)."""
        refs = list(self.exposures[-1].resources) if self.exposures else []
        refs += [r.resource for r in self.current if r.resource not in refs]
        refs = refs or [r.resource for r in self.records[-1:]]
        return ", ".join(refs[-3:])

    def describe(self) -> str:
        """What the record shows, for evidence lines: 'denosumab (MedicationAdministration/a7), 5 doses
        2021-2023, last 2023-06-01' or 'alendronate (MedicationRequest/r1), since 2019-05-02'."""
        parts = [f"{self.display} ({self.resource})"]
        if self.mode == "dose" and self.doses:
            n = len(self.doses)
            parts.append(f"{n} dose{'s' if n != 1 else ''}, last {self.last_dose.isoformat()}")  # type: ignore[union-attr]
        elif self.first:
            parts.append(f"since {self.start.isoformat()}" if self.covered and self.start
                         else f"{self.first.isoformat()} to {(self.ended or self.as_of).isoformat()}")
        if len(self.spans) > 1:  # a course stopped and restarted: each stretch, so that durations can be checked
            parts.append("stretches " + ", ".join(f"{s.isoformat()} to {min(e, self.as_of).isoformat()}"
                                                  for s, e in self.spans))
        parts += list(self.notes)
        if self.unverified:
            parts.append(f"unverified (a statement asserted {(self.unverified[0].asserted or self.unverified[0].start).isoformat()} "  # type: ignore[union-attr]
                         "with no order, fill or administration behind it)")
        return ", ".join(parts)

    def period_text(self) -> str:
        """'alendronate 2014-2020, 6.1 years' or 'denosumab 2021-2023, 5 doses'."""
        first, last = self.first, (self.ended or self.as_of)
        years = f"{first.year}" if first else "date not recorded"
        if first and last.year != first.year:
            years = f"{first.year}-{last.year}"
        if self.mode == "dose" and self.doses:
            n = len(self.doses)
            amount = f"{n} dose{'s' if n != 1 else ''}"
        else:
            months = self.cumulative_months
            amount = f"{months / 12:.1f} years" if months >= 12 else f"{months:.0f} months"
        return f"{self.label} {years}, {amount}"


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
    therapies: dict[str, Therapy] = field(default_factory=dict)  # drug → its timeline (rules §6.1)
    do_not_perform: dict[str, str] = field(default_factory=dict)  # drug → an order in force not to give it
    glucocorticoid: Any = None  # list[GlucocorticoidCourse] (facts/therapy.py): long-term systemic use (rules §6.1)
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
