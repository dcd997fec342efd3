"""Interpretation of the current DXA exam (clinical rules §2: WHO/ISCD, AACE-2020).

Pure functions: Facts + Knowledge → Interpretation. No Flask, no HTTP, no FHIR JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from ..knowledge import Knowledge
from .facts import Facts, Frax, GlucocorticoidCourse, Score, Therapy, age_on, months_between
from .fractures import FractureEvent, fracture_events

SITE_ORDER = ("lumbar_spine", "total_hip", "femoral_neck", "radius_33", "not_stated")


@dataclass
class Exam:
    date: date
    scores: list[Score]

    def diagnostic(self, kind: str) -> list[Score]:
        return [s for s in self.scores if s.kind == kind and s.diagnostic]

    def lowest(self, kind: str) -> Score | None:
        candidates = self.diagnostic(kind)
        if not candidates:
            return None
        return min(candidates, key=lambda s: (s.value, SITE_ORDER.index(s.site) if s.site in SITE_ORDER else 99))


@dataclass
class Interpretation:
    method: str  # t_score | z_score | undetermined
    group: str  # who the patient is for the rules, in words
    age_at_exam: int | None
    exam: Exam | None
    lowest_t: Score | None = None
    lowest_z: Score | None = None
    who_class: str | None = None  # normal | low_bone_mass | osteoporosis (current T-score)
    diagnosis: str = "no_dxa"
    # osteoporosis | low_bone_mass | normal | below_expected_range | within_expected_range
    # | z_score_needed | t_score_needed | undetermined | no_dxa
    basis: list[str] = field(default_factory=list)
    risk: str | None = None  # very_high | high | frax_high | frax_low | frax_needed
    risk_reasons: list[str] = field(default_factory=list)
    active_therapies: list[Therapy] = field(default_factory=list)  # osteoporosis drugs covering the patient now
    previous_therapies: list[Therapy] = field(default_factory=list)  # osteoporosis drugs whose exposure ended
    due_therapies: list[Therapy] = field(default_factory=list)  # dose-by-dose drugs whose next dose is due or late
    fractures: list[FractureEvent] = field(default_factory=list)  # fragility fractures, counted (rules §6.3)
    fractures_not_counted: list[FractureEvent] = field(default_factory=list)
    # fragility fractures while an osteoporosis drug covered the patient, with the drug
    on_therapy: list[tuple[FractureEvent, Therapy]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    glucocorticoids: list[str] = field(default_factory=list)  # long-term systemic use, in words (rules §6.1)
    glucocorticoid_courses: list[GlucocorticoidCourse] = field(default_factory=list)

    @property
    def osteoporosis(self) -> bool:
        return self.diagnosis == "osteoporosis"

    @property
    def treated(self) -> bool:
        return bool(self.active_therapies)

    @property
    def treatment_indicated(self) -> bool:
        return self.diagnosis == "osteoporosis" or (self.diagnosis == "low_bone_mass" and self.risk == "frax_high")


def fmt(value: float) -> str:
    """A score as clinicians write it, with a true minus sign: −4.1."""
    text = f"{value:.1f}" if abs(value * 10 - round(value * 10)) < 1e-9 else f"{value:.2f}"
    return text.replace("-", "−")


def capitalised(text: str) -> str:
    """A sentence with a capital first letter, unless its first word is an abbreviation such as eGFR."""
    first = text.split(" ", 1)[0]
    return text[0].upper() + text[1:] if first.islower() else text


def current_exam(facts: Facts, k: Knowledge) -> Exam | None:
    # the exam is dated by the latest score at a diagnostic site: a later heel scan does not hide it
    scores = [s for s in facts.scores if s.kind in ("t_score", "z_score") and s.date <= facts.as_of]
    scores = [s for s in scores if s.diagnostic] or scores
    if not scores:
        return None
    latest = max(s.date for s in scores)
    window = timedelta(days=int(k.threshold("exam_window_days")))
    best: dict[tuple[str, str, str | None], Score] = {}
    for s in facts.scores:
        if latest - window <= s.date <= latest:
            key = (s.kind, s.site, s.laterality)
            old = best.get(key)
            if old is None or s.date > old.date or (s.date == old.date and s.value < old.value):
                best[key] = s
    return Exam(latest, sorted(best.values(), key=lambda s: (s.kind, s.site, s.laterality or "")))


def active_therapies(facts: Facts, k: Knowledge) -> list[Therapy]:
    """Osteoporosis drugs that cover the patient today (rules §6.1: a dose's cover, a supply, or an
    order or statement in force)."""
    return [t for t in facts.therapies.values() if t.drug_class in k.therapy_classes and t.on_therapy]


def previous_therapies(facts: Facts, k: Knowledge, due: list[Therapy]) -> list[Therapy]:
    """Osteoporosis drugs whose exposure ended (``due``: those whose next dose is due are not among them)."""
    late = {t.drug for t in due}
    return [t for t in facts.therapies.values() if t.drug_class in k.therapy_classes and t.previously_treated
            and t.drug not in late]


def due_therapies(facts: Facts, k: Knowledge) -> list[Therapy]:
    """Dose-by-dose drugs whose next dose is due or late (not a finished course: a romosozumab course of
    its full number of doses has ended)."""
    limit = int(k.number("romosozumab_max_doses"))
    return [t for t in facts.therapies.values() if t.drug_class in k.therapy_classes and t.due
            and not (t.drug_class == "anabolic_sclerostin" and len(t.doses) >= limit)]


def _uses_t_score(facts: Facts, k: Knowledge, age: int, sex: str) -> tuple[bool, str]:
    min_age = int(k.threshold("t_score_min_age"))
    post = any(c.active for c in facts.conditions_of("postmenopausal"))
    pre = any(c.active for c in facts.conditions_of("premenopausal"))
    if sex == "female":
        if post:
            return True, f"postmenopausal woman aged {age} (postmenopausal state recorded)"
        if age >= min_age and not pre:
            return True, f"woman aged {age} (taken as postmenopausal at {min_age} or more)"
        if age >= min_age:
            return False, f"woman aged {age} with a recorded premenopausal state"
        return False, f"woman aged {age}, under {min_age}, no postmenopausal state recorded"
    if sex == "male":
        if age >= min_age:
            return True, f"man aged {age}"
        return False, f"man aged {age}, under {min_age}"
    if age >= min_age:
        return True, f"patient aged {age}, sex not recorded as female or male (T-score used from age {min_age})"
    return False, f"patient aged {age}, under {min_age}, sex not recorded as female or male"


def _glucocorticoid_use(facts: Facts, k: Knowledge) -> tuple[list[str], list[GlucocorticoidCourse]]:
    """Long-term systemic glucocorticoids (rules §6.1, ACR 2022): Z79.52 as stated, and courses read
    from the medication records that are in use or ended within the last year."""
    found = [f"{c.display} ({c.code}, {c.resource})" for c in facts.conditions_of("long_term_glucocorticoids")
             if c.active]
    months = float(k.raw["medications"]["glucocorticoids"]["recent_months"]["value"])
    courses = [c for c in (facts.glucocorticoid or []) if c.current or months_between(c.end, facts.as_of) <= months]
    found += [c.text for c in courses]
    return found, list(facts.glucocorticoid or [])


def _fracture_on_therapy(fracture: FractureEvent, facts: Facts, k: Knowledge) -> Therapy | None:
    """The drug that covered the patient on the fracture's date (exposure begun before it): a fracture
    of certain date only; one known only as "on or before" a date may have come before the drug. A
    fracture in a gap (a drug holiday) is not on therapy (rules §6.3)."""
    if fracture.date is None or not fracture.certain or fracture.history:
        return None
    day = fracture.date
    for t in facts.therapies.values():
        if t.drug_class not in k.therapy_classes or t.first is None or t.first >= day:
            continue
        if any(s <= day <= e for s, e in t.spans) or any(r.start and r.start < day for r in t.current):
            return t
    return None


def fracture_text(f: FractureEvent) -> str:
    return f"{f.display} ({f.when})"


def interpret(facts: Facts, k: Knowledge) -> Interpretation:
    exam = current_exam(facts, k)
    sex = facts.patient.sex
    birth = facts.patient.birth_date
    events = fracture_events(facts, k)
    fractures = [e for e in events if e.counted]
    due = due_therapies(facts, k)
    interp = Interpretation(method="undetermined", group="", age_at_exam=None, exam=exam,
                            active_therapies=active_therapies(facts, k),
                            previous_therapies=previous_therapies(facts, k, due),
                            due_therapies=due, fractures=fractures,
                            fractures_not_counted=[e for e in events if not e.counted])
    for f in fractures:
        on = _fracture_on_therapy(f, facts, k)
        if on is not None:
            interp.on_therapy.append((f, on))
    ref_date = exam.date if exam else facts.as_of
    if birth is None:
        interp.group = "birth date not recorded"
        interp.diagnosis = "undetermined" if exam else "no_dxa"
        interp.notes.append("The patient's birth date is not recorded, so the service cannot tell whether "
                            "T-scores or Z-scores apply.")
        return interp
    age = age_on(birth, ref_date)
    interp.age_at_exam = age
    use_t, group = _uses_t_score(facts, k, age, sex)
    interp.group = group
    interp.method = "t_score" if use_t else "z_score"
    interp.glucocorticoids, interp.glucocorticoid_courses = _glucocorticoid_use(facts, k)
    if not use_t:
        _interpret_z(interp, exam, fractures, k)
        return interp

    t_normal = float(k.threshold("t_score_normal_min"))
    t_op = float(k.threshold("t_score_osteoporosis_max"))
    lowest = exam.lowest("t_score") if exam else None
    interp.lowest_t = lowest
    if lowest is not None:
        if lowest.value <= t_op:
            interp.who_class = "osteoporosis"
            interp.basis.append(f"lowest T-score {fmt(lowest.value)} at the {lowest.site_label} on "
                                f"{lowest.date.isoformat()} is at or below {fmt(t_op)} (WHO)")
        elif lowest.value < t_normal:
            interp.who_class = "low_bone_mass"
        else:
            interp.who_class = "normal"
        if lowest.site_note:
            interp.notes.append(f"T-score {fmt(lowest.value)}: {lowest.site_note}; it is used as a diagnostic "
                                "T-score, but it was not necessarily measured at the forearm.")
    elif exam is not None:
        interp.notes.append("The current DXA exam has no T-score at a diagnostic site.")
    for s in (exam.scores if exam else []):
        if s.kind == "t_score" and not s.diagnostic:
            interp.notes.append(f"T-score {fmt(s.value)} at the {s.site_label} is not diagnostic (peripheral site); not used.")
        elif s.site_note and s is not lowest and s.kind == "t_score":
            interp.notes.append(f"T-score {fmt(s.value)} on {s.date.isoformat()}: {s.site_note}.")

    # fractures that establish osteoporosis whatever the T-score
    for f in fractures:
        if f.site in ("hip", "vertebral"):
            interp.basis.append(f"{f.site} fragility fracture ({f.when}): {f.display} — osteoporosis whatever the T-score")
    # a past diagnosis persists (seed; AACE-2020)
    for c in facts.conditions_of("osteoporosis"):
        if c.active:
            interp.basis.append(f"osteoporosis on the problem list: {c.display} ({c.code}) — the diagnosis persists")
    min_age = int(k.threshold("t_score_min_age"))
    for s in facts.scores:
        if exam and s.date >= exam.date - timedelta(days=int(k.threshold("exam_window_days"))):
            continue
        if s.kind == "t_score" and s.diagnostic and s.value <= t_op and age_on(birth, s.date) >= min_age:
            interp.basis.append(f"earlier T-score {fmt(s.value)} at the {s.site_label} on {s.date.isoformat()} "
                                "— a past osteoporosis diagnosis persists")
            break

    if interp.basis:
        interp.diagnosis = "osteoporosis"
    elif interp.who_class:
        interp.diagnosis = interp.who_class
    else:
        interp.diagnosis = "t_score_needed" if exam else "no_dxa"
    if interp.diagnosis == "osteoporosis":
        _risk_osteoporosis(interp, facts, k, lowest, fractures)
    elif interp.diagnosis == "low_bone_mass":
        _risk_low_bone_mass(interp, facts, k)
        if fractures:
            for f in fractures:
                interp.notes.append(f"Fracture on record: {fracture_text(f)}; site not hip or spine.")
    return interp


def _risk_osteoporosis(interp: Interpretation, facts: Facts, k: Knowledge, lowest: Score | None,
                       fractures: list[FractureEvent]) -> None:
    very_high_t = float(k.threshold("very_high_risk_t_below"))
    if lowest is not None and lowest.value < very_high_t:
        interp.risk_reasons.append(f"T-score {fmt(lowest.value)} is below {fmt(very_high_t)}")
    recent_months = float(k.threshold("recent_fracture_months"))
    on_therapy = {id(f): m for f, m in interp.on_therapy}
    for f in fractures:
        if f.recent(facts.as_of, recent_months):
            interp.risk_reasons.append(f"fracture in the last {int(recent_months)} months: {fracture_text(f)}")
        on = on_therapy.get(id(f))
        if on:
            interp.risk_reasons.append(f"fracture while on {on.label}: {f.display} ({f.when})")
    # fracture events, not Conditions: one fracture coded several times is one (rules §6.3)
    if len(fractures) >= int(k.threshold("multiple_fractures_min")):
        interp.risk_reasons.append(f"multiple fractures ({len(fractures)} recorded)")
    # glucocorticoids (rules §2 as revised with §6.1, ACR 2022): a fracture on them, or a very high dose,
    # is very high risk; long-term use alone is named on the cards and lowers the threshold, no more
    for f in fractures:
        on_gc = _fracture_on_glucocorticoids(f, interp, facts)
        if on_gc:
            interp.risk_reasons.append(f"fracture while on long-term glucocorticoids: {f.display} ({f.when}); {on_gc}")
    months = float(k.threshold("recent_fracture_months"))
    for c in interp.glucocorticoid_courses:
        if c.very_high and (c.current or months_between(c.end, facts.as_of) <= months):
            interp.risk_reasons.append(f"very high glucocorticoid dose: {c.very_high} ({', '.join(c.resources)})")
    interp.risk = "very_high" if interp.risk_reasons else "high"


def _fracture_on_glucocorticoids(f: FractureEvent, interp: Interpretation, facts: Facts) -> str | None:
    """A fragility fracture during a long-term course (its start on or before the fracture), or while
    Z79.52 (long-term use) stood recorded: what showed the use, or None."""
    if f.date is None or f.history:
        return None
    for c in interp.glucocorticoid_courses:
        if c.start <= f.date <= c.end:
            return c.text
    for c in facts.conditions_of("long_term_glucocorticoids"):
        if c.active and (c.onset is None or c.onset <= f.date):
            return f"{c.display} ({c.code}, {c.resource})"
    return None


def _risk_low_bone_mass(interp: Interpretation, facts: Facts, k: Knowledge) -> None:
    latest: dict[str, Frax] = {}
    for f in sorted(facts.frax, key=lambda x: x.date):
        latest[f.fracture] = f
    if not latest:
        interp.risk = "frax_needed"
        return
    hip_t = float(k.threshold("frax_hip_treat_percent"))
    major_t = float(k.threshold("frax_major_treat_percent"))
    hip, major = latest.get("hip"), latest.get("major")
    if hip is not None and hip.percent >= hip_t:
        interp.risk_reasons.append(f"FRAX 10-year hip fracture risk {hip.percent:g}% ≥ {hip_t:g}%")
    if major is not None and major.percent >= major_t:
        interp.risk_reasons.append(f"FRAX 10-year major osteoporotic fracture risk {major.percent:g}% ≥ {major_t:g}%")
    interp.risk = "frax_high" if interp.risk_reasons else "frax_low"


def _interpret_z(interp: Interpretation, exam: Exam | None, fractures: list[FractureEvent], k: Knowledge) -> None:
    z_cut = float(k.threshold("z_score_below_expected"))
    if exam is None:
        interp.diagnosis = "no_dxa"
        return
    lowest = exam.lowest("z_score")
    interp.lowest_z = lowest
    t_scores = exam.diagnostic("t_score")
    if t_scores:
        listed = ", ".join(f"{fmt(s.value)} ({s.site_label})" for s in t_scores)
        interp.notes.append(f"T-scores in this exam ({listed}) are not used for diagnosis in this group (ISCD): "
                            "osteoporosis is not diagnosed from a T-score here.")
    if lowest is None:
        interp.diagnosis = "z_score_needed"
        return
    if lowest.value <= z_cut:
        interp.diagnosis = "below_expected_range"
        interp.basis.append(f"lowest Z-score {fmt(lowest.value)} at the {lowest.site_label} on "
                            f"{lowest.date.isoformat()} is at or below {fmt(z_cut)}")
    else:
        interp.diagnosis = "within_expected_range"
        interp.basis.append(f"lowest Z-score {fmt(lowest.value)} at the {lowest.site_label} on "
                            f"{lowest.date.isoformat()} is above {fmt(z_cut)}")
    for f in fractures:
        interp.notes.append(f"Fracture on record: {fracture_text(f)}: evaluate for secondary causes.")
