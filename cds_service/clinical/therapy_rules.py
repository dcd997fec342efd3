"""Therapy management from the timelines (rules §6.1): denosumab dose timing and its end, bisphosphonate
drug holidays, anabolic courses, records to confirm, and the creatinine before an IV dose.

Pure functions: Interpretation + Facts + Knowledge + findings → structured results (``Management``
for the cards, and ``TherapyState`` for the treatment plan). Every number comes from the knowledge
files (treatment.yaml ``numbers``, medications.yaml ``therapy``); card builders word the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from ..knowledge import Knowledge
from .facts.model import DOSE_UNCERTAIN, SUPPLY_ASSUMED, add_days
from .facts import DAYS_PER_MONTH, DAYS_PER_YEAR, Exposure, Facts, Score, Therapy, months_after, months_between, years_between
from .interpretation import Interpretation, fmt

if TYPE_CHECKING:
    from .advice import Finding, Management

@dataclass
class Holiday:
    """A bisphosphonate course long enough for a drug holiday to be weighed (ASBMR 2016, ES-2019)."""
    state: str  # advise (on therapy: consider one) | continue | in_progress | reassess | not_advised
    drugs: str  # "alendronate, zoledronic acid"
    years: float  # pooled years of treatment
    since: date | None  # the holiday's start: the day the last dose stopped covering
    reasons: list[str] = field(default_factory=list)  # why not advised, or why reassess now
    ends_holiday: bool = False  # a new fracture or a hip T-score at or below −2.5: treatment again
    records: list[str] = field(default_factory=list)  # each bisphosphonate's timeline, for the card's evidence


@dataclass
class TherapyState:
    holiday: Holiday | None = None
    suppress_plan: str | None = None  # why no "untreated, start" card: a card of this module says what to do
    history: list[str] = field(default_factory=list)  # "previously treated: alendronate 2014-2020, 6.1 years"
    course_notes: dict[str, list[str]] = field(default_factory=dict)  # drug → what its history says of a new course
    never_offer: dict[str, str] = field(default_factory=dict)  # drug → why it is not offered again


def _holiday_rules(k: Knowledge) -> dict:
    return k.treatment["holiday"]


def _creatinine_loinc(k: Knowledge) -> str:
    """The creatinine order of the work-up labs (treatment.yaml labs_for_workup)."""
    return next(x["loinc"] for x in k.treatment["labs_for_workup"]
                if "creatinine" in (x["analyte"] if isinstance(x["analyte"], list) else [x["analyte"]]))


def _infused(t: Therapy, k: Knowledge) -> bool:
    """Zoledronic acid, or a drug given by infusion dose by dose (IV ibandronate: its schedule's ``iv`` form)."""
    schedule = k.raw["medications"]["therapy"]["schedules"]["value"].get(t.drug) or {}
    return t.drug_class == "iv_bisphosphonate" or (t.mode == "dose" and isinstance(schedule.get("iv"), dict))


def facts_rules(k: Knowledge) -> dict:
    return k.raw["medications"]["therapy"]


def _n(k: Knowledge, key: str) -> float:
    return float(k.number(key))


def therapy_state(interp: Interpretation, facts: Facts, k: Knowledge) -> TherapyState:
    state = TherapyState()
    state.history = [f"previously treated: {t.period_text()} (ended {t.ended.isoformat() if t.ended else 'date unknown'})"
                     for t in interp.previous_therapies]
    state.holiday = _holiday(interp, facts, k)
    pth = [t for t in facts.therapies.values() if t.drug_class == "anabolic_pth"]
    months = sum(t.cumulative_months for t in pth)
    limit = _n(k, "pth_analog_max_months")
    if pth:
        words = (f"{months:.0f} months of teriparatide/abaloparatide already given "
                 f"({'; '.join(t.period_text() for t in pth)})")
        extra = k.treatment["courses"]["pth_beyond_limit"]["value"] if months >= limit else \
            f"up to {limit:g} months in a lifetime in all: {limit - months:.0f} months remain."
        for d, drug in k.drugs.items():
            if drug.drug_class == "anabolic_pth":
                state.course_notes[d] = [f"{words}; {extra}"]
    for t in facts.therapies.values():
        if t.not_taken is not None and not t.current and t.drug_class in k.therapy_classes:
            why = f": {t.not_taken.note}" if t.not_taken.note else ""
            state.never_offer[t.drug] = (f"the patient is not taking it ({t.not_taken.resource}, "
                                         f"{t.not_taken.start.isoformat() if t.not_taken.start else '?'}{why}); "
                                         "review or discontinue the active order instead of ordering it again")
    for drug, ref in facts.do_not_perform.items():
        state.never_offer[drug] = f"an order not to give it is in force ({ref}, doNotPerform)"
    if interp.due_therapies and not interp.active_therapies:
        state.suppress_plan = "dose due"  # the therapy-management card says to give the dose
    holds = [t for t in facts.therapies.values() if t.drug_class in k.therapy_classes and t.on_hold_since
             and not t.on_therapy]
    if holds and not interp.active_therapies:
        state.suppress_plan = "on hold"  # a paused order is the prescriber's decision: the records card says so
    romo = facts.therapies.get("romosozumab")
    if romo is not None and len(romo.doses) >= int(_n(k, "romosozumab_max_doses")):
        state.never_offer["romosozumab"] = (f"a romosozumab course of {len(romo.doses)} doses is complete "
                                            f"({romo.period_text()}): never repeated")
    return state


def _hip_scores(interp: Interpretation, k: Knowledge):
    exam = interp.exam
    sites = set(_holiday_rules(k)["hip_sites"]["value"])
    return [s for s in exam.scores if s.kind == "t_score" and s.site in sites] if exam else []


def _holiday(interp: Interpretation, facts: Facts, k: Knowledge) -> Holiday | None:
    bis = [t for t in facts.therapies.values() if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate")]
    if not bis:
        return None
    oral_days = sum(t.cumulative_days for t in bis if t.mode == "continuous")
    oral_years = oral_days / DAYS_PER_YEAR
    # zoledronic acid is counted in yearly doses given (three infusions are three years of treatment)
    iv_years = sum(len(t.doses) * round(((t.doses[0].end - t.doses[0].start).days + 1) / DAYS_PER_MONTH) / 12
                   for t in bis if t.mode == "dose" and t.doses)
    years = oral_years + iv_years
    if oral_years < _n(k, "oral_bisphosphonate_holiday_years") and iv_years < _n(k, "iv_bisphosphonate_holiday_years") \
            and years < _n(k, "oral_bisphosphonate_holiday_years"):
        return None
    drugs = ", ".join(sorted({t.label for t in bis}))
    records = [t.describe() for t in bis]
    covered = [t for t in bis if t.on_therapy]
    t_cut = float(k.threshold("t_score_osteoporosis_max"))
    first = min(t.first for t in bis if t.first)  # type: ignore[type-var]
    # the latest DXA on therapy or since: hip and femoral-neck T-scores above −2.5
    why_not: list[str] = []
    hips = _hip_scores(interp, k)
    if interp.exam is None or interp.exam.date < first:
        why_not.append("no DXA since the bisphosphonate started")
    elif not hips:
        why_not.append("the latest DXA has no total hip or femoral neck T-score")
    else:
        low = sorted((s for s in hips if s.value <= t_cut), key=lambda s: s.value)
        if low:
            why_not.append(f"hip T-score {fmt(low[0].value)} at the {low[0].site_label} ({low[0].date.isoformat()}) "
                           f"is at or below {fmt(t_cut)}")
    on_bis = [f for f, t in interp.on_therapy if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate")]
    if on_bis:
        why_not += [f"fracture on therapy: {f.display} ({f.when})" for f in on_bis]
    if interp.risk == "very_high":
        why_not.append("fracture risk is very high (" + "; ".join(interp.risk_reasons[:2]) + ")")
    if covered:
        return Holiday("continue" if why_not else "advise", drugs, years, None, why_not, records=records)
    since = max((t.ended for t in bis if t.ended), default=None)
    if since is None:
        return None
    # stopped: a holiday, or not advised; reassess after a new fracture, a hip T-score ≤ −2.5 or 4 years
    reassess: list[str] = []
    ends = False
    new = [f for f in interp.fractures if f.date and f.date > since and not f.history]
    if new:
        reassess += [f"new fracture during the holiday: {f.display} ({f.when})" for f in new]
        ends = True
    if interp.exam and interp.exam.date > since:
        low = sorted((s for s in hips if s.value <= t_cut), key=lambda s: s.value)
        if low:
            reassess.append(f"hip T-score {fmt(low[0].value)} on {low[0].date.isoformat()}, during the holiday")
            ends = True
    holiday_years = years_between(since, facts.as_of)
    if holiday_years >= _n(k, "holiday_reassess_years"):
        reassess.append(f"{holiday_years:.1f} years since the last dose stopped covering; reassess at "
                        f"{_n(k, 'holiday_reassess_years'):g} years at the latest")
    if reassess:
        return Holiday("reassess", drugs, years, since, reassess, ends, records)
    if why_not:
        return Holiday("not_advised", drugs, years, since, why_not, records=records)
    return Holiday("in_progress", drugs, years, since, [], records=records)


@dataclass(frozen=True)
class TherapyFinding:
    """What one §6.1 rule found, as data: the card builders (cards/therapy.py) word it. Each kind reads
    the fields it names; no rule reads another's words."""
    kind: str  # denosumab-unknown-last-dose | denosumab-early-zoledronic | denosumab-stopping | denosumab-overdue
    #            | denosumab-due | denosumab-on-schedule | drug-holiday | continue-bisphosphonate
    #            | drug-holiday-in-progress | drug-holiday-reassess | dose-due | iv-dose-creatinine
    #            | anabolic-stopping | anabolic-complete | anabolic-ended | records-to-confirm
    #            | fracture-on-therapy | atypical-femoral-fracture-review (rules §6.3)
    therapy: Therapy
    last_dose: date | None = None
    due: date | None = None  # the next dose's day
    months: float | None = None  # months since the last dose
    holds: tuple[str, ...] = ()  # the contraindications that hold the next dose (their messages)
    all_blocked: bool = False  # every follow-on bisphosphonate is contraindicated
    anabolics: tuple[str, ...] = ()  # anabolic drugs being taken beside denosumab (they do not hold the rebound)
    early: Exposure | None = None  # a zoledronic acid dose given early after denosumab
    holiday: Holiday | None = None
    low_hip: Score | None = None  # the lowest hip T-score the holiday advice rests on
    top_years: float | None = None  # the longest course a holiday not advised may continue
    iv: bool = False
    creatinine: str | None = None  # a creatinine of the last days, in words with its resource
    pth_months: float | None = None  # teriparatide and abaloparatide months in a lifetime
    complete: str | None = None  # a course complete: what its history says
    never_again: str | None = None  # why the drug is never given again
    items: tuple[tuple[str, str, bool], ...] = ()  # records to confirm: (what, why, a warning)
    fractures: tuple[tuple[Any, Therapy], ...] = ()  # fragility fractures on therapy, each with its drug (rules §6.3)


def manage_therapies(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding], state: TherapyState,
                     stopping: set[str], blocked: set[str], in_review: set[str]) -> list[Management]:
    out: list[Management] = []
    out += _denosumab(interp, facts, k, found, state, stopping, blocked)
    out += _bisphosphonates(interp, facts, k, state, stopping, blocked, in_review)
    out += _anabolics(interp, facts, k, state, blocked, stopping)
    out += _records_to_confirm(interp, facts, k)
    return out


def _m(kind: str, indicator: str, finding: TherapyFinding, guidelines: list[str], **kw) -> Management:
    from .advice import Management

    return Management(kind, indicator, guidelines, finding, **kw)


def _denosumab(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding], state: TherapyState,
               stopping: set[str], blocked: set[str]) -> list[Management]:
    """Rules §6.1 (ECTS 2021, Prolia label): dose timing while on it; when it ends, the follow-on."""
    t = facts.therapies.get("denosumab")
    if t is None or "denosumab" in stopping:  # a safety card gives the specialist plan (never "continue")
        return []
    interval, overdue = _n(k, "denosumab_interval_months"), _n(k, "denosumab_overdue_months")
    follow_on = [d for d in k.management("after_denosumab") if d not in blocked]
    last = t.last_dose
    guidelines = ["ECTS-2021", "ES-2019", "LABELS"]
    if last is None:
        if not t.on_therapy:
            return []
        return [_m("denosumab-unknown-last-dose", "warning", TherapyFinding("denosumab-unknown-last-dose", t),
                   guidelines, continue_drug="denosumab")]
    # what came after the last dose: zoledronic acid, or an oral bisphosphonate covering now
    zol = facts.therapies.get("zoledronic_acid")
    after = [d for d in (zol.doses if zol else ()) if d.start > last]
    min_gap = _n(k, "denosumab_followon_zoledronic_min_months")
    in_time = [d for d in after if months_between(last, d.start) >= min_gap]
    oral = [o for o in facts.therapies.values() if o.drug_class == "oral_bisphosphonate" and o.on_therapy
            and o.first and o.first >= last]
    if in_time or oral:
        return []  # the hand-over is made (ECTS 2021)
    if after:
        return [_m("denosumab-early-zoledronic", "warning",
                   TherapyFinding("denosumab-early-zoledronic", t, last_dose=last, early=after[0],
                                  months=months_between(last, after[0].start)), guidelines)]
    months = months_between(last, facts.as_of)
    f = TherapyFinding(
        "", t, last_dose=last, due=months_after(last, interval), months=months,
        holds=tuple(f.message for f in found if f.kind == "contraindication" and "denosumab" in f.blocks),
        all_blocked=not follow_on,
        anabolics=tuple(a.label for a in interp.active_therapies if a.drug_class.startswith("anabolic")))
    state.suppress_plan = state.suppress_plan or "denosumab"
    assert f.due is not None
    if t.stopped_on is not None and not t.current:
        return [_m("denosumab-stopping", "critical" if months > overdue else "warning",
                   replace(f, kind="denosumab-stopping"), guidelines, suggest=follow_on or ["denosumab"],
                   suggest_from=f.due if follow_on else None)]
    if months > overdue:
        return [_m("denosumab-overdue", "critical", replace(f, kind="denosumab-overdue"), guidelines, suggest=follow_on,
                   continue_drug="denosumab", held=bool(f.holds), dose_order=not f.holds)]
    if months >= interval:
        return [_m("denosumab-due", "warning", replace(f, kind="denosumab-due"), guidelines, suggest=follow_on,
                   continue_drug="denosumab", held=bool(f.holds), dose_order=not f.holds)]
    if t.on_therapy:
        state.suppress_plan = state.suppress_plan if state.suppress_plan != "denosumab" else None
        return [_m("denosumab-due", "info", replace(f, kind="denosumab-on-schedule"), guidelines,
                   continue_drug="denosumab", dose_order=False)]
    return []


def _bisphosphonates(interp: Interpretation, facts: Facts, k: Knowledge, state: TherapyState, stopping: set[str],
                     blocked: set[str], in_review: set[str]) -> list[Management]:
    h = state.holiday
    out: list[Management] = []
    bis = [t for t in interp.active_therapies if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate")]
    g = ["ASBMR-2016", "ES-2019"]
    if h is not None:
        held = any(t.drug in stopping or t.drug in in_review for t in bis)
        first = bis[0] if bis else next(t for t in facts.therapies.values()
                                        if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate"))
        base = TherapyFinding("", first, holiday=h)
        if h.state == "advise" and not held:
            low = min(_hip_scores(interp, k), key=lambda s: s.value)
            out.append(_m("drug-holiday", "info", replace(base, kind="drug-holiday", low_hip=low), g))
        elif h.state == "continue" and bis and not held:
            iv = any(t.mode == "dose" for t in bis)
            top = _n(k, "iv_bisphosphonate_max_years" if iv else "oral_bisphosphonate_max_years")
            out.append(_m("continue-bisphosphonate", "info",
                          replace(base, kind="continue-bisphosphonate", top_years=top, iv=iv), g,
                          continue_drug=bis[0].drug if h.years < top else None))
        elif h.state == "in_progress":
            assert h.since is not None
            state.suppress_plan = state.suppress_plan or "holiday"
            out.append(_m("drug-holiday-in-progress", "info", replace(
                base, kind="drug-holiday-in-progress", due=months_after(h.since, _n(k, "holiday_dxa_years") * 12)), g))
        elif h.state == "reassess":
            if not h.ends_holiday:
                state.suppress_plan = state.suppress_plan or "holiday"
            out.append(_m("drug-holiday-reassess", "warning", replace(base, kind="drug-holiday-reassess"), g))
        elif h.state == "not_advised":
            state.history.append(f"bisphosphonate stopped {h.since.isoformat() if h.since else ''} after "
                                 f"{h.years:.1f} years: a drug holiday is not advised ({'; '.join(h.reasons)}); "
                                 "resume or switch")
    # a yearly or 3-monthly infusion whose next dose is due, when no holiday is in question: give it
    days = int(_n(k, "iv_dose_creatinine_days"))
    carded: set[str] = set()
    for t in interp.due_therapies:
        if not _infused(t, k) or t.drug in stopping:
            continue
        if h is not None and h.state in ("advise", "in_progress", "reassess"):
            continue
        assert t.last_dose is not None and t.covered_until is not None
        creatinine = _recent_creatinine(facts, days)
        carded.add(t.drug)
        out.append(_m("dose-due", "info", TherapyFinding("dose-due", t, last_dose=t.last_dose,
                                                         due=add_days(t.covered_until, 1),
                                                         creatinine=creatinine),
                      ["LABELS", "ES-2019"], continue_drug=t.drug, dose_order=t.drug in k.treatment["regimens"],
                      lab_loinc=None if creatinine else _creatinine_loinc(k)))
    # zoledronic acid and IV ibandronate: a creatinine before each dose (rules §6.1)
    for t in facts.therapies.values():
        if t.mode != "dose" or not _infused(t, k) or t.drug in carded:
            continue
        if h is not None and h.state in ("advise", "in_progress"):
            continue  # a holiday is advised: no next dose to prepare for
        if t.last_dose is None or t.drug in stopping:
            continue
        due = add_days(max(d.end for d in t.doses), 1) if t.doses else None
        if due is None:
            continue
        if not t.on_therapy and (facts.as_of - due).days > _n(k, "iv_dose_past_days"):
            continue  # long past: not a dose being prepared
        if (due - facts.as_of).days > days:
            continue
        if _recent_creatinine(facts, days):
            continue
        out.append(_m("iv-dose-creatinine", "info", TherapyFinding("iv-dose-creatinine", t, due=due), ["LABELS"],
                      lab_loinc=_creatinine_loinc(k)))
    return out


def _recent_creatinine(facts: Facts, days: int) -> str | None:
    recent = [x for a in ("creatinine", "egfr") for x in facts.labs.get(a, []) if 0 <= (facts.as_of - x.date).days <= days]
    if not recent:
        return None
    x = max(recent, key=lambda x: x.date)
    return f"{x.label} {x.original} on {x.date.isoformat()} ({x.resource})"


def _anabolics(interp: Interpretation, facts: Facts, k: Knowledge, state: TherapyState,
               blocked: set[str], stopping: set[str]) -> list[Management]:
    out: list[Management] = []
    antiresorptives = [d for d in k.management("after_anabolic") if d not in blocked]
    anti_classes = set(k.treatment["orders"]["antiresorptive_classes"])
    followon = _n(k, "anabolic_followon_months")
    g = ["ACR-2022", "ES-2019", "AACE-2020", "LABELS"]
    anti = [t for t in facts.therapies.values() if t.drug_class in anti_classes]
    romo_limit = int(_n(k, "romosozumab_max_doses"))
    pth_months = sum(x.cumulative_months for x in facts.therapies.values() if x.drug_class == "anabolic_pth")
    for t in facts.therapies.values():
        if t.drug_class not in ("anabolic_pth", "anabolic_sclerostin") or not t.exposures:
            continue
        f = TherapyFinding("", t, pth_months=pth_months if t.drug_class == "anabolic_pth" else None)
        if t.on_therapy and t.drug in stopping:
            # a contraindication stops it mid-course: the course ends now, and an antiresorptive follows (rules §6.1)
            state.suppress_plan = state.suppress_plan or "anabolic"
            out.append(_m("anabolic-stopping", "critical", replace(f, kind="anabolic-stopping"), g,
                          suggest=antiresorptives))
            continue
        if t.on_therapy:
            if t.drug_class == "anabolic_pth" and pth_months >= _n(k, "pth_analog_max_months") or \
                    t.drug_class == "anabolic_sclerostin" and len(t.doses) >= romo_limit:
                out.append(_m("anabolic-complete", "warning", replace(f, kind="anabolic-complete"), g,
                              suggest=antiresorptives))
            continue
        end, start = t.ended, t.first
        if end is None or start is None:
            continue
        began = [a for a in anti if a.first and start <= a.first <= months_after(end, followon)]
        if began or any(a.on_therapy for a in anti):
            continue
        state.suppress_plan = state.suppress_plan or "anabolic"
        complete = None
        if t.drug_class == "anabolic_sclerostin" and len(t.doses) >= romo_limit:
            complete = f"Course complete: {len(t.doses)} of {romo_limit} monthly doses given."
        elif t.drug_class == "anabolic_pth":
            complete = state.course_notes.get(t.drug, [None])[0]
        out.append(_m("anabolic-ended", "warning", replace(
            f, kind="anabolic-ended", complete=complete,
            never_again=state.never_offer.get("romosozumab") if t.drug == "romosozumab" else None), g,
            suggest=antiresorptives))
    return out


def _records_to_confirm(interp: Interpretation, facts: Facts, k: Knowledge) -> list[Management]:
    """What the records leave uncertain (rules §6.1): on hold, ordered with no supply, a statement with
    nothing behind it, not taken, a stopped administration, an assumed supply."""
    out = []
    for t in facts.therapies.values():
        if t.drug_class not in k.therapy_classes:
            continue
        items: list[tuple[str, str, bool]] = []  # (what, why, a warning): the card builder words them
        if t.no_supply_since is not None:
            items.append(("no-supply", t.no_supply_since.isoformat(), True))
        if t.on_hold_since is not None and not t.on_therapy:
            items.append(("on-hold", t.on_hold_since.isoformat(), False))
        if t.unverified:
            asserted = t.unverified[0].asserted or t.unverified[0].start
            items.append(("unverified", asserted.isoformat() if asserted else "?", False))
        if t.not_taken is not None:
            items.append(("not-taken", t.not_taken.resource, True))
        for note in t.notes:
            if note == DOSE_UNCERTAIN:
                items.append(("dose-uncertain", "", True))
            elif note == SUPPLY_ASSUMED:
                items.append(("supply-assumed", str(int(facts_rules(k)["dispense_default_days"]["value"])), False))
        if not items:
            continue
        out.append(_m("records-to-confirm", "warning" if any(w for _, _, w in items) else "info",
                      TherapyFinding("records-to-confirm", t, items=tuple(items)), ["LABELS"]))
    return out
