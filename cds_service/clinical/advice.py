"""Treatment, safety, therapy management, monitoring and supportive care (clinical rules §3-§4).

Pure functions: Facts + Interpretation + Knowledge → Advice. Every number, drug and message comes
from knowledge/treatment.yaml; this module only evaluates the rules it lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any

from ..knowledge import Knowledge
from .facts import Facts, Lab, age_on, months_after, months_between
from .therapy_rules import TherapyState, manage_therapies, therapy_state
from .interpretation import Interpretation, fmt


@dataclass
class Finding:
    """A contraindication or secondary cause that fired, with the data that made it fire."""
    id: str
    message: str
    action: str
    source: str
    evidence: list[str]
    blocks: list[str] = field(default_factory=list)
    warns: list[str] = field(default_factory=list)
    suggest: str | None = None
    kind: str = "contraindication"  # or secondary_cause
    safety_card: bool = True  # False for a labelling restriction shown on the treatment card only
    indicator: str = "warning"  # the safety card's indicator (critical for AFF/ONJ)
    always_card: bool = False  # a safety card whatever is being chosen or taken
    not_first: bool = False  # a drug it warns about is offered, never recommended first
    stops_current: bool = False  # a blocked drug being taken is to be stopped or handed over: never "continue"
    summary: str | None = None  # the treatment card's summary when it leaves no drug to offer
    start_only: bool = False  # blocks starting a drug; says nothing of one being taken
    taken: str | None = None  # what to say of a blocked drug being taken, instead of "stop or hold it"


@dataclass
class TreatmentPlan:
    level: str  # very_high | high
    offered: list[str]
    recommended: str | None
    not_offered: dict[str, list[Finding]]
    warnings: dict[str, list[Finding]]
    note: str
    guidelines: list[str]
    labs_to_check: list[str]
    history: list[str] = field(default_factory=list)  # previously treated: what and when (rules §6.1)
    course_notes: dict[str, list[str]] = field(default_factory=dict)  # drug → what its history says of a new course
    never_offer: dict[str, str] = field(default_factory=dict)  # drug → why it is not offered again
    replacing: list[str] = field(default_factory=list)  # drugs being taken that are contraindicated: to stop

    @property
    def handed_over_by(self) -> Finding | None:
        """Nothing is offered and a blocking finding says why in its own summary (oncology care leads,
        a drug complication): a deliberate hand-over, not an untreated emergency."""
        if self.offered:
            return None
        return next((f for fs in self.not_offered.values() for f in fs if f.summary), None)


@dataclass
class Management:
    """A therapy-management card to be: what the rule found (``finding``, a TherapyFinding of
    clinical/therapy_rules.py, worded by cards/therapy.py) and what the card offers."""
    kind: str  # the finding's kind: denosumab-overdue, drug-holiday, anabolic-ended, fracture-on-therapy, ...
    indicator: str
    guidelines: list[str]
    finding: Any  # TherapyFinding (rules §6.1, §6.3): structured; the card builders word it
    suggest: list[str] = field(default_factory=list)  # regimens offered as orders
    continue_drug: str | None = None  # a drug already active, offered only as "continue"
    held: bool = False  # the next dose waits for a contraindication to be corrected: "continue" is not recommended
    dose_order: bool = False  # with "continue", a draft order for the dose that is due (rules §6.1)
    lab_loinc: str | None = None  # a lab to order before the next dose (creatinine before an IV bisphosphonate)
    suggest_from: date | None = None  # the suggested drugs' first dose not before this day (a timed hand-over)


@dataclass
class Order:
    loinc: str
    display: str
    reason: str


@dataclass
class Advice:
    interp: Interpretation
    findings: list[Finding]
    treatment: TreatmentPlan | None
    management: list[Management]
    orders: list[Order]
    monitoring_notes: list[str]
    supportive: list[str]
    therapy: TherapyState | None = None  # what the medication history says (holiday, hand-over): rules §6.1


def _analyte_info(k: Knowledge, key: str) -> dict[str, Any]:
    """An analyte of labs.yaml, or one of its derived results (creatinine clearance, kidney function)."""
    labs = k.raw["labs"]
    return labs["analytes"].get(key) or labs.get("derived", {}).get(key) or {}


def ckd_epi_2021(creatinine_mg_dl: float, age: int, sex: str, k: Knowledge) -> float | None:
    """eGFR (mL/min/1.73 m²) from serum creatinine by the CKD-EPI 2021 equation (Inker LA et al.
    NEJM 2021); None for a sex other than female or male, or a creatinine that is not positive."""
    if sex not in ("female", "male") or creatinine_mg_dl <= 0:
        return None
    e = k.raw["labs"]["kidney"]["ckd_epi_2021"]
    ratio = creatinine_mg_dl / float(e["kappa"][sex])
    value = float(e["constant"]) * min(ratio, 1.0) ** float(e["alpha"][sex]) \
        * max(ratio, 1.0) ** float(e["exponent_above"]) * float(e["age_base"]) ** age
    if sex == "female":
        value *= float(e["female_factor"])
    return value


def cockcroft_gault(creatinine_mg_dl: float, age: int, weight_kg: float, sex: str, k: Knowledge) -> float | None:
    """Creatinine clearance (mL/min) by Cockcroft-Gault with the actual body weight."""
    if sex not in ("female", "male") or creatinine_mg_dl <= 0 or weight_kg <= 0:
        return None
    e = k.raw["labs"]["kidney"]["cockcroft_gault"]
    value = (float(e["age_from"]) - age) * weight_kg / (float(e["divisor"]) * creatinine_mg_dl)
    if sex == "female":
        value *= float(e["female_factor"])
    return max(value, 0.0)


def _lab_age_note(lab: Lab, facts: Facts, k: Knowledge) -> str:
    months = months_between(lab.date, facts.as_of)
    old = f", {int(months)} months old" if months > float(k.threshold("lab_max_age_months")) else ""
    value = f"{round(lab.value, 2):g}"  # a converted value to two decimals: "creatinine 3.1", not 3.09717
    conv = f" (recorded {lab.original})" if lab.original.replace(" ", "") != f"{lab.value:g}{lab.unit}".replace(" ", "") else ""
    unit = _analyte_info(k, lab.analyte).get("display_unit", lab.unit)
    return f"{lab.label} {value} {unit}{conv} on {lab.date.isoformat()}{old} ({lab.resource})"


class Evaluator:
    """Evaluates the `when` predicates of treatment.yaml against the facts, collecting evidence."""

    def __init__(self, facts: Facts, k: Knowledge):
        self.f = facts
        self.k = k

    def lab(self, analyte: str) -> Lab | None:
        if analyte == "calcium":
            return self.calcium
        if analyte == "egfr":
            return self.egfr
        if analyte == "creatinine_clearance":
            return self.clearance
        if analyte == "kidney_function":
            return self.kidney_function
        return self.f.latest_lab(analyte)

    @cached_property  # worked out once per evaluation: many predicates read calcium
    def calcium(self) -> Lab | None:
        """Ionized calcium when one is as recent as the total (within the pairing days); else
        albumin-corrected calcium when it can be had (recorded, or computed only when albumin is below
        4.0 g/dL: the correction never lowers a measured calcium), else total calcium (rules §6.4)."""
        total = self.f.latest_lab("calcium")
        corrected = self.f.latest_lab("calcium_corrected")
        ionized = self.f.latest_lab("calcium_ionized")
        pairing = int(self.k.number("corrected_calcium_pairing_days"))
        others = [x for x in (total, corrected) if x is not None]
        if ionized and all(ionized.date >= x.date - timedelta(days=pairing) for x in others):
            return ionized
        return self.calcium_total

    @cached_property
    def calcium_total(self) -> Lab | None:
        """Total calcium, albumin-corrected when that can be had, never lower than the measured value
        (rules §6.4): the scale of calcium_high_normal."""
        total = self.f.latest_lab("calcium")
        corrected = self.f.latest_lab("calcium_corrected")
        pairing = int(self.k.number("corrected_calcium_pairing_days"))
        if corrected and (total is None or corrected.date >= total.date):
            # a reported correction below a measured total of the same days would lower it: not used
            if total is None or abs((corrected.date - total.date).days) > pairing or corrected.value >= total.value:
                return corrected
            return total
        albumin = self.f.latest_lab("albumin")
        ref = float(self.k.number("albumin_reference"))
        if total and albumin and abs((albumin.date - total.date).days) <= pairing and albumin.value < ref:
            factor = float(self.k.number("albumin_factor"))
            value = round(total.value + factor * (ref - albumin.value), 2)
            return Lab("calcium", "calcium, albumin-corrected (computed)", value, total.unit,
                       f"{total.original}; albumin {albumin.original}", total.date,
                       f"{total.resource}, {albumin.resource}", total.low, total.high, None)
        return total

    @cached_property
    def egfr(self) -> Lab | None:
        """The eGFR the rules read (rules §6.4): a recorded one, race-free codes first; one coded
        "among blacks" only when no other eGFR and no creatinine is at hand; computed from creatinine
        by CKD-EPI 2021 when none is recorded or the creatinine is newer."""
        kidney = self.k.raw["labs"]["kidney"]
        race_free = set(kidney["egfr_race_free"]["value"])
        black = set(kidney["egfr_race_black"]["value"])
        recorded = self.f.labs.get("egfr", [])
        creatinine = self.f.latest_lab("creatinine")
        usable = [x for x in recorded if x.code not in black]
        if not usable and creatinine is None:
            usable = list(recorded)
        chosen = max(usable, key=lambda x: (x.date, x.code in race_free, x.code not in black), default=None)
        newer = int(kidney["creatinine_newer_days"]["value"])
        if creatinine is not None and (chosen is None or (creatinine.date - chosen.date).days > newer):
            computed = self._computed_egfr(creatinine)
            if computed is not None:
                return computed
        if chosen is None and recorded:
            # a race-coded value was set aside for a creatinine that cannot be turned into an eGFR (sex
            # or birth date not recorded): the recorded value is better than none
            return max(recorded, key=lambda x: x.date)
        return chosen

    def _age_at(self, when: date) -> int | None:
        birth = self.f.patient.birth_date
        return age_on(birth, when) if birth else None

    def _computed_egfr(self, creatinine: Lab) -> Lab | None:
        age = self._age_at(creatinine.date)
        value = ckd_epi_2021(creatinine.value, age, self.f.patient.sex, self.k) if age is not None else None
        if value is None:
            return None
        e = self.k.raw["labs"]["kidney"]["ckd_epi_2021"]
        unit = self.k.analyte("egfr")["unit"]
        return Lab("egfr", f"{e['label']}, age {age}, {self.f.patient.sex}:", round(value, 1), unit,
                   f"creatinine {creatinine.original}", creatinine.date, creatinine.resource)

    @cached_property
    def clearance(self) -> Lab | None:
        """Cockcroft-Gault creatinine clearance, with a body weight of the last 12 months (rules §6.4)."""
        creatinine = self.f.latest_lab("creatinine")
        weight = self.f.latest_lab("body_weight")
        months = float(self.k.raw["labs"]["kidney"]["weight_max_age_months"]["value"])
        if creatinine is None or weight is None or months_between(weight.date, self.f.as_of) > months:
            return None
        age = self._age_at(creatinine.date)
        value = cockcroft_gault(creatinine.value, age, weight.value, self.f.patient.sex, self.k) \
            if age is not None else None
        if value is None:
            return None
        info = _analyte_info(self.k, "creatinine_clearance")
        return Lab("creatinine_clearance", f"{info['label']}, age {age}, {self.f.patient.sex}:", round(value, 1),
                   info["unit"], f"creatinine {creatinine.original}, weight {weight.original} on "
                   f"{weight.date.isoformat()}", creatinine.date, f"{creatinine.resource}, {weight.resource}")

    @cached_property
    def kidney_function(self) -> Lab | None:
        """The lower of eGFR and creatinine clearance: it decides the bisphosphonate limits."""
        found = [x for x in (self.egfr, self.clearance) if x is not None]
        return min(found, key=lambda x: x.value) if found else None

    def range_of(self, lab: Lab) -> tuple[float | None, float | None]:
        default = _analyte_info(self.k, lab.analyte).get("default_range") or {}
        low = lab.low if lab.low is not None else default.get("low")
        high = lab.high if lab.high is not None else default.get("high")
        return low, high

    def below_range(self, lab: Lab) -> bool:
        return self._outside(lab, "low")

    def above_range(self, lab: Lab) -> bool:
        return self._outside(lab, "high")

    def _outside(self, lab: Lab, side: str) -> bool:
        """Beyond the ``side`` ("low" or "high") of its range: by its interpretation flag when it
        has one of labs.yaml's, else by the reference range or the analyte's default range."""
        flags = self.k.raw["labs"]["interpretation"]
        if lab.interpretation in flags[side]:
            return True
        if any(lab.interpretation in flags[other] for other in ("low", "high", "normal") if other != side):
            return False
        low, high = self.range_of(lab)
        return (low is not None and lab.value < low) if side == "low" else (high is not None and lab.value > high)

    def check(self, when: dict[str, Any]) -> tuple[bool, list[str]]:
        for kind in when:  # the one key besides "number"
            if kind != "number":
                break
        try:
            predicate = _PREDICATES[kind]
        except KeyError:
            raise ValueError(f"unknown predicate {kind}") from None
        return predicate(self, when, when[kind])

    # -- the predicates of treatment.yaml's `when`, by name (_PREDICATES) -----------------------
    def _any_all(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        results = [self.check(sub) for sub in value]
        evidence = [e for ok, ev in results if ok for e in ev]
        ok = any(r[0] for r in results) if "any" in when else all(r[0] for r in results)
        return ok, evidence if ok else []

    def _not(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        return not self.check(value)[0], []

    def _on_therapy(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        """These drugs cover the patient now (rules §6.1: any of the four record types)."""
        found = [t for d, t in self.f.therapies.items() if d in value and t.on_therapy]
        return bool(found), [f"on {t.describe()}" for t in found]

    def _lab_missing(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        return self.lab(value) is None, []

    def _lab_value(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        lab = self.lab(value)
        if lab is None:
            return False, []
        if "lab_below" in when:
            ok = lab.value < float(self.k.number(when["number"]))
        elif "lab_above" in when:
            ok = lab.value > float(self.k.number(when["number"]))
        else:  # lab_at_least
            ok = lab.value >= float(self.k.number(when["number"]))
        return ok, [_lab_age_note(lab, self.f, self.k)] if ok else []

    def _lab_range(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        lab = self.lab(value)
        if lab is None:
            return False, []
        if not (self.below_range(lab) if "lab_below_range" in when else self.above_range(lab)):
            return False, []
        low, high = self.range_of(lab)
        return True, [f"{_lab_age_note(lab, self.f, self.k)}; reference range {low:g}-{high:g} {lab.unit}"
                      if low is not None and high is not None else _lab_age_note(lab, self.f, self.k)]

    def _condition(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        found = [c for c in self.f.conditions_of(value) if c.active]
        return bool(found), [f"{c.display} ({c.code}, {c.resource})" for c in found]

    def _recent_condition(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        months = float(self.k.number(when["number"]))
        found = [c for concept in value for c in self.f.conditions_of(concept)
                 if c.onset and c.onset <= self.f.as_of and months_between(c.onset, self.f.as_of) <= months]
        return bool(found), [f"{c.display} ({c.code}) on {c.onset.isoformat()} ({c.resource})" for c in found]

    def _recorded_condition(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        """Any counted record, whatever its clinical status."""
        found = [c for concept in value for c in self.f.conditions_of(concept)]
        return bool(found), [f"{c.display} ({c.code}, {c.resource})" for c in found]

    def _undated_condition(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        """A record with no onset or recorded date."""
        found = [c for concept in value for c in self.f.conditions_of(concept) if c.onset is None]
        return bool(found), [f"{c.display} ({c.code}, {c.resource}), no date recorded" for c in found]

    def _older_condition(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        months = float(self.k.number(when["number"]))
        found = [c for concept in value for c in self.f.conditions_of(concept)
                 if c.onset and months_between(c.onset, self.f.as_of) > months]
        return bool(found), [f"{c.display} ({c.code}) on {c.onset.isoformat()} ({c.resource})" for c in found]

    def _medication_class(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        """A drug of these classes covers the patient now."""
        found = [t for t in self.f.therapies.values() if t.drug_class in value and t.on_therapy]
        return bool(found), [t.describe() for t in found]

    def _after_drug(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        return self._condition_after_drug(value["conditions"], value["classes"])

    def _sex(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        ok = self.f.patient.sex == value
        return ok, [f"sex recorded as {self.f.patient.sex}"] if ok else []

    def _pth_high_with_calcium_high_normal(self, when: dict[str, Any], value: Any) -> tuple[bool, list[str]]:
        pth, ca = self.f.latest_lab("pth"), self.calcium_total  # total scale, not an ionized value
        if pth is None or ca is None:
            return False, []
        ok = self.above_range(pth) and ca.value >= float(self.k.number("calcium_high_normal"))
        return ok, [_lab_age_note(pth, self.f, self.k), _lab_age_note(ca, self.f, self.k)] if ok else []

    def _condition_after_drug(self, concepts: list[str], classes: list[str]) -> tuple[bool, list[str]]:
        """A condition on or after exposure to a drug of ``classes``: its date on or after the first
        record of the drug; an undated condition or drug counts (the cautious reading)."""
        meds = [t for t in self.f.therapies.values() if t.drug_class in classes]
        if not meds:
            return False, []
        starts = [t.first for t in meds if t.first]
        first = min(starts) if len(starts) == len(meds) else None
        found = [c for concept in concepts for c in self.f.conditions_of(concept)
                 if first is None or c.onset is None or c.onset >= first]
        if not found:
            return False, []
        evidence = [f"{c.display} ({c.code}" + (f", {c.onset.isoformat()}" if c.onset else ", date not recorded")
                    + f", {c.resource})" for c in found]
        evidence += [t.describe() for t in meds]
        return True, evidence


_PREDICATES = {
    "any": Evaluator._any_all, "all": Evaluator._any_all, "not": Evaluator._not,
    "on_therapy": Evaluator._on_therapy, "lab_missing": Evaluator._lab_missing,
    "lab_below": Evaluator._lab_value, "lab_above": Evaluator._lab_value, "lab_at_least": Evaluator._lab_value,
    "lab_below_range": Evaluator._lab_range, "lab_above_range": Evaluator._lab_range,
    "condition": Evaluator._condition, "recent_condition": Evaluator._recent_condition,
    "recorded_condition": Evaluator._recorded_condition, "undated_condition": Evaluator._undated_condition,
    "older_condition": Evaluator._older_condition, "medication_class": Evaluator._medication_class,
    "condition_after_drug": Evaluator._after_drug, "sex": Evaluator._sex,
    "pth_high_with_calcium_high_normal": Evaluator._pth_high_with_calcium_high_normal,
}


def may_be_pregnant(facts: Facts, k: Knowledge) -> bool:
    """A woman under thresholds.yaml's pregnancy_check_age_below with no postmenopausal state recorded: an osteoporosis drug
    asks to exclude pregnancy first (rules §6.5; Prolia and Evenity labels)."""
    p = facts.patient
    if p.sex != "female" or p.birth_date is None:
        return False
    if age_on(p.birth_date, facts.as_of) >= int(k.threshold("pregnancy_check_age_below")):
        return False
    return not any(c.active for c in facts.conditions_of("postmenopausal"))


def findings(facts: Facts, k: Knowledge) -> list[Finding]:
    ev = Evaluator(facts, k)
    out: list[Finding] = []
    for c in k.treatment["contraindications"]:
        ok, evidence = ev.check(c["when"])
        if not ok and c.get("also_condition"):
            found = [x for x in facts.conditions_of(c["also_condition"]) if x.active]
            ok, evidence = bool(found), [f"{x.display} ({x.code}, {x.resource})" for x in found]
        if ok:
            out.append(Finding(c["id"], c["message"], c["action"], c["source"], evidence,
                               list(c.get("blocks", [])), list(c.get("warns", [])),
                               safety_card=c.get("safety_card", True), indicator=c.get("indicator", "warning"),
                               always_card=c.get("always_card", False), not_first=c.get("not_first", False),
                               stops_current=c.get("stops_current", False), summary=c.get("summary"),
                               start_only=c.get("start_only", False), taken=c.get("taken")))
    for c in k.treatment["secondary_causes"]:
        ok, evidence = ev.check(c["when"])
        if ok:
            out.append(Finding(c["id"], c["title"], c["action"], c["source"], evidence,
                               suggest=c.get("suggest"), kind="secondary_cause"))
    return out


def missing_labs(facts: Facts, k: Knowledge, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lab entries of a knowledge list (each met by any of its analytes) with no result in the
    last ``lab_max_age_months`` (rules §1: an older lab counts as missing)."""
    max_months = float(k.threshold("lab_max_age_months"))
    missing = []
    for lab in entries:
        analytes = lab["analyte"] if isinstance(lab["analyte"], list) else [lab["analyte"]]
        recent = [x for a in analytes for x in facts.labs.get(a, [])
                  if x.date <= facts.as_of and months_between(x.date, facts.as_of) <= max_months]
        if not recent:
            missing.append(lab)
    return missing


def stopping_drugs(found: list[Finding]) -> set[str]:
    """Drugs that a contraindication stops when they are being taken (rules §6.1: never "continue");
    denosumab is never simply stopped, so only a finding that hands it over (stops_current) stops it."""
    return {d for f in found if f.kind == "contraindication" and not f.start_only and not f.taken
            for d in f.blocks if f.stops_current or d != "denosumab"}


def plan_treatment(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding],
                   state: TherapyState | None = None) -> TreatmentPlan | None:
    state = state or TherapyState()
    stopping = stopping_drugs(found)
    # a drug being taken that a contraindication stops leaves the patient to be treated with another
    # (alendronate with a clearance below 35: the card offers what is not blocked), unless the finding
    # hands bone care over (oncology, a drug complication: its own card says what to do)
    replacing = [t for t in interp.active_therapies if t.drug in stopping]
    hands_over = any(f.summary for f in found if f.kind == "contraindication" and set(f.blocks) & {t.drug for t in replacing})
    still_treated = [t for t in interp.active_therapies if t.drug not in stopping]
    if still_treated or (interp.treated and hands_over) or not interp.treatment_indicated or state.suppress_plan:
        return None  # on therapy, or a therapy-management card says what to do (a holiday, a hand-over)
    level = "very_high" if interp.risk == "very_high" else "high"
    opt = k.treatment["options"][level]
    blocked: dict[str, list[Finding]] = {}
    warned: dict[str, list[Finding]] = {}
    for f in found:
        for d in f.blocks:
            blocked.setdefault(d, []).append(f)
        for d in f.warns:
            warned.setdefault(d, []).append(f)
    candidates = list(opt["first"])
    when_blocked = opt.get("alternatives_when_blocked")
    if not when_blocked or any(d in blocked for d in when_blocked):
        candidates += opt["alternatives"]
    offered = [d for d in candidates if d not in blocked and d not in state.never_offer]
    not_offered = {d: blocked[d] for d in candidates if d in blocked}
    # a drug offered only with a caution that says so is never the recommended one
    not_first = {d for d in offered for f in warned.get(d, []) if f.not_first}
    firsts = [d for d in offered if d not in not_first]
    recommended = next((d for d in firsts if d in opt["first"]), firsts[0] if firsts else None)
    labs_to_check = [lab["display"] for lab in
                     missing_labs(facts, k, k.treatment["orders"]["labs_before_first_dose"])]
    return TreatmentPlan(level, offered, recommended, not_offered, {d: warned[d] for d in offered if d in warned},
                         opt["note"], list(opt["guidelines"]), labs_to_check, list(state.history),
                         {d: v for d, v in state.course_notes.items() if d in offered},
                         {d: v for d, v in state.never_offer.items() if d in candidates},
                         [t.label for t in replacing])


def manage(interp: Interpretation, facts: Facts, k: Knowledge, found: list[Finding],
           state: TherapyState | None = None) -> list[Management]:
    state = state if state is not None else therapy_state(interp, facts, k)
    blocked = {d for f in found for d in f.blocks}
    # the drug being taken is checked too (rules §6.1): a contraindicated one is never "continue"; denosumab
    # is never simply stopped, so its dose reminders stay unless a finding hands it over (stops_current)
    stopping = stopping_drugs(found)
    active_drugs = {m.drug for m in interp.active_therapies}
    antiresorptive = set(k.treatment["orders"]["antiresorptive_classes"])
    # a subtrochanteric or femoral shaft fracture on an antiresorptive is reviewed for an atypical
    # femoral fracture instead (rules §6.3): not "fracture on therapy", and no "continue" meanwhile
    in_review = {m.drug for f, m in interp.on_therapy if f.aff_site and m.drug_class in antiresorptive}
    out = manage_therapies(interp, facts, k, found, state, stopping, blocked, in_review)
    out += _fractures_on_therapy(interp, k, blocked, active_drugs)
    return out


def _fractures_on_therapy(interp: Interpretation, k: Knowledge, blocked: set[str],
                          active_drugs: set[str]) -> list[Management]:
    """Rules §6.3: a fragility fracture while a drug covered the patient names the drug and the fracture
    and asks about adherence and secondary causes; "treatment failure" only from IOF 2012's count of
    fractures on therapy; a subtrochanteric or femoral shaft fracture on an antiresorptive is reviewed for
    an atypical femoral fracture instead."""
    from .therapy_rules import TherapyFinding

    antiresorptive = set(k.treatment["orders"]["antiresorptive_classes"])
    out: list[Management] = []
    aff = [(f, m) for f, m in interp.on_therapy if f.aff_site and m.drug_class in antiresorptive]
    others = [(f, m) for f, m in interp.on_therapy if (f, m) not in aff]
    for f, m in aff:
        out.append(Management("atypical-femoral-fracture-review", "warning", ["ASBMR-2014", "LABELS"],
                              finding=TherapyFinding("atypical-femoral-fracture-review", m, fractures=((f, m),))))
    if not others:
        return out
    anabolic = [d for d in k.management("after_failure") if d not in blocked and d not in active_drugs]
    failure = len(others) >= k.fracture_rules.treatment_failure_min
    out.append(Management("fracture-on-therapy", "warning",
                          ["IOF-2012", "AACE-2020", "ES-2019"] if failure else ["AACE-2020", "IOF-2012"],
                          suggest=anabolic,
                          finding=TherapyFinding("fracture-on-therapy", others[0][1], fractures=tuple(others))))
    return out


def monitoring(interp: Interpretation, facts: Facts, k: Knowledge, plan: TreatmentPlan | None) -> tuple[list[Order], list[str]]:
    orders: list[Order] = []
    notes: list[str] = []
    fracture_dxa = _dxa_after_fracture(interp, facts, k)
    if interp.diagnosis not in k.care_diagnoses and not fracture_dxa:
        return orders, notes  # a fragility hip or vertebral fracture gets its DXA and work-up whatever the diagnosis
    for lab in missing_labs(facts, k, k.treatment["labs_for_workup"]):
        orders.append(Order(lab["loinc"], lab["display"],
                            f"no result in the last {k.threshold('lab_max_age_months')} months (secondary causes work-up)"))
    low = interp.lowest_t
    n = k.number
    if interp.method == "t_score" and low is not None and interp.age_at_exam is not None:
        t_op, t_norm = float(k.threshold("t_score_osteoporosis_max")), float(k.threshold("t_score_normal_min"))
        vfa_age = int(n("vfa_age_men")) if facts.patient.sex == "male" else int(n("vfa_age_women"))
        reason = None
        if low.value <= t_op:
            reason = f"T-score {fmt(low.value)} ≤ {fmt(t_op)}"
        elif low.value < t_norm and interp.age_at_exam >= vfa_age:
            reason = f"T-score {fmt(low.value)} < {fmt(t_norm)} at age {interp.age_at_exam} (≥ {vfa_age})"
        elif low.value < t_norm and interp.glucocorticoids:  # long-term use, as for the risk rule
            reason = f"T-score {fmt(low.value)} < {fmt(t_norm)} with glucocorticoid use"
        if reason:
            vfa = k.treatment["vfa"]
            orders.append(Order(vfa["loinc"], vfa["display"], reason))
    exam = interp.exam
    if fracture_dxa:
        dxa = k.treatment["repeat_dxa"]
        orders.append(Order(dxa["loinc"], dxa["display"], fracture_dxa))
    elif interp.active_therapies and exam:
        latest_start = max((m.start for m in interp.active_therapies if m.start), default=None)
        after, within = float(n("repeat_dxa_after_months")), float(n("repeat_dxa_within_months"))
        since_exam = months_between(exam.date, facts.as_of)
        reason = None
        if latest_start and exam.date < latest_start and months_between(latest_start, facts.as_of) >= after:
            reason = f"no DXA since therapy started or changed on {latest_start.isoformat()}"
        elif since_exam >= within:
            reason = f"last DXA {exam.date.isoformat()} is {since_exam:.0f} months old, on therapy"
        if reason:
            dxa = k.treatment["repeat_dxa"]
            orders.append(Order(dxa["loinc"], dxa["display"], reason))
    if plan and plan.offered:
        first, last = int(n("repeat_dxa_after_months")) // 12, int(n("repeat_dxa_within_months")) // 12
        notes.append(f"Repeat DXA {first}-{last} years after starting therapy "
                     f"(LOINC {k.treatment['repeat_dxa']['loinc']}).")
    return orders, notes


def _dxa_after_fracture(interp: Interpretation, facts: Facts, k: Knowledge) -> str | None:
    """Rules §6.3: a fragility hip or vertebral fracture with no DXA on record, or none in the knowledge
    files' months, gets a DXA order: the reason, or None."""
    fractures = [f for f in interp.fractures if f.site in ("hip", "vertebral")]
    if not fractures:
        return None
    months = k.fracture_rules.dxa_after_fracture_months
    f = fractures[-1]
    what = f"{f.site_label} fragility fracture ({f.when})"
    if interp.exam is None:
        return f"{what} and no DXA on record"
    age = months_between(interp.exam.date, facts.as_of)
    if age > months:
        return f"{what}; last DXA {interp.exam.date.isoformat()} is {age:.0f} months old (more than {months})"
    return None


def supportive(interp: Interpretation, facts: Facts, k: Knowledge, plan: TreatmentPlan | None) -> list[str]:
    if interp.diagnosis not in k.care_diagnoses:
        return []
    s = k.treatment["supportive"]
    lines = [s["calcium"], s["vitamin_d"], s["exercise"], s["falls"]]
    oral_offered = plan is not None and any(k.treatment["regimens"][d]["kind"] == "oral_bisphosphonate" for d in plan.offered)
    oral_active = any(m.drug_class == "oral_bisphosphonate" for m in interp.active_therapies)
    if oral_offered or oral_active:
        lines.append(s["oral_bisphosphonate"])
    return lines


def _holiday_dxa(interp: Interpretation, facts: Facts, k: Knowledge, state: TherapyState) -> Order | None:
    """A drug holiday is reassessed with DXA at 2 years, or now when something says reassess (rules §6.1;
    ES-2019): the DXA order when none has been done since the holiday began."""
    h = state.holiday
    if h is None or h.since is None or h.state not in ("in_progress", "reassess"):
        return None
    if interp.exam is not None and interp.exam.date > h.since and h.state == "in_progress":
        return None
    due = months_after(h.since, float(k.number("holiday_dxa_years")) * 12)
    if h.state == "in_progress" and due > facts.as_of:
        return None
    if interp.exam is not None and interp.exam.date >= due:
        return None
    last = f"last DXA {interp.exam.date.isoformat()}" if interp.exam else "no DXA on record"
    dxa = k.treatment["repeat_dxa"]
    return Order(dxa["loinc"], dxa["display"], f"drug holiday since {h.since.isoformat()}: reassess with DXA ({last})")


def advise(interp: Interpretation, facts: Facts, k: Knowledge) -> Advice:
    found = findings(facts, k)
    state = therapy_state(interp, facts, k)
    management = manage(interp, facts, k, found, state)  # first: it says when no new treatment is offered
    plan = plan_treatment(interp, facts, k, found, state)
    orders, notes = monitoring(interp, facts, k, plan)
    dxa = _holiday_dxa(interp, facts, k, state)
    if dxa and all(o.loinc != dxa.loinc for o in orders):
        orders.append(dxa)
    for m in management:  # a lab a therapy rule asks for before the next dose (creatinine before IV doses)
        if m.lab_loinc and all(o.loinc != m.lab_loinc for o in orders):
            lab = next(x for x in k.treatment["labs_for_workup"] if x["loinc"] == m.lab_loinc)
            due = m.finding.due
            orders.append(Order(m.lab_loinc, lab["display"], f"before the next {m.finding.therapy.label} dose"
                                + (f" (due {due.isoformat()})" if due else "")))
    return Advice(interp, found, plan, management, orders, notes, supportive(interp, facts, k, plan), state)
