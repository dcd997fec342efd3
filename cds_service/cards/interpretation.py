"""The bone density interpretation card (topic bmd-interpretation)."""
from __future__ import annotations

from typing import Any

from ..clinical.facts import Facts, Score
from ..clinical.interpretation import Interpretation, fmt
from ..knowledge import Knowledge
from . import card, fit

RISK_TEXT = {
    "very_high": "very high fracture risk",
    "high": "high fracture risk",
    "frax_high": "treatment threshold met by FRAX",
    "frax_low": "FRAX below the treatment thresholds",
    "frax_needed": "FRAX needed to decide on treatment",
}


def _score_line(s: Score) -> str:
    kind = {"t_score": "T-score", "z_score": "Z-score", "bmd": "BMD"}[s.kind]
    side = f" ({s.laterality})" if s.laterality else ""
    unit = f" {s.unit}" if s.unit and s.kind == "bmd" else ""
    note = f" — {s.site_note}" if s.site_note else ""
    return f"- {kind} **{fmt(s.value)}**{unit} at the {s.site_label}{side}, {s.date.isoformat()} (LOINC {s.code}, {s.resource}){note}"


def _where(s: Score) -> str:
    return "site not stated" if s.site == "not_stated" else f"the {s.site_label.split(' (')[0]}"


def data_notes(facts: Facts) -> str:
    """What could not be read or was not used: shown on every card so nothing is dropped silently."""
    lines = []
    for key, why in facts.unavailable.items():
        lines.append(f"- **{key}** could not be read: {why}. Advice that depends on it may be incomplete.")
    for ig in facts.ignored:
        lines.append(f"- {ig.resource} not used: {ig.reason}.")
    return ("\n\n**Data not used or not available**\n\n" + "\n".join(lines)) if lines else ""


def interpretation_card(interp: Interpretation, facts: Facts, k: Knowledge,
                        therapy: Any = None) -> dict[str, Any] | None:
    """``therapy``: the TherapyState of the advice (rules §6.1), when known: a drug holiday in progress is a
    deliberate pause, not untreated osteoporosis."""
    d = interp.diagnosis
    if d == "no_dxa" and not interp.basis:
        return None
    treated = interp.treated
    therapy_names = ", ".join(sorted({m.label for m in interp.active_therapies}))
    low = interp.lowest_t
    guidelines = ["WHO-ISCD", "AACE-2020"]
    indicator = "info"
    if d == "osteoporosis":
        risk = RISK_TEXT[interp.risk or "high"]
        where = f": T-score {fmt(low.value)} at {_where(low)}" if low else ""
        previous = ", ".join(sorted({t.label for t in interp.previous_therapies}))
        due = ", ".join(sorted({t.label for t in interp.due_therapies}))
        holiday = therapy.holiday if therapy is not None else None
        paused = holiday is not None and holiday.state == "in_progress" and holiday.since is not None
        lapsed = [t for t in interp.active_therapies if t.no_supply_since is not None]
        supply = f" (no supply since {lapsed[0].no_supply_since.isoformat()})" if lapsed else ""  # type: ignore[union-attr]
        # the therapy state, and a brief one (the drugs are named in the detail) for a summary that would not fit
        if treated:
            state, brief = f"on {therapy_names}{supply}", f"on osteoporosis therapy{supply}"
        elif due:
            state, brief = f"{due} dose due or late", "a dose due or late"
        elif paused:
            since = holiday.since.isoformat()  # type: ignore[union-attr]
            state = f"on a drug holiday ({holiday.drugs}) since {since}"  # type: ignore[union-attr]
            brief = f"on a drug holiday since {since}"
        elif previous:
            state, brief = f"previously treated ({previous}), none now", "previously treated, none now"
        else:
            state = brief = "no osteoporosis therapy"
        defining = [f for f in interp.fractures if f.site in ("hip", "vertebral")]
        by_fracture = f" (fracture-defined: {defining[0].site} fragility fracture)" \
            if defining and interp.who_class != "osteoporosis" else ""
        dated = f" ({low.date.isoformat()})" if low else ""
        # what matters first: the diagnosis and risk, then the lowest T-score, then the therapy; the parts
        # that do not fit are left out whole (the detail has them)
        summary = fit(f"Osteoporosis{by_fracture}, {risk}{where}{dated}; {state}",
                      f"Osteoporosis{by_fracture}, {risk}{where}; {state}",
                      f"Osteoporosis{by_fracture}, {risk}; {state}",
                      f"Osteoporosis{by_fracture}, {risk}; {brief}")
        # a yearly infusion due is routine; a denosumab dose due or late is not (rebound): its own card is the alarm,
        # this one stays a warning
        rebound = any(t.drug == "denosumab" for t in interp.due_therapies)
        if not treated and not paused and not (interp.due_therapies and not rebound):
            indicator = "critical" if interp.risk == "very_high" else "warning"
        head = f"**Osteoporosis** — {risk}."
    elif d == "low_bone_mass":
        # glucocorticoids first: they change how FRAX is read (the detail says how)
        name = "Low bone mass (osteopenia)" + (", on long-term glucocorticoids" if interp.glucocorticoids else "")
        score, frax = f"T-score {fmt(low.value)} at {_where(low)}", RISK_TEXT[interp.risk or "frax_needed"]
        summary = fit(f"{name}: {score} ({low.date.isoformat()}); {frax}", f"{name}: {score}; {frax}", f"{name}; {frax}")
        head = f"**Low bone mass** (WHO: T-score between {fmt(k.threshold('t_score_normal_min'))} and " \
               f"{fmt(k.threshold('t_score_osteoporosis_max'))}) — {RISK_TEXT[interp.risk or 'frax_needed']}."
        if interp.risk == "frax_high" and not treated:
            indicator = "warning"
        guidelines = ["WHO-ISCD", "AACE-2020", "BHOF-2022"]
    elif d == "normal":
        summary = f"Bone density normal: lowest T-score {fmt(low.value)} at {_where(low)} ({low.date.isoformat()})"
        head = f"**Normal bone density** (WHO: T-score {fmt(k.threshold('t_score_normal_min'))} or above)."
    elif d in ("below_expected_range", "within_expected_range"):
        z = interp.lowest_z
        words = "below the expected range for age" if d == "below_expected_range" else "within the expected range for age"
        summary = f"Bone density {words}: Z-score {fmt(z.value)} at {_where(z)} ({z.date.isoformat()})"
        head = f"**Bone density {words}** (ISCD: Z-score, not T-score, for this patient)."
        if d == "below_expected_range":
            indicator = "warning"
            head += " Look for secondary causes of low bone density."
    elif d == "z_score_needed":
        summary = "DXA needs a Z-score: T-scores do not apply to this patient's age and menopausal status"
        head = "**Z-score needed.** This patient's bone density is judged by Z-score (ISCD); the exam has none."
    elif d == "t_score_needed":
        summary = "DXA has no T-score at a diagnostic site (spine, total hip, femoral neck, 33% radius)"
        head = "**No diagnostic T-score** in the current exam."
    else:  # undetermined
        summary = "DXA on record, but the patient's birth date is missing: cannot choose T-score or Z-score"
        head = "**Interpretation not possible** without the patient's age."

    parts = [head, ""]
    parts.append(f"Patient group: {interp.group}.")
    if interp.basis:
        parts += ["", "**Why**", ""] + [f"- {b}" for b in interp.basis]
    if interp.risk_reasons:
        label = "Very high risk because" if interp.risk == "very_high" else "Risk"
        parts += ["", f"**{label}** (AACE-2020)", ""] + [f"- {r}" for r in interp.risk_reasons]
    if interp.risk == "frax_needed":
        parts += ["", "No FRAX result is recorded: calculate FRAX; treat when the 10-year hip fracture risk is "
                  f"≥ {k.threshold('frax_hip_treat_percent'):g}% or major osteoporotic fracture risk ≥ "
                  f"{k.threshold('frax_major_treat_percent'):g}%."]
    if interp.glucocorticoids and interp.risk in ("frax_needed", "frax_low", "frax_high"):
        parts += ["", k.raw["medications"]["glucocorticoids"]["frax_note"]["value"]]
    if d == "osteoporosis" and interp.who_class and interp.who_class != "osteoporosis" and low:
        parts += ["", f"The current lowest T-score ({fmt(low.value)}) is better, but a diagnosis of osteoporosis "
                  "persists (AACE-2020)."]
    if treated:
        parts += ["", "**Current osteoporosis therapy**", ""] + [f"- {t.describe()}" for t in interp.active_therapies]
    if interp.due_therapies:
        parts += ["", "**Dose due or late**", ""] + [f"- {t.describe()}: the last dose covered to "
                                                    f"{t.covered_until.isoformat() if t.covered_until else '?'}"
                                                    for t in interp.due_therapies]
    if interp.previous_therapies:
        parts += ["", "**Previously treated**", ""] + [
            f"- previously treated: {t.period_text()} (ended {t.ended.isoformat() if t.ended else 'date unknown'}; "
            f"{t.describe()})" for t in interp.previous_therapies]
    if interp.glucocorticoids:
        parts += ["", "**Long-term systemic glucocorticoids** (ACR 2022: glucocorticoid-induced osteoporosis; they "
                  "lower the treatment threshold, and are very high risk only with a fracture on them or a very high "
                  "dose)", ""] + [f"- {g}" for g in interp.glucocorticoids]
    if interp.exam:
        parts += ["", f"**DXA exam of {interp.exam.date.isoformat()}** (all sites within "
                  f"{k.threshold('exam_window_days')} days)", ""]
        parts += [_score_line(s) for s in interp.exam.scores]
    if interp.fractures:
        parts += ["", f"**Fractures counted** ({len(interp.fractures)}: one per site within "
                  f"{k.fracture_rules.same_event_days} days, rules §6.3)", ""] + [f"- {f.line()}" for f in interp.fractures]
        uncertain = [f for f in interp.fractures if f.date is not None and not f.certain and not f.history]
        if uncertain:
            parts += ["", "The date of a fracture marked \"on or before\" is uncertain: the record gives no onset, only "
                      "the date it was recorded; it counts as recent only when that date is within "
                      f"{k.threshold('recent_fracture_months'):g} months."]
    if interp.fractures_not_counted:
        parts += ["", "**Fractures not counted**", ""] + [f"- {f.line()} — {f.reason}" for f in interp.fractures_not_counted]
    if interp.notes:
        parts += ["", "**Notes**", ""] + [f"- {n}" for n in interp.notes]
    detail = "\n".join(parts) + data_notes(facts)
    return card(k, topic="bmd-interpretation", indicator=indicator, summary=summary, detail=detail,
                guidelines=guidelines)
