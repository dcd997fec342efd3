"""Therapy timelines: every record of one drug put together, once per call (rules §6.1).

Dose-by-dose drugs (denosumab, zoledronic acid, romosozumab, IV ibandronate): each dose covers its
interval. When administrations exist they are the doses; an order or fill counts as another dose only
with no administration within half an interval of it; orders and fills within 14 days of each other
are one dose, anchored on the first, never chained. Continuous drugs (oral drugs, daily injections):
covered while an order or statement is in force or the supply lasts, gaps of 60 days or less bridged.
Every number here comes from knowledge/medications.yaml ``therapy`` and ``glucocorticoids``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from ...knowledge import Knowledge
from .model import DAYS_PER_MONTH, Exposure, add_days, Facts, Ignored, MedicationFact, Therapy, months_between


def _value(section: dict[str, Any], key: str) -> Any:
    return section[key]["value"]


def build_therapies(facts: Facts, k: Knowledge) -> dict[str, Therapy]:
    rules = k.raw["medications"]["therapy"]
    schedules = _value(rules, "schedules")
    merge = int(_value(rules, "merge_days"))
    bridge = int(_value(rules, "gap_bridged_days"))
    future = facts.as_of
    by_drug: dict[str, list[MedicationFact]] = {}
    kept: list[MedicationFact] = []
    for m in facts.medications:
        if m.start is not None and m.start > add_days(future, 1):
            facts.ignored.append(Ignored(m.resource, f"{m.label}: dated in the future ({m.start.isoformat()}, after "
                                                     "the evaluation date)"))
            continue
        kept.append(m)
        by_drug.setdefault(m.drug, []).append(m)
    facts.medications[:] = kept
    any_dispenses = any(m.kind == "dispense" for m in kept)
    out: dict[str, Therapy] = {}
    for drug, records in by_drug.items():
        records.sort(key=lambda r: (r.start or date.min, r.resource))
        schedule = schedules.get(drug) or {"mode": "continuous"}
        dose_mode = schedule.get("mode") == "dose" or any(r.dose for r in records)
        cover_months = schedule.get("cover_months") or (schedule.get("iv") or {}).get("cover_months") or 1
        cover = max(1, int(round(float(cover_months) * DAYS_PER_MONTH)))
        exposures = _doses(records, cover, merge) if dose_mode else []
        exposures += _stretches([r for r in records if not r.dose and not r.not_taken], facts.as_of, merge)
        exposures.sort(key=lambda e: (e.start, e.end))
        spans = _union([(e.start, e.end) for e in exposures], 0 if dose_mode else bridge)
        therapy = Therapy(drug=drug, label=records[0].label, drug_class=records[0].drug_class,
                          mode="dose" if dose_mode else "continuous", as_of=facts.as_of, exposures=tuple(exposures),
                          spans=tuple(spans), records=tuple(records))
        out[drug] = _status(therapy, records, rules, any_dispenses)
    return out


def _doses(records: list[MedicationFact], cover: int, merge: int) -> list[Exposure]:
    admins = [r for r in records if r.dose and r.kind == "administration" and r.start]
    others = [r for r in records if r.dose and r.kind != "administration" and r.start]
    half = cover / 2
    others = [r for r in others if not any(abs((r.start - a.start).days) <= half for a in admins)]  # type: ignore[operator]
    out: list[Exposure] = []
    # administrations on the same day are one dose (a record written twice)
    groups: list[list[MedicationFact]] = []
    for a in sorted(admins, key=lambda r: r.start):  # type: ignore[arg-type, return-value]
        if groups and groups[-1][0].start == a.start:
            groups[-1].append(a)
        else:
            groups.append([a])
    # orders and fills within `merge` days of the first are one dose, never chained
    for r in sorted(others, key=lambda r: r.start):  # type: ignore[arg-type, return-value]
        anchor = next((g for g in groups if g[0].kind != "administration"
                       and 0 <= (r.start - g[0].start).days <= merge), None)  # type: ignore[operator]
        if anchor is not None:
            anchor.append(r)
        else:
            groups.append([r])
    for g in groups:
        start = g[0].start
        assert start is not None
        note = next((r.note for r in g if r.note), None)
        out.append(Exposure(start, add_days(start, cover - 1), tuple(r.resource for r in g), g[0].kind, True, note))
    return out


def _stretches(records: list[MedicationFact], as_of: date, merge: int) -> list[Exposure]:
    """Exposure stretches of continuous use (and statements of dose-by-dose drugs). Orders and fills
    within ``merge`` days of the first are one stretch of supply, anchored on it."""
    out: list[Exposure] = []
    supply: list[tuple[MedicationFact, date]] = []
    for r in records:
        if r.start is None:
            continue
        end = as_of if r.current else (r.end or r.start)
        if end < r.start:
            end = r.start
        if r.kind in ("request", "dispense") and not r.current and not r.stopped and not r.on_hold:
            supply.append((r, end))
        else:
            out.append(Exposure(r.start, end, (r.resource,), r.kind, False, r.note, open=r.current))
    groups: list[list[tuple[MedicationFact, date]]] = []
    for r, end in sorted(supply, key=lambda t: t[0].start):  # type: ignore[arg-type, return-value]
        if groups and (r.start - groups[-1][0][0].start).days <= merge:  # type: ignore[operator]
            groups[-1].append((r, end))
        else:
            groups.append([(r, end)])
    for g in groups:
        first = g[0][0]
        assert first.start is not None
        length = max((end - r.start).days for r, end in g)  # type: ignore[operator]
        note = next((r.note for r, _ in g if r.note), None)
        out.append(Exposure(first.start, add_days(first.start, length), tuple(r.resource for r, _ in g),
                            first.kind, False, note))
    return out


def _union(intervals: list[tuple[date, date]], bridge: int) -> list[tuple[date, date]]:
    out: list[tuple[date, date]] = []
    for s, e in sorted(intervals):
        if out and (s - out[-1][1]).days <= bridge + 1:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _status(t: Therapy, records: list[MedicationFact], rules: dict[str, Any], any_dispenses: bool) -> Therapy:
    as_of = t.as_of
    current = [r for r in records if r.current and r.start]
    # a not-taken statement newer than an active order: the patient is not taking it
    not_taken = max((r for r in records if r.not_taken and r.start), key=lambda r: r.start, default=None)  # type: ignore[arg-type, return-value]
    if not_taken is not None:
        cancelled = [r for r in current if r.start <= not_taken.start]  # type: ignore[operator]
        current = [r for r in current if r not in cancelled]
        if not cancelled:
            not_taken = None
    # a stopped record ends what came before it; a dose, order or fill after it starts again
    stops = [r for r in records if r.stopped and r.end]
    stopped_on = max((r.end for r in stops), default=None)  # type: ignore[type-var]
    if stopped_on is not None:
        current = [r for r in current if r.start > stopped_on]  # type: ignore[operator]
        restarted = current or any(e.start > stopped_on for e in t.exposures if e.kind != "statement" or e.dose)
        if restarted:
            stopped_on = None
    holds = [r for r in records if r.on_hold]
    on_hold_since = max((r.end or r.start for r in holds), default=None)  # type: ignore[type-var]
    if on_hold_since is not None:
        if current and max(r.start for r in current) > on_hold_since:  # type: ignore[type-var]
            on_hold_since = None  # a newer order or statement is in force
        else:
            # the hold's own date is rarely recorded: when supply ran on after it, the hold began when it ran out
            later = [min(e.end, as_of) for e in t.exposures if e.start > on_hold_since and not e.open]
            if later:
                on_hold_since = max(later)
    spans = t.spans
    if stopped_on is not None or (not_taken is not None and not current):
        # what a stopped or not-taken record says wins over an open stretch of an older statement
        cut = stopped_on or not_taken.start  # type: ignore[union-attr]
        spans = tuple((s, min(e, cut)) for s, e in spans if s <= cut)
    # an active order of a continuous drug with no fill or administration within its supply + 60 days,
    # when the record carries fills at all
    no_supply = None
    if t.mode == "continuous" and current and any_dispenses:
        grace = int(_value(rules, "no_supply_days"))
        default = int(_value(rules, "request_default_days"))
        supplied = [r for r in records if r.kind in ("dispense", "administration") and r.start]
        orders = [r for r in current if r.kind == "request"]
        if orders:
            last_supply = max((r.end or r.start for r in supplied), default=None)  # type: ignore[type-var]
            order = min(orders, key=lambda r: r.start)  # type: ignore[arg-type, return-value]
            since = last_supply or order.start
            allowed = add_days(since, grace + (0 if last_supply else (order.supply_days or default)))
            if allowed < as_of:
                no_supply = since
    # statements with nothing else behind them, asserted long ago
    months = float(_value(rules, "statement_unverified_months"))
    others = [r for r in records if r.kind != "statement" and not r.not_taken]
    unverified = tuple(r for r in records if r.kind == "statement" and not r.not_taken and not others
                       and months_between(r.asserted or r.start or as_of, as_of) > months)  # type: ignore[arg-type]
    notes = tuple(dict.fromkeys(e.note for e in t.exposures if e.note))
    return replace(t, current=tuple(current), stopped_on=stopped_on, on_hold_since=on_hold_since, spans=spans,
                   no_supply_since=no_supply, unverified=unverified, not_taken=not_taken, notes=notes)


# -- long-term systemic glucocorticoids (rules §6.1, §2; ACR 2022) ----------------------------------
@dataclass(frozen=True)
class GlucocorticoidCourse:
    start: date
    end: date  # the last day of use (the evaluation date for a course still in use)
    current: bool
    mean_daily_mg: float | None  # prednisone-equivalent; None: no record gives a readable dose
    resources: tuple[str, ...]
    very_high: str | None  # why the dose is very high risk (ACR 2022), or None
    displays: tuple[str, ...]

    @property
    def text(self) -> str:
        dose = (f"mean {self.mean_daily_mg:g} mg/day prednisone-equivalent" if self.mean_daily_mg is not None
                else "dose unknown (no readable dose)")
        until = "in use" if self.current else f"to {self.end.isoformat()}"
        return (f"systemic glucocorticoid ({', '.join(self.displays)}) from {self.start.isoformat()} {until}, "
                f"{dose} ({', '.join(self.resources)})")


def glucocorticoid_courses(facts: Facts, k: Knowledge) -> list[GlucocorticoidCourse]:
    """Long-term courses: systemic records joined over gaps of 30 days or less, lasting 90 days or more
    (or planned for as long, counted from its start), at a mean of 2.5 mg/day or more, or of unknown dose."""
    g = k.raw["medications"]["glucocorticoids"]
    join = int(_value(g, "join_gap_days"))
    min_days = int(_value(g, "min_days"))
    min_mg = float(_value(g, "min_daily_mg"))
    records = [m for m in facts.medications if m.drug_class == "glucocorticoid" and m.start and m.route != "local"
               and not m.not_taken and not m.on_hold]
    items = []
    for m in records:
        assert m.start is not None
        if m.current:
            end = facts.as_of
        elif m.end:
            end = m.end
        elif m.planned_days:
            end = add_days(m.start, m.planned_days - 1)
        else:
            end = m.start
        items.append((m.start, min(max(end, m.start), facts.as_of), m))
    items.sort(key=lambda t: t[0])
    groups: list[list[tuple[date, date, MedicationFact]]] = []
    for it in items:
        if groups and (it[0] - max(x[1] for x in groups[-1])).days <= join + 1:
            groups[-1].append(it)
        else:
            groups.append([it])
    out = []
    for grp in groups:
        start, end = grp[0][0], max(x[1] for x in grp)
        length = (end - start).days + 1
        planned = any((m.planned_days or 0) >= min_days for _, _, m in grp)
        if length < min_days and not planned:
            continue
        known = [((e - s).days + 1, m.daily_mg) for s, e, m in grp if m.daily_mg is not None]
        mean = round(sum(d * mg for d, mg in known) / sum(d for d, _ in known), 2) if known else None  # type: ignore[operator]
        if mean is not None and mean < min_mg:
            continue
        out.append(GlucocorticoidCourse(start, end, any(m.current or e >= facts.as_of for _, e, m in grp), mean,
                                        tuple(m.resource for _, _, m in grp), _very_high(grp, facts.as_of, g),
                                        tuple(dict.fromkeys(m.display for _, _, m in grp))))
    return out


def _very_high(group: list[tuple[date, date, MedicationFact]], as_of: date, g: dict[str, Any]) -> str | None:
    high_mg, high_days = float(_value(g, "very_high_daily_mg")), int(_value(g, "very_high_days"))
    grams = float(_value(g, "very_high_year_grams"))
    high = [(s, e) for s, e, m in group if m.daily_mg is not None and m.daily_mg >= high_mg]
    days_high = sum((e - s).days + 1 for s, e in high)
    if days_high > high_days:
        return f"≥ {high_mg:g} mg/day prednisone-equivalent for {days_high} days (more than {high_days})"
    year_start = add_days(as_of, -365)
    total = 0.0
    for s, e, m in group:
        if m.daily_mg is None:
            continue
        s2, e2 = max(s, year_start), min(e, as_of)
        if e2 >= s2:
            total += m.daily_mg * ((e2 - s2).days + 1)
    if total / 1000 > grams:
        return f"{total / 1000:.1f} g prednisone-equivalent in the last year (more than {grams:g} g)"
    return None
