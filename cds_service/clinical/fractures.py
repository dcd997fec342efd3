"""Fractures as events (clinical rules §6.3).

One fracture is often coded several times: an emergency visit (S32.010A), a follow-up (M80.08XA), a
history code on the problem list (Z87.310). This module turns the fracture Conditions of the facts into
fracture events: one per site (with its side or vertebral level) within the knowledge files' window, dated
by the onset, else by the initial encounter's start, else "on or before" the recorded date (uncertain).
An event with a high-energy external cause on the same day or in the same encounter is not a fragility
fracture: it is kept, with why it is not counted.

Pure functions: Facts + Knowledge → events. Every number and code comes from conditions.yaml `fractures`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ..knowledge import FractureRules, Knowledge
from ..knowledge.terminology import norm_icd
from .facts import ConditionFact, ExternalCause, Facts, months_between

SITE_WORDS = {"hip": "hip", "vertebral": "vertebra", "wrist": "wrist", "humerus": "proximal humerus",
              "pelvis": "pelvis or sacrum", "femur_shaft": "femoral shaft", "unspecified": "site not stated"}


@dataclass
class FractureRecord:
    """One fracture Condition, read for the event rules."""
    fact: ConditionFact
    site: str
    detail: str | None  # right | left | a vertebral level (L1); None when the code does not say
    encounter: str  # initial | later | not_stated | history
    date: date | None
    basis: str  # onset | encounter | recorded | none
    aff_site: bool = False  # subtrochanteric or femoral shaft (atypical femoral fracture review)

    @property
    def certain(self) -> bool:
        return self.basis in ("onset", "encounter")


@dataclass
class FractureEvent:
    site: str
    detail: str | None
    date: date | None
    certain: bool
    history: bool
    records: list[FractureRecord] = field(default_factory=list)
    high_energy: list[ExternalCause] = field(default_factory=list)
    future: bool = False

    @property
    def counted(self) -> bool:
        """A fragility fracture: counted for the diagnosis and the risk rules."""
        return not self.high_energy and not self.future and (self.date is not None or self.history)

    @property
    def reason(self) -> str | None:
        """Why the event is not counted."""
        if self.future:
            return f"dated {self.date.isoformat() if self.date else ''} after today"
        if self.high_energy:
            causes = "; ".join(f"{c.label} {c.code} ({c.resource})" for c in self.high_energy)
            return f"not a fragility fracture: high-energy external cause on the same day or encounter ({causes})"
        if self.date is None and not self.history:
            return "no onset, encounter or recorded date"
        return None

    @property
    def aff_site(self) -> bool:
        return any(r.aff_site for r in self.records)

    @property
    def display(self) -> str:
        first = next((r for r in self.records if r.encounter in ("initial", "not_stated")), self.records[0])
        return first.fact.display

    @property
    def site_label(self) -> str:
        words = SITE_WORDS.get(self.site, self.site)
        return f"{words} ({self.detail})" if self.detail else words

    @property
    def when(self) -> str:
        if self.history and self.date is None:
            return "a past fracture, date not recorded"
        if self.history:
            return f"a past fracture, on or before {self.date.isoformat()}"
        if self.date is None:
            return "date not recorded"
        if self.certain:
            return self.date.isoformat()
        return f"on or before {self.date.isoformat()}, date uncertain: only the record's date is known"

    def recent(self, as_of: date, months: float) -> bool:
        """In the last ``months``: never for a history-only event; an uncertain date counts by itself."""
        return (self.counted and not self.history and self.date is not None and self.date <= as_of
                and months_between(self.date, as_of) <= months)

    def line(self) -> str:
        codes = ", ".join(dict.fromkeys(f"{r.fact.code} ({r.fact.resource})" for r in self.records))
        return f"{self.site_label} fracture, {self.when}: {self.display} — records: {codes}"


def _icd(fact: ConditionFact, k: Knowledge) -> str | None:
    return norm_icd(fact.code) if k.index.system_uri(fact.system) == k.system["icd10cm"] else None


def _detail(fact: ConditionFact, code: str | None, rules: FractureRules) -> str | None:
    if code is not None:
        for rule in rules.detail_rules:
            if not code.startswith(rule.prefixes) or len(code) < rule.position:
                continue
            ch = code[rule.position - 1]
            if rule.kind == "laterality":
                return rule.values.get(ch)
            if ch in rule.unstated:
                return None
            key = code[:rule.position]
            return rules.levels.get(key, f"{key[:3]}.{key[3:]}")
        return None
    for side, pattern in rules.text_laterality:  # SNOMED: the concept's words name the side
        if pattern.search(fact.display):
            return side
    return None


def _encounter(fact: ConditionFact, code: str | None, rules: FractureRules) -> str:
    if code is not None and code in rules.history_codes:
        return "history"
    if code is None and rules.history_text and rules.history_text.search(fact.display):
        return "history"
    if code is not None and len(code) == 7 and code[0].isalpha():
        if code[6] in rules.initial:
            return "initial"
        if code[6] in rules.later:
            return "later"
    return "not_stated"


def read_record(fact: ConditionFact, facts: Facts, k: Knowledge) -> FractureRecord:
    rules = k.fracture_rules
    code = _icd(fact, k)
    encounter = _encounter(fact, code, rules)
    when, basis = None, "none"
    if fact.onset is not None:
        when, basis = fact.onset, "onset"
    elif encounter == "initial" and fact.encounter and facts.encounters.get(fact.encounter):
        when, basis = facts.encounters[fact.encounter], "encounter"
    elif fact.recorded is not None:
        when, basis = fact.recorded, "recorded"
    aff = bool(code and code.startswith(rules.aff_prefixes)) or \
        bool(code is None and rules.aff_text and rules.aff_text.search(fact.display))
    return FractureRecord(fact, fact.fracture_site or "unspecified", _detail(fact, code, rules), encounter, when,
                          basis, aff)


def _compatible(a_site: str, a_detail: str | None, e: FractureEvent) -> bool:
    if "unspecified" not in (a_site, e.site) and a_site != e.site:
        return False
    return a_detail is None or e.detail is None or a_detail == e.detail


def _join(e: FractureEvent, r: FractureRecord) -> None:
    e.records.append(r)
    if e.site == "unspecified":
        e.site = r.site
    if e.detail is None and r.site == e.site:
        e.detail = r.detail
    if r.encounter != "history":
        e.history = False
    if r.date is not None and (e.date is None or (r.certain and not e.certain) or
                               (r.certain == e.certain and r.date < e.date)):
        if r.encounter != "later" or e.date is None:
            e.date, e.certain = r.date, r.certain


def fracture_events(facts: Facts, k: Knowledge) -> list[FractureEvent]:
    """The fracture events of the facts, oldest first (undated last)."""
    rules = k.fracture_rules
    window = rules.same_event_days
    records = [read_record(c, facts, k) for c in facts.conditions_of("fragility_fracture")]
    events: list[FractureEvent] = []
    future: list[FractureEvent] = []

    def new(r: FractureRecord) -> FractureEvent:
        e = FractureEvent(r.site, r.detail, r.date, r.certain, r.encounter == "history", [r])
        events.append(e)
        return e

    def order(r: FractureRecord) -> tuple[int, date]:
        # new fractures first (certain dates, then uncertain ones), then later encounters, then history
        if r.encounter in ("initial", "not_stated"):
            rank = 0 if r.certain else 1
        else:
            rank = 2 if r.encounter == "later" else 3
        return rank, r.date or date.max

    for r in sorted(records, key=order):
        if r.date is not None and r.date > facts.as_of:
            e = FractureEvent(r.site, r.detail, r.date, r.certain, r.encounter == "history", [r], future=True)
            future.append(e)
            continue
        dated = [e for e in events if e.date is not None]
        if r.encounter in ("initial", "not_stated") and r.date is not None:
            # the same fracture: a compatible site within the window of the event's first date; a record
            # dated only "on or before" its recorded date joins the latest compatible event on or before
            # that date, however long before (a re-recording of a known fracture, not a new one)
            if r.certain:
                match = next((e for e in dated if _compatible(r.site, r.detail, e)
                              and abs((r.date - e.date).days) <= window), None)
            else:
                match = max((e for e in dated if _compatible(r.site, r.detail, e) and e.date <= r.date),
                            key=lambda e: e.date, default=None)
            _join(match, r) if match else new(r)
        elif r.encounter == "later":
            # a later encounter of a fracture on or before its date, never a new one
            before = [e for e in dated if _compatible(r.site, r.detail, e) and e.date <= (r.date or date.max)]
            if before:
                _join(max(before, key=lambda e: e.date), r)
            else:
                e = new(r)
                e.certain = False
        elif r.encounter == "history":
            # a past fracture: the same as any fracture recorded on or before it; one of its own otherwise
            before = [e for e in events if _compatible(r.site, r.detail, e) and
                      (r.date is None or e.date is None or e.date <= r.date)]
            if before:
                _join(before[0], r)
            else:
                e = new(r)
                e.certain = False
        else:
            new(r)  # no date at all: listed, not counted
    for e in events:
        e.high_energy = _high_energy(e, facts, rules)
    return sorted(events, key=lambda e: e.date or date.max) + future


def _high_energy(e: FractureEvent, facts: Facts, rules: FractureRules) -> list[ExternalCause]:
    out = []
    for c in facts.external_causes:
        when = c.onset or (facts.encounters.get(c.encounter) if c.encounter else None) or c.recorded
        for r in e.records:
            if r.encounter not in ("initial", "not_stated"):
                continue
            same = c.resource == r.fact.resource or (c.encounter is not None and c.encounter == r.fact.encounter) \
                or (when is not None and r.date is not None and abs((when - r.date).days) <= rules.same_day_days)
            if same:
                out.append(c)
                break
    return out
