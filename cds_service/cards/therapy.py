"""Words for the therapy-management findings of rules §6.1 (clinical/therapy_rules.py ``TherapyFinding``):
a summary that puts what matters first, and the detail lines with the records, dates and guideline.
The numbers come from the knowledge files, as the rules read them."""
from __future__ import annotations

from typing import Any, Callable

from ..clinical.interpretation import fmt
from ..knowledge import Knowledge
from . import fit


def words(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    """(summary, lines) of a TherapyFinding."""
    return _WORDS[f.kind](f, k)


def _n(k: Knowledge, key: str) -> float:
    return float(k.number(key))


# -- denosumab (ECTS 2021, ES-2019, Prolia label) ------------------------------------------------------
def _dmab_unknown(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    interval, overdue = _n(k, "denosumab_interval_months"), _n(k, "denosumab_overdue_months")
    return (f"On denosumab, but the date of the last dose is not recorded: confirm it (due every {interval:g} months)",
            [f"Records: {f.therapy.describe()}.",
             f"Denosumab must be given every {interval:g} months; a dose more than {overdue:g} months late risks "
             "rebound vertebral fractures. Do not stop it without a follow-on bisphosphonate."])


def _dmab_early(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    d, min_gap = f.early, _n(k, "denosumab_followon_zoledronic_min_months")
    return (f"Zoledronic acid {f.months:.1f} months after the last denosumab dose: check CTX at 3 and 6 months",
            [f"Denosumab: {f.therapy.describe()}.",
             f"Zoledronic acid was given {d.start.isoformat()} ({', '.join(d.resources)}), less than {min_gap:g} months "
             f"after the last denosumab dose ({f.last_dose.isoformat()}): given early it may not hold the rebound. Check "
             "bone turnover (CTX) 3 and 6 months after the infusion and repeat zoledronic acid if it is high (ECTS 2021)."])


def _dmab_notes(f: Any) -> tuple[str, str]:
    resume = " Every bisphosphonate is contraindicated: resume denosumab or refer to a bone specialist." \
        if f.all_blocked else ""
    anabolic = (f" {', '.join(f.anabolics).capitalize()} being taken does not hold the rebound (ECTS 2021): it does "
                "not replace the denosumab dose or the bisphosphonate.") if f.anabolics else ""
    return resume, anabolic


def _timing(f: Any) -> str:
    return f"Last dose {f.last_dose.isoformat()} ({f.months:.1f} months ago); next dose due {f.due.isoformat()}."


def _dmab_stopping(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    interval, overdue = _n(k, "denosumab_interval_months"), _n(k, "denosumab_overdue_months")
    resume, _ = _dmab_notes(f)
    stopped = f.therapy.stopped_on.isoformat()
    then = ("resume it or refer" if f.all_blocked else
            f"a bisphosphonate from {f.due.isoformat()}, before the rebound" if f.due > f.therapy.as_of
            else "start a bisphosphonate now, before the rebound")
    return (f"Denosumab stopped ({stopped}), last dose {f.months:.1f} months ago: {then}",
            [f"Denosumab: {f.therapy.describe()}.", _timing(f),
             f"A record says denosumab was stopped ({stopped}). Stopping denosumab without a follow-on bisphosphonate "
             "causes rapid bone loss and multiple vertebral fractures: give zoledronic acid about "
             f"{interval:g} months after the last dose (ECTS 2021), or start alendronate then." + resume
             + (f" More than {overdue:g} months have passed: act now." if f.months > overdue else "")])


def _dmab_overdue(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    overdue = _n(k, "denosumab_overdue_months")
    resume, anabolic = _dmab_notes(f)
    if f.holds:
        then = "correct what blocks it, then give it" + ("" if f.all_blocked else " or start a bisphosphonate")
        give = f"Correct first: {'; '.join(f.holds)}; then give the dose without further delay."
    else:
        then = "give it now" + (" (bisphosphonates contraindicated)" if f.all_blocked else " or start a bisphosphonate")
        give = "Give the dose now."
    return (f"Denosumab dose overdue: last dose {f.months:.1f} months ago; {then}",
            [_timing(f), f"More than {overdue:g} months since the last dose: bone loss rebounds and multiple vertebral "
             f"fractures can follow. {give} If denosumab is to end, start a bisphosphonate (zoledronic acid or "
             "alendronate) now; do not simply stop." + resume + anabolic])


def _dmab_due(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    overdue = _n(k, "denosumab_overdue_months")
    resume, anabolic = _dmab_notes(f)
    return (f"Denosumab dose due now: last dose {f.months:.1f} months ago (due {f.due.isoformat()}); give it"
            + (" (bisphosphonates contraindicated)" if f.all_blocked else " or start a bisphosphonate"),
            [_timing(f), f"The dose is due; after {overdue:g} months bone loss rebounds (multiple vertebral fractures). "
             "Give it now, or if denosumab is to end, start a bisphosphonate now; do not simply stop." + resume
             + anabolic])


def _dmab_on_schedule(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    return (f"On denosumab: next dose due {f.due.isoformat()}; do not stop without a bisphosphonate",
            [_timing(f), "Do not stop or delay denosumab without a follow-on bisphosphonate (rebound vertebral fractures)."])


# -- bisphosphonates (ASBMR 2016, ES-2019) -------------------------------------------------------------
def _head(f: Any) -> str:
    h = f.holiday
    return (f"{h.drugs}: {h.years:.1f} years of bisphosphonate treatment in all (oral: months covered; zoledronic acid: "
            f"yearly doses given): {'; '.join(h.records)}.")


def _holiday(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    h, low = f.holiday, f.low_hip
    t_cut = float(k.threshold("t_score_osteoporosis_max"))
    return (fit(f"Consider a bisphosphonate drug holiday: {h.drugs}, {h.years:.1f} years; hip T-score {fmt(low.value)}, "
                "no fracture on therapy",
                f"Consider a bisphosphonate drug holiday: {h.years:.1f} years of treatment; hip T-score {fmt(low.value)}, "
                "no fracture on therapy"),
            [_head(f), f"Hip T-score {fmt(low.value)} at the {low.site_label} ({low.date.isoformat()}) is above "
             f"{fmt(t_cut)}, no fracture on therapy is recorded and risk is not very high: consider a drug holiday and "
             f"reassess with DXA at {_n(k, 'holiday_dxa_years'):g} years ({k.number('holiday_reassess')})."])


def _continue(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    h, top = f.holiday, f.top_years
    what = (f"continue (up to {top:g} years {'IV' if f.iv else 'oral'}) or switch" if h.years < top
            else f"{top:g} years reached: switch (e.g. to denosumab or an anabolic) or reassess with a specialist")
    summary = (f"Continue {h.drugs} ({h.years:.1f} years): a drug holiday is not advised" if h.years < top
               else f"{h.drugs.capitalize()} for {h.years:.1f} years: switch or reassess; a drug holiday is not advised")
    return summary, [_head(f), "A drug holiday is not advised: " + "; ".join(h.reasons)
                     + f". Advice: {what} (ASBMR 2016, ES-2019)."]


def _holiday_in_progress(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    h, years = f.holiday, _n(k, "holiday_dxa_years")
    return (f"On a bisphosphonate drug holiday since {h.since.isoformat()}; reassess with DXA at {years:g} years "
            f"({f.due.isoformat()})",
            [_head(f), f"The last dose stopped covering on {h.since.isoformat()}; the latest DXA and the record show no "
             f"reason to restart. Reassess with DXA at {years:g} years, sooner after a new fracture. This is a holiday, "
             "not untreated osteoporosis: no new bisphosphonate is offered meanwhile."])


def _holiday_reassess(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    h = f.holiday
    since = h.since.isoformat() if h.since else "?"
    # the reason may quote a record's own text: when it does not fit, what to do comes first and the detail says why
    return (fit(f"Drug holiday since {since}: reassess now ({h.reasons[0]})",
                f"Drug holiday since {since} has ended: reassess now and restart treatment" if h.ends_holiday
                else f"Drug holiday since {since}: reassess now"),
            [_head(f), "Reassess now: " + "; ".join(h.reasons) + ". "
             + ("The holiday has ended: restart treatment (options on the treatment card)." if h.ends_holiday
                else "Repeat DXA and review fracture risk; restart a bisphosphonate or another drug if it has risen.")])


def _dose_due(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    days = int(_n(k, "iv_dose_creatinine_days"))
    t = f.therapy
    return (f"{t.label.capitalize()} next dose due {f.due.isoformat()} (last {f.last_dose.isoformat()}): give it"
            + ("" if f.creatinine else f"; creatinine first (none in {days} days)"),
            [f"{t.describe()}.", f"The last dose covered to {t.covered_until.isoformat()}; the course continues with the "
             "next dose. " + (f"Creatinine: {f.creatinine}." if f.creatinine else
                              f"A creatinine within {days} days before each dose is needed (labels); none is on record.")])


def _iv_creatinine(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    days = int(_n(k, "iv_dose_creatinine_days"))
    t = f.therapy
    return (f"{t.label.capitalize()} dose due {f.due.isoformat()}: check creatinine first (none in the last {days} days)",
            [f"{t.describe()}.", f"The next dose is due {f.due.isoformat()}; a creatinine within {days} days before each "
             f"dose is needed (labels: renal toxicity, no dose below a clearance of "
             f"{_n(k, 'egfr_no_alendronate_zoledronate'):g} mL/min)."])


# -- anabolic courses (ACR 2022, ES-2019, labels) ------------------------------------------------------
def _anabolic_stopping(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    t = f.therapy
    return (f"{t.label.capitalize()} is contraindicated and is to stop: start an antiresorptive now",
            [f"{t.describe()}.", "A contraindication applies to it now (safety card): stop it. An anabolic course that "
             f"ends, whatever its length, is followed by an antiresorptive within {_n(k, 'anabolic_followon_months'):g} "
             "months, or the bone gained is lost (ACR 2022, ES-2019)."])


def _anabolic_complete(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    t = f.therapy
    if t.drug_class == "anabolic_pth":
        limit = _n(k, "pth_analog_max_months")
        return (f"Teriparatide/abaloparatide for {f.pth_months:.0f} months: course complete ({limit:g} months), "
                "transition to an antiresorptive",
                [f"{t.describe()}; {f.pth_months:.0f} months in a lifetime (teriparatide and abaloparatide summed).",
                 k.treatment["courses"]["pth_beyond_limit"]["value"],
                 "Follow with an antiresorptive without a gap to keep the gain."])
    limit = int(_n(k, "romosozumab_max_doses"))
    return (f"Romosozumab course complete ({len(t.doses)} of {limit} monthly doses): transition to an antiresorptive",
            [f"{t.describe()}; romosozumab is given for {limit} doses, then an antiresorptive."])


def _anabolic_ended(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    t = f.therapy
    lines = [f"{t.period_text()} ({t.describe()})."]
    if f.complete:
        lines.append(f.complete)
    lines.append(f"No antiresorptive was started within {_n(k, 'anabolic_followon_months'):g} months of the end of the "
                 "anabolic course: the bone gained is lost without one. Start an antiresorptive now (ACR 2022, ES-2019).")
    if f.never_again:
        lines.append(f.never_again[0].upper() + f.never_again[1:] + ".")
    return f"{t.label.capitalize()} course ended {t.ended.isoformat()} with no antiresorptive: start an antiresorptive now", lines


# -- records to confirm (rules §6.1) ---------------------------------------------------------------------
def _record_item(kind: str, value: str, k: Knowledge) -> tuple[str, str]:
    """(the short words for the summary, the whole line)"""
    if kind == "no-supply":
        grace = k.raw["medications"]["therapy"]["no_supply_days"]["value"]
        return (f"ordered, no supply since {value}", f"no fill or administration within the order's supply and {grace} "
                "days: check adherence and whether it is still being taken")
    if kind == "on-hold":
        return f"order on hold since {value}", "not counted as current therapy"
    if kind == "unverified":
        return (f"unverified (reported {value}, no order or fill since)",
                "a statement with no order, fill or administration behind it: confirm with the patient")
    if kind == "not-taken":
        return "the patient is not taking it", f"statement {value}, although an order is active: review the order"
    if kind == "dose-uncertain":
        return "dose uncertain", "an administration was stopped: the dose may have been partly given; confirm how much"
    return "supply assumed", f"{value} days: a fill gives no days' supply or countable quantity"


def _records(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    t = f.therapy
    worded = [_record_item(kind, value, k) for kind, value, _ in f.items]
    return (f"{t.label.capitalize()} record to confirm: {worded[0][0]}",
            [f"{t.label}: {what} ({why})" for what, why in worded] + [f"Records: {t.describe()}."])


# -- fractures on therapy (rules §6.3; IOF 2012, AACE-2020, ASBMR 2014) -----------------------------------
def _fracture_line(f: Any, m: Any) -> str:
    return (f"{f.site_label} fracture {f.when}: {f.display} ({', '.join(r.fact.resource for r in f.records)}), "
            f"while on {m.display} ({m.resource}{', since ' + m.start.isoformat() if m.start else ''}).")


def _atypical(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    fracture, m = f.fractures[0]
    return (f"Femoral fracture on {m.label}: review for an atypical femoral fracture",
            [_fracture_line(fracture, m),
             "A subtrochanteric or femoral shaft fracture on an antiresorptive may be an atypical femoral fracture: "
             "review the radiographs against the ASBMR case definition, image the other femur, and do not treat it "
             "as treatment failure until it is excluded."])


def _fracture_on_therapy(f: Any, k: Knowledge) -> tuple[str, list[str]]:
    pairs, minimum = f.fractures, k.fracture_rules.treatment_failure_min
    lines = [_fracture_line(fracture, m) for fracture, m in pairs]
    drugs = ", ".join(dict.fromkeys(m.label for _, m in pairs))
    if len(pairs) >= minimum:
        lines.append(f"{len(pairs)} fragility fractures on therapy: treatment failure (IOF 2012: {minimum} or more). "
                     "Check adherence and administration, look for secondary causes (labs), and consider anabolic "
                     "therapy.")
        return (fit(f"Treatment failure: {len(pairs)} fractures on {drugs}; review adherence, secondary causes, consider "
                    "anabolic therapy",
                    f"Treatment failure: {len(pairs)} fractures on therapy; review adherence, secondary causes, consider "
                    "anabolic therapy"), lines)
    fracture, _ = pairs[0]
    lines.append("Ask about adherence and how the drug is taken, and look for secondary causes (labs). One fracture on "
                 f"therapy is not by itself treatment failure (IOF 2012: {minimum} or more fractures); it is very high "
                 "risk (AACE-2020): consider anabolic therapy.")
    return fit(f"Fracture on {drugs}: {fracture.site_label} fracture {fracture.when}; check adherence and secondary causes",
               f"Fracture on therapy: {fracture.site_label} fracture {fracture.when}; check adherence and secondary causes"), lines


_WORDS: dict[str, Callable[[Any, Knowledge], tuple[str, list[str]]]] = {
    "denosumab-unknown-last-dose": _dmab_unknown, "denosumab-early-zoledronic": _dmab_early,
    "denosumab-stopping": _dmab_stopping, "denosumab-overdue": _dmab_overdue, "denosumab-due": _dmab_due,
    "denosumab-on-schedule": _dmab_on_schedule, "drug-holiday": _holiday, "continue-bisphosphonate": _continue,
    "drug-holiday-in-progress": _holiday_in_progress, "drug-holiday-reassess": _holiday_reassess,
    "dose-due": _dose_due, "iv-dose-creatinine": _iv_creatinine, "anabolic-stopping": _anabolic_stopping,
    "anabolic-complete": _anabolic_complete, "anabolic-ended": _anabolic_ended, "records-to-confirm": _records,
    "fracture-on-therapy": _fracture_on_therapy, "atypical-femoral-fracture-review": _atypical,
}
