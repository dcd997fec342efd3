"""Safety checks on osteoporosis drug orders being composed or signed (order-select, order-sign).

Pure functions: the draft orders (FHIR JSON MedicationRequests), the patient's facts, the
interpretation and the contraindication findings → a list of issues, each naming its rule, its
data and its source. Every drug, number and class comes from the knowledge files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..knowledge import Knowledge
from .advice import Finding, may_be_pregnant, missing_labs
from .facts import FactBuilder, Facts, Therapy, months_after
from .interpretation import Interpretation, capitalised


@dataclass
class DraftOrder:
    resource: dict[str, Any]
    drug: str
    label: str
    drug_class: str
    stopping: bool  # the draft ends the therapy (status stopped, cancelled, ...)

    @property
    def ref(self) -> str | None:
        rid = self.resource.get("id")
        return f"MedicationRequest/{rid}" if isinstance(rid, str) and rid else None


@dataclass
class OrderIssue:
    order: DraftOrder
    kind: str  # contraindication | caution | duplicate | course-limit | denosumab-stop | missing-labs
    severity: str  # critical | warning
    summary: str
    lines: list[str]
    sources: list[str]
    replace_with: list[str] = field(default_factory=list)  # safe alternatives, in order of preference
    remove: bool = False
    lab_orders: list[dict[str, Any]] = field(default_factory=list)
    create: list[str] = field(default_factory=list)  # regimens to offer as new orders


def read_drafts(draft_orders: Any, selections: list[str] | None, builder: FactBuilder, k: Knowledge) -> list[DraftOrder]:
    """The osteoporosis drug orders among the drafts; anything else, or an order still being
    composed without a medication, is skipped quietly."""
    if not isinstance(draft_orders, dict):
        return []
    entries = draft_orders.get("entry")
    if not isinstance(entries, list):
        return []
    wanted = set(selections) if selections is not None else None
    stopping = set(k.treatment["orders"]["stopping_statuses"])
    out = []
    for e in entries:
        r = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(r, dict) or r.get("resourceType") != "MedicationRequest":
            continue
        if wanted is not None and f"MedicationRequest/{r.get('id')}" not in wanted:
            continue
        try:
            drug = builder.match_drug(r.get("medicationCodeableConcept"))
        except (AttributeError, TypeError):
            drug = None
        if drug is None or k.drugs[drug].drug_class not in k.therapy_classes:
            continue
        d = k.drugs[drug]
        status = r.get("status")
        out.append(DraftOrder(r, drug, d.label, d.drug_class, isinstance(status, str) and status in stopping))
    return out


def pth_months(facts: Facts) -> tuple[float, list[Therapy]]:
    """Teriparatide and abaloparatide months summed over a lifetime (rules §6.1), and the timelines."""
    pth = [t for t in facts.therapies.values() if t.drug_class == "anabolic_pth"]
    return sum(t.cumulative_months for t in pth), pth


def _alternatives(drug: str, interp: Interpretation, found: list[Finding], active: set[str], k: Knowledge) -> list[str]:
    level = "very_high" if interp.risk == "very_high" else "high"
    opt = k.treatment["options"][level]
    blocked = {d for f in found for d in f.blocks}
    order = list(opt["first"]) + list(opt["alternatives"])
    return [d for d in order if d != drug and d not in blocked and d not in active]


def check_orders(drafts: list[DraftOrder], facts: Facts, interp: Interpretation, found: list[Finding],
                 k: Knowledge) -> list[OrderIssue]:
    cfg = k.treatment["orders"]
    antiresorptive = set(cfg["antiresorptive_classes"])
    follow_on = set(cfg["follow_on_classes"])
    # the drugs covering the patient, from every kind of record (rules §6.1: orders, statements, fills,
    # administrations), and every drug ever given
    active = {t.drug: t for t in interp.active_therapies}
    history = facts.therapies
    issues: list[OrderIssue] = []
    new_orders = [d for d in drafts if not d.stopping]
    # active therapies that a draft in this same request ends: not "at once" with a new order
    ending = {d.drug for d in drafts if d.stopping}
    for order in drafts:
        if order.stopping:
            issues += _stopping(order, drafts, facts, active, follow_on, k)
            continue
        issues += _contraindications(order, facts, interp, found, set(active), k)
        if may_be_pregnant(facts, k):
            issues.append(OrderIssue(order, "caution", "warning",
                                     f"{order.label.capitalize()}: exclude pregnancy first (woman under "
                                     f"{k.threshold('pregnancy_check_age_below')})",
                                     [k.treatment["cautions"]["pregnancy"]["value"]], ["LABELS"]))
        # duplicate therapy: the same drug already active, or two antiresorptives at once
        if order.drug in active:
            m = active[order.drug]
            issues.append(OrderIssue(
                order, "duplicate", "warning", f"{order.label.capitalize()} is already active: this would be a second order",
                [f"Active: {m.describe()}."],
                ["LABELS"], remove=True))
        elif order.drug_class in antiresorptive:
            others = [m for d, m in active.items() if m.drug_class in antiresorptive and d != order.drug
                      and d not in ending]
            others_drafts = [o for o in new_orders if o is not order and o.drug_class in antiresorptive
                             and o.drug != order.drug]
            if others or others_drafts:
                names = [f"{m.describe()}, active" for m in others] + \
                        [f"{o.label} (another draft order)" for o in others_drafts]
                lines = ["Two antiresorptives at once add risk (hypocalcaemia, atypical fractures, osteonecrosis of "
                         "the jaw) without added benefit: " + "; ".join(names) + "."]
                if any(m.drug == "denosumab" for m in others) and order.drug_class in follow_on:
                    lines.append("If this bisphosphonate is the planned follow-on to denosumab, give it when the next "
                                 "denosumab dose would be due and end the denosumab order.")
                issues.append(OrderIssue(order, "duplicate", "warning",
                                         f"Duplicate antiresorptive therapy: {order.label} with "
                                         f"{', '.join(sorted({m.label for m in others} | {o.label for o in others_drafts}))}",
                                         lines, ["AACE-2020", "LABELS"], remove=True))
        # switching from denosumab to an anabolic without a bisphosphonate
        if "denosumab" in active and order.drug_class.startswith("anabolic"):
            issues.append(OrderIssue(
                order, "denosumab-stop", "warning",
                f"{order.label} after denosumab without a bisphosphonate: rapid bone loss and rebound fractures",
                ["Stopping denosumab for a PTH analogue or romosozumab without a bisphosphonate bridge leads to "
                 "rapid bone loss; keep denosumab until the anabolic starts and plan a bisphosphonate after it, or "
                 "choose a bisphosphonate first."], ["ES-2019", "LABELS"]))
        # course limits
        if order.drug_class == "anabolic_pth":
            months, pth = pth_months(facts)
            limit = float(k.number("pth_analog_max_months"))
            if months >= limit:
                issues.append(OrderIssue(
                    order, "course-limit", "warning",
                    f"Course complete: teriparatide/abaloparatide already given for {months:.0f} months "
                    f"({limit:g} months in a lifetime)",
                    ["Recorded courses: " + "; ".join(f"{t.period_text()} ({t.describe()})" for t in pth) + ".",
                     k.treatment["courses"]["pth_beyond_limit"]["value"],
                     "Transition to an antiresorptive instead."], ["LABELS", "AACE-2020"],
                    replace_with=_alternatives(order.drug, interp, found, set(active), k), remove=True))
        if order.drug == "romosozumab":
            romo = history.get("romosozumab")
            doses = len(romo.doses) if romo else 0
            limit_doses = int(k.number("romosozumab_max_doses"))
            if doses >= limit_doses:
                issues.append(OrderIssue(
                    order, "course-limit", "warning",
                    f"Course complete: romosozumab {doses} doses already given (a course is {limit_doses}); "
                    "not to be repeated",
                    [f"Romosozumab is given for {limit_doses} monthly doses, then an antiresorptive."],
                    ["LABELS", "AACE-2020"],
                    replace_with=_alternatives(order.drug, interp, found, set(active), k), remove=True))
        # labs before the first dose
        if order.drug not in history:
            missing = [{**lab, "name": k.analyte(lab["analyte"][0])["label"].split(",")[0]}
                       for lab in missing_labs(facts, k, cfg["labs_before_first_dose"])]
            if missing:
                issues.append(OrderIssue(
                    order, "missing-labs", "warning",
                    f"Before the first dose of {order.label}: no recent " + ", ".join(m["name"] for m in missing),
                    [f"No result in the last {k.threshold('lab_max_age_months')} months for: "
                     + ", ".join(m["display"] for m in missing) + ". Check calcium, vitamin D and kidney function "
                     "before starting (hypocalcaemia, dosing by kidney function)."],
                    ["BHOF-2022", "LABELS"], lab_orders=missing))
    return issues


def _finding_lines(findings: list[Finding]) -> list[str]:
    """Each finding's rule, the data that made it fire and what to do."""
    lines = []
    for f in findings:
        lines.append(f"**{capitalised(f.message)}**")
        lines += [f"- {e}" for e in f.evidence]
        lines.append(f"- What to do: {f.action}")
    return lines


def _contraindications(order: DraftOrder, facts: Facts, interp: Interpretation, found: list[Finding],
                       active: set[str], k: Knowledge) -> list[OrderIssue]:
    out = []
    blocking = [f for f in found if order.drug in f.blocks]
    if blocking:
        out.append(OrderIssue(
            order, "contraindication", "critical",
            f"Contraindicated: {order.label} — {blocking[0].message}",
            _finding_lines(blocking), list(dict.fromkeys(f.source for f in blocking)),
            replace_with=_alternatives(order.drug, interp, found, active, k), remove=True))
    # a caution about choosing the drug at all (offered only with it, never first) is moot once it is
    # contraindicated; cautions that bear on its alternatives too (calcium, kidney) stay
    cautions = [f for f in found if order.drug in f.warns and not (blocking and f.not_first)]
    if cautions:
        out.append(OrderIssue(order, "caution", "warning", f"{order.label}: {cautions[0].message}",
                              _finding_lines(cautions), list(dict.fromkeys(f.source for f in cautions))))
    return out


def _stopping(order: DraftOrder, drafts: list[DraftOrder], facts: Facts, active: dict[str, Therapy],
              follow_on: set[str], k: Knowledge) -> list[OrderIssue]:
    if order.drug != "denosumab":
        return []
    if any(o.drug == "denosumab" and not o.stopping for o in drafts):
        return []  # the old order is ended and a new one written: a renewal, not a stop
    bridging = [o for o in drafts if not o.stopping and o.drug_class in follow_on] + \
               [m for m in active.values() if m.drug_class in follow_on]
    if bridging:
        return []
    choices = k.management("after_denosumab")
    lines = ["Stopping denosumab without a bisphosphonate causes rapid bone loss and multiple vertebral fractures. "
             "Start zoledronic acid or alendronate when the next denosumab dose would have been due."]
    given = facts.therapies.get("denosumab")
    if given is not None and given.doses:
        last = given.last_dose
        assert last is not None
        due = months_after(last, float(k.number("denosumab_interval_months")))
        lines.insert(0, f"Denosumab given: {len(given.doses)} doses ({given.describe()}); the next would be due "
                        f"{due.isoformat()}: the follow-on bisphosphonate then (ECTS 2021).")
    return [OrderIssue(order, "denosumab-stop", "warning",
                       "Denosumab is being stopped with no follow-on bisphosphonate: rebound vertebral fractures",
                       lines, ["ES-2019", "ECTS-2021", "LABELS"], create=choices)]
