"""Therapy management from the timelines (rules §6.1): denosumab dose timing and its end, bisphosphonate
drug holidays, anabolic courses, records to confirm, and the creatinine before an IV dose.

Pure functions: Interpretation + Facts + Knowledge + findings → structured results (``Management``
for the cards, and ``TherapyState`` for the treatment plan). Every number comes from the knowledge
files (treatment.yaml ``numbers``, medications.yaml ``therapy``); card builders word the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from ..knowledge import Knowledge
from .facts.model import DOSE_UNCERTAIN, SUPPLY_ASSUMED
from .facts import DAYS_PER_MONTH, Facts, Therapy, months_after, months_between, years_between
from .interpretation import Interpretation, fmt

if TYPE_CHECKING:
    from .advice import Finding, Management

HIP_SITES = ("total_hip", "femoral_neck")


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
        for d in ("teriparatide", "abaloparatide"):
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


def _hip_scores(interp: Interpretation):
    exam = interp.exam
    return [s for s in exam.scores if s.kind == "t_score" and s.site in HIP_SITES] if exam else []


def _holiday(interp: Interpretation, facts: Facts, k: Knowledge) -> Holiday | None:
    bis = [t for t in facts.therapies.values() if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate")]
    if not bis:
        return None
    oral_days = sum(t.cumulative_days for t in bis if t.mode == "continuous")
    oral_years = oral_days / 365.25
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
    hips = _hip_scores(interp)
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


def manage_therapies(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding], state: TherapyState,
                     stopping: set[str], blocked: set[str], in_review: set[str]) -> list[Management]:
    from .advice import Management

    out: list[Management] = []
    out += _denosumab(interp, facts, k, found, state, stopping, blocked)
    out += _bisphosphonates(interp, facts, k, state, stopping, blocked, in_review)
    out += _anabolics(interp, facts, k, state, blocked, stopping)
    out += _records_to_confirm(interp, facts, k)
    return out


def _denosumab(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding], state: TherapyState,
               stopping: set[str], blocked: set[str]) -> list[Management]:
    """Rules §6.1 (ECTS 2021, Prolia label): dose timing while on it; when it ends, the follow-on."""
    from .advice import Management

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
        return [Management(
            "denosumab-unknown-last-dose", "warning",
            f"On denosumab, but the date of the last dose is not recorded: confirm it (due every {interval:g} months)",
            [f"Records: {t.describe()}.",
             f"Denosumab must be given every {interval:g} months; a dose more than {overdue:g} months late risks "
             "rebound vertebral fractures. Do not stop it without a follow-on bisphosphonate."],
            guidelines, continue_drug="denosumab")]
    # what came after the last dose: zoledronic acid, or an oral bisphosphonate covering now
    zol = facts.therapies.get("zoledronic_acid")
    after = [d for d in (zol.doses if zol else ()) if d.start > last]
    min_gap = _n(k, "denosumab_followon_zoledronic_min_months")
    in_time = [d for d in after if months_between(last, d.start) >= min_gap]
    oral = [o for o in facts.therapies.values() if o.drug_class == "oral_bisphosphonate" and o.on_therapy
            and o.first and o.first >= last]
    line = f"Denosumab: {t.describe()}."
    if in_time or oral:
        return []  # the hand-over is made (ECTS 2021)
    if after:
        d = after[0]
        return [Management(
            "denosumab-early-zoledronic", "warning",
            f"Zoledronic acid {months_between(last, d.start):.1f} months after the last denosumab dose: check CTX at 3 and 6 months",
            [line, f"Zoledronic acid was given {d.start.isoformat()} ({', '.join(d.resources)}), less than "
             f"{min_gap:g} months after the last denosumab dose ({last.isoformat()}): given early it may not hold the "
             "rebound. Check bone turnover (CTX) 3 and 6 months after the infusion and repeat zoledronic acid if it is "
             "high (ECTS 2021)."], guidelines)]
    months = months_between(last, facts.as_of)
    due = months_after(last, interval)
    timing = f"Last dose {last.isoformat()} ({months:.1f} months ago); next dose due {due.isoformat()}."
    holds = [f.message for f in found if f.kind == "contraindication" and "denosumab" in f.blocks]
    stopped = t.stopped_on is not None and not t.current
    all_blocked = not follow_on
    anabolics = [a.label for a in interp.active_therapies if a.drug_class.startswith("anabolic")]
    anabolic_note = (f" {', '.join(anabolics).capitalize()} being taken does not hold the rebound (ECTS 2021): it does "
                     "not replace the denosumab dose or the bisphosphonate.") if anabolics else ""
    resume = " Every bisphosphonate is contraindicated: resume denosumab or refer to a bone specialist." \
        if all_blocked else ""
    state.suppress_plan = state.suppress_plan or "denosumab"
    if stopped:
        indicator = "critical" if months > overdue else "warning"
        return [Management(
            "denosumab-stopping", indicator,
            (f"Denosumab stopped ({t.stopped_on.isoformat()}), last dose {months:.1f} months ago: "  # type: ignore[union-attr]
             + ("resume it or refer" if all_blocked else
                f"a bisphosphonate from {due.isoformat()}, before the rebound" if due > facts.as_of
                else "start a bisphosphonate now, before the rebound")),
            [line, timing, f"A record says denosumab was stopped ({t.stopped_on.isoformat()}). Stopping denosumab without "  # type: ignore[union-attr]
             "a follow-on bisphosphonate causes rapid bone loss and multiple vertebral fractures: give zoledronic acid "
             f"about {interval:g} months after the last dose (ECTS 2021), or start alendronate then." + resume
             + (f" More than {overdue:g} months have passed: act now." if months > overdue else "")],
            guidelines, suggest=follow_on or ["denosumab"], suggest_from=due if follow_on else None)]
    if months > overdue:
        give = (f"Correct first: {'; '.join(holds)}; then give the dose without further delay." if holds
                else "Give the dose now.")
        return [Management(
            "denosumab-overdue", "critical",
            f"Denosumab dose overdue: last dose {months:.1f} months ago; "
            + ("correct what blocks it, then give it" + ("" if all_blocked else " or start a bisphosphonate") if holds
               else "give it now" + (" (bisphosphonates contraindicated)" if all_blocked else " or start a bisphosphonate")),
            [timing, f"More than {overdue:g} months since the last dose: bone loss rebounds and multiple vertebral "
             f"fractures can follow. {give} If denosumab is to end, start a bisphosphonate "
             "(zoledronic acid or alendronate) now; do not simply stop." + resume + anabolic_note],
            guidelines, suggest=follow_on, continue_drug="denosumab", held=bool(holds), dose_order=not holds)]
    if months >= interval:
        return [Management(
            "denosumab-due", "warning",
            f"Denosumab dose due now: last dose {months:.1f} months ago (due {due.isoformat()}); give it"
            + (" (bisphosphonates contraindicated)" if all_blocked else " or start a bisphosphonate"),
            [timing, f"The dose is due; after {overdue:g} months bone loss rebounds (multiple vertebral fractures). "
             "Give it now, or if denosumab is to end, start a bisphosphonate now; do not simply stop." + resume
             + anabolic_note],
            guidelines, suggest=follow_on, continue_drug="denosumab", held=bool(holds), dose_order=not holds)]
    if t.on_therapy:
        state.suppress_plan = state.suppress_plan if state.suppress_plan != "denosumab" else None
        return [Management(
            "denosumab-due", "info", f"On denosumab: next dose due {due.isoformat()}; do not stop without a bisphosphonate",
            [timing, "Do not stop or delay denosumab without a follow-on bisphosphonate (rebound vertebral fractures)."],
            guidelines, continue_drug="denosumab", dose_order=False)]
    return []


def _bisphosphonates(interp: Interpretation, facts: Facts, k: Knowledge, state: TherapyState, stopping: set[str],
                     blocked: set[str], in_review: set[str]) -> list[Management]:
    from .advice import Management

    h = state.holiday
    out: list[Management] = []
    bis = [t for t in interp.active_therapies if t.drug_class in ("oral_bisphosphonate", "iv_bisphosphonate")]
    g = ["ASBMR-2016", "ES-2019"]
    if h is not None:
        head = (f"{h.drugs}: {h.years:.1f} years of bisphosphonate treatment in all (oral: months covered; zoledronic "
                f"acid: yearly doses given): {'; '.join(h.records)}.")
        if h.state == "advise" and not any(t.drug in stopping or t.drug in in_review for t in bis):
            low = min(_hip_scores(interp), key=lambda s: s.value)
            out.append(Management(
                "drug-holiday", "info",
                f"Consider a bisphosphonate drug holiday: {h.drugs}, {h.years:.1f} years; hip T-score {fmt(low.value)}, no fracture on therapy",
                [head, f"Hip T-score {fmt(low.value)} at the {low.site_label} ({low.date.isoformat()}) is above "
                 f"{fmt(float(k.threshold('t_score_osteoporosis_max')))}, no fracture on therapy is recorded and risk is "
                 f"not very high: consider a drug holiday and reassess with DXA at {_n(k, 'holiday_dxa_years'):g} years "
                 f"({k.number('holiday_reassess')})."], g))
        elif h.state == "continue" and bis and not any(t.drug in stopping or t.drug in in_review for t in bis):
            iv = any(t.mode == "dose" for t in bis)
            top = _n(k, "iv_bisphosphonate_max_years" if iv else "oral_bisphosphonate_max_years")
            what = (f"continue (up to {top:g} years {'IV' if iv else 'oral'}) or switch" if h.years < top
                    else f"{top:g} years reached: switch (e.g. to denosumab or an anabolic) or reassess with a specialist")
            out.append(Management(
                "continue-bisphosphonate", "info",
                f"Continue {h.drugs} ({h.years:.1f} years): a drug holiday is not advised" if h.years < top
                else f"{h.drugs.capitalize()} for {h.years:.1f} years: switch or reassess; a drug holiday is not advised",
                [head, "A drug holiday is not advised: " + "; ".join(h.reasons) + f". Advice: {what} (ASBMR 2016, ES-2019)."],
                g, continue_drug=bis[0].drug if h.years < top else None))
        elif h.state == "in_progress":
            assert h.since is not None
            dxa = months_after(h.since, _n(k, "holiday_dxa_years") * 12)
            state.suppress_plan = state.suppress_plan or "holiday"
            out.append(Management(
                "drug-holiday-in-progress", "info",
                f"On a bisphosphonate drug holiday since {h.since.isoformat()}; reassess with DXA at "
                f"{_n(k, 'holiday_dxa_years'):g} years ({dxa.isoformat()})",
                [head, f"The last dose stopped covering on {h.since.isoformat()}; the latest DXA and the record show no "
                 "reason to restart. Reassess with DXA at "
                 f"{_n(k, 'holiday_dxa_years'):g} years, sooner after a new fracture. This is a holiday, not untreated "
                 "osteoporosis: no new bisphosphonate is offered meanwhile."], g))
        elif h.state == "reassess":
            if not h.ends_holiday:
                state.suppress_plan = state.suppress_plan or "holiday"
            out.append(Management(
                "drug-holiday-reassess", "warning",
                f"Drug holiday since {h.since.isoformat() if h.since else '?'}: reassess now ({h.reasons[0]})",
                [head, "Reassess now: " + "; ".join(h.reasons) + ". "
                 + ("The holiday has ended: restart treatment (options on the treatment card)." if h.ends_holiday
                    else "Repeat DXA and review fracture risk; restart a bisphosphonate or another drug if it has risen.")],
                g))
        elif h.state == "not_advised":
            state.history.append(f"bisphosphonate stopped {h.since.isoformat() if h.since else ''} after "
                                 f"{h.years:.1f} years: a drug holiday is not advised ({'; '.join(h.reasons)}); "
                                 "resume or switch")
    # a yearly or 3-monthly infusion whose next dose is due, when no holiday is in question: give it
    days = int(_n(k, "iv_dose_creatinine_days"))
    carded: set[str] = set()
    for t in interp.due_therapies:
        if t.drug_class != "iv_bisphosphonate" and t.drug != "ibandronate" or t.drug in stopping:
            continue
        if h is not None and h.state in ("advise", "in_progress", "reassess"):
            continue
        last = t.last_dose
        assert last is not None and t.covered_until is not None
        due = t.covered_until + timedelta(days=1)
        creatinine = _recent_creatinine(facts, days)
        carded.add(t.drug)
        out.append(Management(
            "dose-due", "info",
            f"{t.label.capitalize()} next dose due {due.isoformat()} (last {last.isoformat()}): give it"
            + ("" if creatinine else f"; creatinine first (none in {days} days)"),
            [f"{t.describe()}.", f"The last dose covered to {t.covered_until.isoformat()}; the course continues with the "
             "next dose. " + (f"Creatinine: {creatinine}." if creatinine else
                              f"A creatinine within {days} days before each dose is needed (labels); none is on record.")],
            ["LABELS", "ES-2019"], continue_drug=t.drug, dose_order=t.drug in k.treatment["regimens"],
            lab_loinc=None if creatinine else "2160-0"))
    # zoledronic acid and IV ibandronate: a creatinine before each dose (rules §6.1)
    for t in facts.therapies.values():
        if t.mode != "dose" or t.drug_class != "iv_bisphosphonate" and t.drug != "ibandronate" or t.drug in carded:
            continue
        if h is not None and h.state in ("advise", "in_progress"):
            continue  # a holiday is advised: no next dose to prepare for
        last = t.last_dose
        if last is None or t.drug in stopping:
            continue
        due = t.exposures[-1].end + timedelta(days=1)
        if not t.on_therapy and (facts.as_of - due).days > 90:
            continue  # long past: not a dose being prepared
        if (due - facts.as_of).days > days:
            continue
        if _recent_creatinine(facts, days):
            continue
        out.append(Management(
            "iv-dose-creatinine", "info",
            f"{t.label.capitalize()} dose due {due.isoformat()}: check creatinine first (none in the last {days} days)",
            [f"{t.describe()}.", f"The next dose is due {due.isoformat()}; a creatinine within {days} days before each "
             "dose is needed (labels: renal toxicity, no dose below a clearance of 35 mL/min)."], ["LABELS"],
            lab_loinc="2160-0"))
    return out


def _recent_creatinine(facts: Facts, days: int) -> str | None:
    recent = [x for a in ("creatinine", "egfr") for x in facts.labs.get(a, []) if 0 <= (facts.as_of - x.date).days <= days]
    if not recent:
        return None
    x = max(recent, key=lambda x: x.date)
    return f"{x.label} {x.original} on {x.date.isoformat()} ({x.resource})"


def _anabolics(interp: Interpretation, facts: Facts, k: Knowledge, state: TherapyState,
               blocked: set[str], stopping: set[str] = frozenset()) -> list[Management]:  # type: ignore[assignment]
    from .advice import Management

    out: list[Management] = []
    antiresorptives = [d for d in k.management("after_anabolic") if d not in blocked]
    anti_classes = set(k.treatment["orders"]["antiresorptive_classes"])
    followon = _n(k, "anabolic_followon_months")
    g = ["ACR-2022", "ES-2019", "AACE-2020", "LABELS"]
    anti = [t for t in facts.therapies.values() if t.drug_class in anti_classes]
    for t in facts.therapies.values():
        if t.drug_class not in ("anabolic_pth", "anabolic_sclerostin") or not t.exposures:
            continue
        if t.on_therapy and t.drug in stopping:
            # a contraindication stops it mid-course: the course ends now, and an antiresorptive follows (rules §6.1)
            state.suppress_plan = state.suppress_plan or "anabolic"
            out.append(Management(
                "anabolic-stopping", "critical",
                f"{t.label.capitalize()} is contraindicated and is to stop: start an antiresorptive now",
                [f"{t.describe()}.", "A contraindication applies to it now (safety card): stop it. An anabolic course that "
                 f"ends, whatever its length, is followed by an antiresorptive within {followon:g} months, or the bone "
                 "gained is lost (ACR 2022, ES-2019)."], g, suggest=antiresorptives))
            continue
        if t.on_therapy:
            if t.drug_class == "anabolic_pth":
                months = sum(x.cumulative_months for x in facts.therapies.values() if x.drug_class == "anabolic_pth")
                limit = _n(k, "pth_analog_max_months")
                if months >= limit:
                    out.append(Management(
                        "anabolic-complete", "warning",
                        f"Teriparatide/abaloparatide for {months:.0f} months: course complete ({limit:g} months), "
                        "transition to an antiresorptive",
                        [f"{t.describe()}; {months:.0f} months in a lifetime (teriparatide and abaloparatide summed).",
                         k.treatment["courses"]["pth_beyond_limit"]["value"],
                         "Follow with an antiresorptive without a gap to keep the gain."], g, suggest=antiresorptives))
            elif len(t.doses) >= int(_n(k, "romosozumab_max_doses")):
                limit = int(_n(k, "romosozumab_max_doses"))
                out.append(Management(
                    "anabolic-complete", "warning",
                    f"Romosozumab course complete ({len(t.doses)} of {limit} monthly doses): transition to an antiresorptive",
                    [f"{t.describe()}; romosozumab is given for {limit} doses, then an antiresorptive."], g,
                    suggest=antiresorptives))
            continue
        end = t.ended
        start = t.first
        if end is None or start is None:
            continue
        began = [a for a in anti if a.first and start <= a.first <= months_after(end, followon)]
        if began or any(a.on_therapy for a in anti):
            continue
        state.suppress_plan = state.suppress_plan or "anabolic"
        complete = ""
        if t.drug_class == "anabolic_sclerostin" and len(t.doses) >= int(_n(k, "romosozumab_max_doses")):
            complete = f"Course complete: {len(t.doses)} of {int(_n(k, 'romosozumab_max_doses'))} monthly doses given."
        elif t.drug_class == "anabolic_pth":
            complete = state.course_notes.get(t.drug, [""])[0]
        out.append(Management(
            "anabolic-ended", "warning",
            f"{t.label.capitalize()} course ended {end.isoformat()} with no antiresorptive: start an antiresorptive now",
            [f"{t.period_text()} ({t.describe()}).", *([complete] if complete else []),
             f"No antiresorptive was started within {followon:g} months of the end of the anabolic course: the bone "
             "gained is lost without one. Start an antiresorptive now (ACR 2022, ES-2019)."]
            + ([state.never_offer["romosozumab"].capitalize() + "."] if t.drug == "romosozumab"
               and "romosozumab" in state.never_offer else []),
            g, suggest=antiresorptives))
    return out


def _records_to_confirm(interp: Interpretation, facts: Facts, k: Knowledge) -> list[Management]:
    """What the records leave uncertain (rules §6.1): on hold, ordered with no supply, a statement with
    nothing behind it, a stopped administration, an assumed supply."""
    from .advice import Management

    out = []
    for t in facts.therapies.values():
        if t.drug_class not in k.therapy_classes:
            continue
        found: list[tuple[str, str, bool]] = []  # (what, the whole line, a warning)
        if t.no_supply_since is not None:
            found.append((f"ordered, no supply since {t.no_supply_since.isoformat()}",
                          "no fill or administration within the order's supply and 60 days: check adherence and "
                          "whether it is still being taken", True))
        if t.on_hold_since is not None and not t.on_therapy:
            found.append((f"order on hold since {t.on_hold_since.isoformat()}", "not counted as current therapy",
                          False))
        if t.unverified:
            asserted = t.unverified[0].asserted or t.unverified[0].start
            found.append((f"unverified (reported {asserted.isoformat() if asserted else '?'}, no order or fill since)",
                          "a statement with no order, fill or administration behind it: confirm with the patient",
                          False))
        if t.not_taken is not None:
            found.append(("the patient is not taking it", f"statement {t.not_taken.resource} "
                          f"({t.not_taken.start.isoformat() if t.not_taken.start else '?'}) although an order was "
                          "active: review the order", True))
        for note in t.notes:
            if note == DOSE_UNCERTAIN:
                found.append((note, "an administration was stopped: the dose may have been partly given; confirm "
                                    "how much was given", True))
            elif note == SUPPLY_ASSUMED:
                days = int(facts_rules(k)["dispense_default_days"]["value"])
                found.append((note, f"{days} days: a fill gives no days' supply or countable quantity", False))
        if not found:
            continue
        lines = [f"{t.label}: {what}" + (f" ({why})" if why != what else "") for what, why, _ in found]
        out.append(Management(
            "records-to-confirm", "warning" if any(w for _, _, w in found) else "info",
            f"{t.label.capitalize()} record to confirm: {found[0][0]}",
            lines + [f"Records: {t.describe()}."], ["LABELS"]))
    return out
