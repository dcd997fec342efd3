"""Cards for treatment, safety, therapy management, monitoring and supportive care."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ..clinical.advice import Advice, Finding, TreatmentPlan
from ..clinical.facts import Facts
from ..clinical.interpretation import capitalised, fmt
from ..knowledge import Knowledge
from . import card, fit, suggestion
from .interpretation import data_notes
from .resources import medication_request, service_request
from .therapy import words


REFS = re.compile(r"\s*\((?:[A-Z][A-Za-z]+/[^()]*(?:, )?)+\)")  # " (Observation/x, Observation/y)"
REF_ITEMS = re.compile(r",\s*[A-Z][A-Za-z]+/[A-Za-z0-9\-.]+(?=[,)])")  # ", Condition/x" in " (K22.0, Condition/x)"
ASIDES = re.compile(r"\s*\([^()]*\)")  # any parenthesis: codes, the value as recorded, the method


def _label(k: Knowledge, drug: str) -> str:
    return k.drugs[drug].label if drug in k.drugs else drug.replace("_", " ")


def _lower(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first[:1].isupper() and first[1:].islower() else text


def _order_label(k: Knowledge, drug: str) -> str:
    return f"Order {k.treatment['regimens'][drug]['short']}"


def _why(findings: list[Finding]) -> str:
    return "; ".join(f"{f.message} ({', '.join(f.evidence) or 'recorded'})" for f in findings)


def _basis(advice: Advice) -> list[str]:
    i = advice.interp
    low = i.lowest_t
    out = list(i.basis[:3])
    if low and not out:
        out.append(f"Lowest T-score {fmt(low.value)} at the {low.site_label} on {low.date.isoformat()} ({low.resource})")
    out += i.risk_reasons
    return [f"- {x}" for x in dict.fromkeys(out)]


def treatment_card(advice: Advice, facts: Facts, k: Knowledge) -> dict[str, Any] | None:
    plan: TreatmentPlan | None = advice.treatment
    if plan is None:
        return None
    pid = facts.patient.id
    risk = "Very high fracture risk" if plan.level == "very_high" else (
        "Osteoporosis" if advice.interp.diagnosis == "osteoporosis" else "Low bone mass with high FRAX")
    names = [_label(k, d) for d in plan.offered]
    untreated = "previously treated, none now" if plan.history else "untreated"
    if plan.replacing:
        untreated = f"{' and '.join(plan.replacing)} contraindicated"

    # what matters first: the risk, whether anything is being taken, what to start; the drugs left out of a
    # summary that would not fit are each a suggestion of the card
    if plan.offered:
        first = [n for d, n in zip(plan.offered, names) if d in k.treatment["options"][plan.level]["first"]]
        if plan.level == "very_high" and first:
            summary = fit(f"{risk}, {untreated}: anabolic therapy first ({', '.join(first)})",
                          f"{risk}, {untreated}: anabolic therapy first")
        else:
            summary = fit(f"{risk}, {untreated}: start {' or '.join(first or names[:2])}",
                          f"{risk}, {untreated}: start {(first or names)[0]} or another option below",
                          f"{risk}, {untreated}: start one of the options below")
    else:
        leads = plan.handed_over_by
        titles = {c["id"]: c["title"] for c in k.treatment["secondary_causes"]}
        blockers = dict.fromkeys(_lower(titles.get(f.id, f.message)) for fs in plan.not_offered.values() for f in fs)
        summary = f"{risk}: {leads.summary}" if leads else \
            fit(f"{risk}, {untreated}: no drug can start yet; first correct {' and '.join(blockers)}",
                f"{risk}, {untreated}: no drug can start yet; first correct what blocks each (listed below)")
    if plan.replacing:
        lines = [f"**{risk}: {' and '.join(plan.replacing)}, being taken, is contraindicated** (stop or hold it: see the "
                 "safety card). Treatment is still indicated: choose another drug.", ""]
    elif plan.history:
        lines = [f"**{risk}, no current osteoporosis therapy.** Pharmacological treatment is indicated.", "",
                 "**Previously treated** (rules §6.1: from the orders, statements, fills and administrations on record)",
                 ""] + [f"- {h}" for h in plan.history] + [""]
    else:
        lines = [f"**{risk}, no osteoporosis therapy recorded.** Pharmacological treatment is indicated.", ""]
    lines += ["**Based on**", ""] + _basis(advice)
    if plan.offered:
        lines += ["", "**Options** (one to choose)", ""]
        for d in plan.offered:
            reg = k.treatment["regimens"][d]
            tag = " — *recommended*" if d == plan.recommended else ""
            lines.append(f"- **{_label(k, d)}**: {reg['text']}{tag}")
            for f in plan.warnings.get(d, []):
                lines.append(f"  - ⚠ {f.message}. {f.action}")
            for note in plan.course_notes.get(d, []):
                lines.append(f"  - History: {note}")
    if plan.not_offered or plan.never_offer:
        lines += ["", "**Not offered**", ""]
        for d, fs in plan.not_offered.items():
            lines.append(f"- {_label(k, d)}: {_why(fs)}")
        for d, why in plan.never_offer.items():
            if d not in plan.not_offered:
                lines.append(f"- {_label(k, d)}: {why}")
    lines += ["", "**Guidelines**", "", plan.note]
    if "denosumab" in plan.offered:
        lines += ["", "Denosumab is a long-term commitment: never stop it or delay a dose beyond "
                  f"{k.number('denosumab_overdue_months')} months without a follow-on bisphosphonate (rebound "
                  "vertebral fractures)."]
    if plan.labs_to_check:
        lines += ["", "Before the first dose, check: " + ", ".join(plan.labs_to_check)
                  + f" (no result in the last {k.threshold('lab_max_age_months')} months)."]
    reason = f"{risk}" + (f": lowest T-score {fmt(advice.interp.lowest_t.value)}" if advice.interp.lowest_t else "")
    suggestions = [
        suggestion(_order_label(k, d),
                   [{"type": "create", "description": f"Draft order: {k.treatment['regimens'][d]['text']}",
                     "resource": medication_request(k, d, pid, reason)}],
                   recommended=(d == plan.recommended))
        for d in plan.offered
    ]
    # a deliberate hand-over (oncology care leads, a drug complication) is not an untreated emergency
    indicator = "warning" if plan.handed_over_by else "critical" if plan.level == "very_high" else "warning"
    guidelines = plan.guidelines + (["LABELS"] if plan.not_offered or plan.warnings else [])
    return card(k, topic="treatment", indicator=indicator, summary=summary,
                detail="\n".join(lines) + data_notes(facts), guidelines=guidelines,
                suggestions=suggestions, selection_behavior="at-most-one" if suggestions else None)


def safety_cards(advice: Advice, facts: Facts, k: Knowledge) -> list[dict[str, Any]]:
    # a drug is being chosen, taken, or given at a dose that is due (rules §6.1: the drug being taken is checked
    # too; a denosumab dose due with eGFR below 30 needs its calcium warnings)
    given = {t.drug for t in advice.interp.active_therapies} | {t.drug for t in advice.interp.due_therapies} | \
        {m.continue_drug for m in advice.management if m.continue_drug} | {d for m in advice.management for d in m.suggest}
    relevant_treatment = advice.treatment is not None or bool(given)
    groups: dict[str, list[Finding]] = {}
    for f in advice.findings:
        if f.always_card:
            groups.setdefault(f.id, []).append(f)
            continue
        if f.kind == "contraindication" and not relevant_treatment:
            continue
        plan = advice.treatment
        if f.summary and plan is not None and not plan.offered and any(f in fs for fs in plan.not_offered.values()):
            continue  # the treatment card says it, in its summary: one card
        taken = not f.start_only and any(d in f.blocks or d in f.warns for d in given)
        if f.kind == "contraindication" and not f.warns and advice.treatment is None and not taken:
            continue  # nothing is being chosen or to be stopped: a pure block is not news
        if f.kind == "secondary_cause" and advice.interp.diagnosis not in k.care_diagnoses:
            continue
        if not f.safety_card:
            continue  # a labelling restriction, shown on the treatment card, not a safety finding
        groups.setdefault(f.id, []).append(f)
    cards = []
    pid = facts.patient.id
    for fs in groups.values():
        secondary = next((f for f in fs if f.kind == "secondary_cause"), None)
        contra = next((f for f in fs if f.kind == "contraindication"), None)
        title = secondary.message if secondary else contra.message  # type: ignore[union-attr]
        evidence = list(dict.fromkeys(e for f in fs for e in f.evidence))
        lines = [f"**{capitalised(title)}**", "", "**Data**", ""] + [f"- {e}" for e in evidence]
        lines += ["", "**What to do**", ""] + [f"- {f.action}" for f in fs]
        lines += _taken_lines(contra, advice, k)
        if contra and (contra.blocks or contra.warns):
            lines += ["", "**Effect on treatment**", "", f"- {contra.message}."]
        suggestions = []
        if secondary and secondary.suggest:
            reg = k.treatment["regimens"][secondary.suggest]
            suggestions.append(suggestion(
                _order_label(k, secondary.suggest),
                [{"type": "create", "description": f"Draft order: {reg['text']}",
                  "resource": medication_request(k, secondary.suggest, pid, title)}], recommended=True))
        guidelines = list(dict.fromkeys(f.source for f in fs))
        if secondary and secondary.suggest:
            guidelines.append("ES-2011")
        head = capitalised(title)
        stopped = [t for t in advice.interp.active_therapies if contra and not contra.start_only
                   and not contra.stops_current and t.drug in contra.blocks]
        if stopped and evidence:  # the part that matters first: the drug being taken and why
            t = stopped[0]
            what = "correct this before the next dose" if t.drug == "denosumab" else "stop or hold it"
            head = f"{capitalised(t.label)} being taken is contraindicated ({what})"
        # then the data that made it fire: as recorded, else without its asides, else left to the detail
        summary = fit(*(f"{head}: {x}" for x in _data(evidence)), head)
        indicator = "critical" if any(f.indicator == "critical" for f in fs) else "warning"
        cards.append(card(k, topic="safety", indicator=indicator, summary=summary,
                          detail="\n".join(lines) + data_notes(facts), guidelines=guidelines,
                          suggestions=suggestions or None, selection_behavior="at-most-one" if suggestions else None))
    return cards


def _data(evidence: list[str]) -> list[str]:
    """The first evidence line as a summary quotes it, fullest first: without its resource references,
    then without any parenthesis (codes, the value as recorded, the method; the detail keeps them)."""
    if not evidence:
        return []
    plain = REF_ITEMS.sub("", REFS.sub("", evidence[0])).strip()
    return list(dict.fromkeys([plain, ASIDES.sub("", plain).strip()]))


def _taken_lines(contra: Finding | None, advice: Advice, k: Knowledge) -> list[str]:
    """The drugs being taken that the contraindication blocks: stop or hold them (rules §6.1);
    denosumab is never simply stopped."""
    if contra is None or contra.stops_current or contra.start_only:
        return []  # its own action says what to do with the drug being taken, or it bears on starts only
    words = k.treatment["taken"]
    out = []
    for m in advice.interp.active_therapies:
        if m.drug in contra.blocks:
            text = contra.taken or (words["denosumab"]["value"] if m.drug == "denosumab"
                                    else words["stop_or_hold"]["value"])
            out.append(f"- **{m.display}** ({m.resource}) is being taken: {text}")
    return out


def management_cards(advice: Advice, facts: Facts, k: Knowledge) -> list[dict[str, Any]]:
    out = []
    pid = facts.patient.id
    for m in advice.management:
        summary, body = words(m.finding, k)
        lines = [f"**{summary}**", ""] + [f"- {x}" for x in body]
        sugg = []
        if m.continue_drug and m.held and m.continue_drug in k.treatment["regimens"] and m.kind.startswith("denosumab"):
            reg = k.treatment["regimens"][m.continue_drug]
            sugg.append(suggestion(f"{_label(k, m.continue_drug).capitalize()}: the dose to give once corrected",
                                   [{"type": "create", "description": f"Draft order (give once corrected): {reg['text']}",
                                     "resource": medication_request(k, m.continue_drug, pid, summary)}],
                                   recommended=False))
        elif m.continue_drug and m.dose_order:
            reg = k.treatment["regimens"][m.continue_drug]
            sugg.append(suggestion(f"Continue {_label(k, m.continue_drug)}: order the dose that is due",
                                   [{"type": "create", "description": f"Draft order: {reg['text']}",
                                     "resource": medication_request(k, m.continue_drug, pid, summary)}],
                                   recommended=not m.held))
        elif m.continue_drug and m.kind == "dose-due":  # a dose due of a form with no regimen here (IV ibandronate)
            sugg.append(suggestion(f"Give the next {_label(k, m.continue_drug)} dose (order it per local protocol)", [],
                                   recommended=False))
        elif m.continue_drug:
            sugg.append(suggestion(f"Continue {_label(k, m.continue_drug)} (already active; no new order)", [],
                                   recommended=m.kind in ("denosumab-overdue", "denosumab-due") and not m.held))
        start = m.suggest_from if m.suggest_from and m.suggest_from > facts.as_of else None
        for d in m.suggest:
            reg = k.treatment["regimens"][d]
            when = f" (from {start.isoformat()})" if start else ""
            sugg.append(suggestion(_order_label(k, d) + when,
                                   [{"type": "create", "description": f"Draft order: {reg['text']}{when}",
                                     "resource": medication_request(k, d, pid, summary, start)}],
                                   recommended=False if m.continue_drug else (d == m.suggest[0])))
        out.append(card(k, topic="therapy-management", indicator=m.indicator, summary=summary,
                        detail="\n".join(lines) + data_notes(facts), guidelines=m.guidelines,
                        suggestions=sugg or None, selection_behavior="at-most-one" if sugg else None))
    return out


def monitoring_card(advice: Advice, facts: Facts, k: Knowledge) -> dict[str, Any] | None:
    if not advice.orders:
        return None
    pid = facts.patient.id
    names = [_order_name(k, o.loinc, o.display) for o in advice.orders]
    labs = [o for o in advice.orders if o.loinc in _workup_names(k)]
    others = [n for o, n in zip(advice.orders, names) if o.loinc not in _workup_names(k)]
    summary = fit("Order: " + ", ".join(names),
                  "Order: " + ", ".join([f"{len(labs)} work-up labs"] * bool(labs) + others))
    lines = ["**Monitoring and work-up**", ""] + [f"- {o.display} (LOINC {o.loinc}): {o.reason}" for o in advice.orders]
    if advice.monitoring_notes:
        lines += [""] + [f"- {n}" for n in advice.monitoring_notes]
    suggestions = [suggestion(f"Order {o.display}", [{"type": "create", "description": f"Draft order: {o.display}",
                                                       "resource": service_request(k, o.loinc, o.display, pid, o.reason)}])
                   for o in advice.orders]
    return card(k, topic="monitoring", indicator="info", summary=summary, detail="\n".join(lines) + data_notes(facts),
                guidelines=["BHOF-2022", "WHO-ISCD"], suggestions=suggestions, selection_behavior="any")


@lru_cache(maxsize=8)
def _workup_names(k: Knowledge) -> dict[str, str]:
    """LOINC → a short name for the work-up labs of treatment.yaml: its analyte's label (labs.yaml),
    without its qualifier ("calcium", "PTH", "25-hydroxyvitamin D")."""
    out = {}
    for lab in k.treatment["labs_for_workup"]:
        analyte = lab["analyte"][0] if isinstance(lab["analyte"], list) else lab["analyte"]
        out[lab["loinc"]] = k.analyte(analyte)["label"].split(",")[0]
    return out


def _order_name(k: Knowledge, loinc: str, display: str) -> str:
    """An order as a summary names it: a work-up lab by its analyte, the repeat DXA as "DXA", else the
    head of its display ("vertebral fracture assessment")."""
    if loinc in _workup_names(k):
        return _workup_names(k)[loinc]
    if loinc == k.treatment["repeat_dxa"]["loinc"]:
        return "DXA"
    return _lower(display.split(" [")[0].split(" by ")[0])


def supportive_card(advice: Advice, facts: Facts, k: Knowledge) -> dict[str, Any] | None:
    if not advice.supportive:
        return None
    lines = ["**Supportive care for bone health**", ""] + [f"- {x}" for x in advice.supportive]
    lines += ["", "These go with, not instead of, drug treatment when it is indicated."]
    lines += ["", "**Based on**", ""] + _basis(advice)
    vit_d = facts.latest_lab("vitamin_d")
    if vit_d:
        lines.append(f"- {vit_d.label} {vit_d.value:g} {vit_d.unit} on {vit_d.date.isoformat()} ({vit_d.resource})")
    return card(k, topic="supportive-care", indicator="info",
                summary=k.treatment["supportive"]["summary"],
                detail="\n".join(lines) + data_notes(facts), guidelines=["BHOF-2022"])


def advice_cards(advice: Advice, facts: Facts, k: Knowledge) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    for c in (treatment_card(advice, facts, k),):
        if c:
            cards.append(c)
    cards += management_cards(advice, facts, k)
    cards += safety_cards(advice, facts, k)
    for c in (monitoring_card(advice, facts, k), supportive_card(advice, facts, k)):
        if c:
            cards.append(c)
    return cards
