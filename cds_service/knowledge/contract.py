"""What the rules read from the knowledge files, and as what type (issue 13, item 5).

``CONTRACT`` names, for each file, every place the code reads at a fixed key and the type it reads
there. ``check_contract`` runs at load, after the JSON Schema: a place that is missing or of another
type stops start-up with a message naming the file and the place, instead of an error at the first
hook call. Only keys and types are written here; every clinical value stays in the files.

A place is a path of keys joined by "/". "*" stands for every key of a mapping or every item of a
list; a key ending in "?" may be absent (nothing below it is then read).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError


class Kind(NamedTuple):
    text: str  # what the rules read the value as, for messages
    adapter: TypeAdapter


def _kind(text: str, tp: Any) -> Kind:
    return Kind(text, TypeAdapter(tp))


_Text = Annotated[StrictStr, Field(min_length=1)]
_Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # strict: an int is a number, a bool or text is not

INT = _kind("an integer", StrictInt)  # strict: a bool, a float or a text is refused
NUMBER = _kind("a number", _Number)
TEXT = _kind("a text", _Text)
SOURCE = _kind("a source text of at least 3 characters", Annotated[StrictStr, Field(min_length=3)])
FLAG = _kind("true or false", StrictBool)
TEXTS = _kind("a list of texts", list[_Text])
SOME_TEXTS = _kind("a non-empty list of texts", Annotated[list[_Text], Field(min_length=1)])
STATUSES = _kind("a list of texts or nulls", list[Optional[_Text]])
TEXT_OR_TEXTS = _kind("a text or a non-empty list of texts", _Text | Annotated[list[_Text], Field(min_length=1)])
MAPPING = _kind("a mapping", dict[StrictStr, Any])
LIST = _kind("a list", list[Any])
TEXT_MAP = _kind("a mapping of texts", dict[StrictStr, _Text])
WORD_LISTS = _kind("a mapping of lists of texts", dict[StrictStr, list[_Text]])
FACTORS = _kind("a non-empty mapping of units to positive numbers",
                Annotated[dict[StrictStr, Annotated[_Number, Field(gt=0)]], Field(min_length=1)])


def _entries(kinds: dict[str, Kind], under: str = "") -> dict[str, Kind]:
    """Entries of the form {value: ..., source: ...}: the value of its kind, and its source."""
    out: dict[str, Kind] = {}
    for key, kind in kinds.items():
        out[f"{under}{key}/value"] = kind
        out[f"{under}{key}/source"] = SOURCE
    return out


# thresholds.yaml: read by Knowledge.threshold(key)
THRESHOLDS = {
    "observation_status_counted": STATUSES,
    "medication_status_counted": STATUSES,
    "condition_verification_excluded": STATUSES,
    "condition_verification_confirmed": STATUSES,
    "condition_clinical_active": STATUSES,
    "exam_window_days": INT,
    "t_score_min_age": INT,
    "z_score_below_expected": NUMBER,
    "t_score_normal_min": NUMBER,
    "t_score_osteoporosis_max": NUMBER,
    "very_high_risk_t_below": NUMBER,
    "recent_fracture_months": NUMBER,
    "multiple_fractures_min": INT,
    "frax_hip_treat_percent": NUMBER,
    "frax_major_treat_percent": NUMBER,
    "lab_max_age_months": INT,  # also written into card text as it is
    "pregnancy_check_age_below": INT,  # also written into card text as it is
    "result_future_tolerance_days": INT,
    "result_status_supersedes": STATUSES,
}

# treatment.yaml numbers: read by Knowledge.number(key). Numbers named by a `when` of a
# contraindication or secondary cause are checked as NUMBER as well (see _when_numbers).
NUMBERS = {
    "corrected_calcium_pairing_days": INT,
    "albumin_reference": NUMBER,
    "albumin_factor": NUMBER,
    "calcium_high_normal": NUMBER,
    "denosumab_interval_months": NUMBER,
    "denosumab_overdue_months": INT,  # written into card text as it is
    "oral_bisphosphonate_holiday_years": NUMBER,
    "iv_bisphosphonate_holiday_years": NUMBER,
    "holiday_reassess": TEXT,
    "pth_analog_max_months": INT,  # written into card text as it is
    "pth_independent_below": NUMBER,
    "albumin_ionized_calcium_needed": NUMBER,
    "romosozumab_max_doses": INT,
    "oral_bisphosphonate_max_years": NUMBER,
    "iv_bisphosphonate_max_years": NUMBER,
    "holiday_dxa_years": NUMBER,
    "holiday_reassess_years": NUMBER,
    "denosumab_followon_zoledronic_min_months": NUMBER,
    "anabolic_followon_months": NUMBER,
    "iv_dose_creatinine_days": INT,
    "iv_dose_past_days": INT,
    "repeat_dxa_after_months": INT,
    "repeat_dxa_within_months": INT,
    "vfa_age_women": INT,
    "vfa_age_men": INT,
}

# treatment.yaml management: read by Knowledge.management(key)
MANAGEMENT = {"after_denosumab": TEXTS, "after_anabolic": TEXTS, "after_failure": TEXTS}

# guidelines.yaml: the keys the code names (cards' guideline lists); every entry is read the same way
GUIDELINES = ("WHO-ISCD", "AACE-2020", "ES-2019", "BHOF-2022", "ES-2011", "LABELS", "IOF-2012", "ASBMR-2014",
              "ASBMR-2016", "ECTS-2021", "ACR-2022")

# cards.yaml topics the code builds cards for
TOPICS = ("bmd-interpretation", "treatment", "therapy-management", "safety", "monitoring", "supportive-care")

# treatment.yaml options levels the code reads
LEVELS = ("very_high", "high")

_REGIMEN = {
    "short": TEXT, "rxnorm/code": TEXT, "rxnorm/display": TEXT, "dose/value": NUMBER, "dose/unit": TEXT,
    "route/code": TEXT, "route/display": TEXT, "timing/frequency": INT, "timing/period": NUMBER,
    "timing/periodUnit": TEXT, "duration?/value": NUMBER, "duration?/unit": TEXT, "text": TEXT, "kind": TEXT,
}
_OPTION = {"first": TEXTS, "alternatives": TEXTS, "guidelines": SOME_TEXTS, "note": TEXT}
_ORDER = {"loinc": TEXT, "display": TEXT, "source": SOURCE}

CONTRACT: dict[str, dict[str, Kind]] = {
    "thresholds": _entries(THRESHOLDS),
    "treatment": {
        **_entries(NUMBERS, "numbers/"),
        **_entries(MANAGEMENT, "management/"),
        **{f"regimens/*/{p}": kind for p, kind in _REGIMEN.items()},
        **{f"options/{level}/{p}": kind for level in LEVELS for p, kind in _OPTION.items()},
        "options/*/alternatives_when_blocked?": TEXTS,
        "contraindications/*/id": TEXT, "contraindications/*/when": MAPPING,
        "contraindications/*/message": TEXT, "contraindications/*/action": TEXT,
        "contraindications/*/source": TEXT, "contraindications/*/blocks?": TEXTS,
        "contraindications/*/warns?": TEXTS, "contraindications/*/also_condition?": TEXT,
        "contraindications/*/safety_card?": FLAG, "contraindications/*/indicator?": TEXT,
        "contraindications/*/always_card?": FLAG, "contraindications/*/stops_current?": FLAG,
        "contraindications/*/not_first?": FLAG, "contraindications/*/summary?": TEXT,
        "contraindications/*/start_only?": FLAG, "contraindications/*/taken?": TEXT,
        "secondary_causes/*/id": TEXT, "secondary_causes/*/when": MAPPING, "secondary_causes/*/title": TEXT,
        "secondary_causes/*/action": TEXT, "secondary_causes/*/source": TEXT, "secondary_causes/*/suggest?": TEXT,
        "care_diagnoses/value": TEXTS, "care_diagnoses/source": SOURCE,
        "cautions/pregnancy/value": TEXT, "cautions/pregnancy/source": SOURCE,
        "taken/stop_or_hold/value": TEXT, "taken/stop_or_hold/source": SOURCE,
        "taken/denosumab/value": TEXT, "taken/denosumab/source": SOURCE,
        "courses/pth_beyond_limit/value": TEXT, "courses/pth_beyond_limit/source": SOURCE,
        "holiday/hip_sites/value": SOME_TEXTS, "holiday/hip_sites/source": SOURCE,
        "labs_for_workup": LIST, "labs_for_workup/*/analyte": TEXT_OR_TEXTS,
        **{f"labs_for_workup/*/{p}": kind for p, kind in _ORDER.items()},
        **{f"repeat_dxa/{p}": kind for p, kind in _ORDER.items()},
        **{f"vfa/{p}": kind for p, kind in _ORDER.items()},
        **{f"supportive/{p}": TEXT for p in ("summary", "calcium", "vitamin_d", "exercise", "falls",
                                             "oral_bisphosphonate")},
        "orders/antiresorptive_classes": TEXTS, "orders/follow_on_classes": TEXTS,
        "orders/labs_before_first_dose": LIST, "orders/labs_before_first_dose/*/analyte": SOME_TEXTS,
        "orders/labs_before_first_dose/*/loinc": TEXT, "orders/labs_before_first_dose/*/display": TEXT,
        "orders/stopping_statuses": TEXTS,
    },
    "guidelines": {
        **{f"{g}/{p}": TEXT for g in GUIDELINES for p in ("label", "citation", "url")},
        "*/label": TEXT, "*/citation": TEXT, "*/url": TEXT,
    },
    "cards": {
        "topic_system": TEXT, "topics": TEXT_MAP, **{f"topics/{t}": TEXT for t in TOPICS},
        "override_system": TEXT, "override_reasons": MAPPING,
        "override_reasons/*/*/code": TEXT, "override_reasons/*/*/display": TEXT,
        **{f"unreadable_dxa/{p}": TEXT for p in ("summary", "head", "action")}, "unreadable_dxa/source": SOURCE,
    },
    "medications": {  # therapy: read by clinical/facts (rules §6.1); glucocorticoids (rules §6.1, ACR 2022)
        "therapy/source": SOURCE,
        **_entries({"request_intents": SOME_TEXTS, "request_statuses": SOME_TEXTS, "request_not_counted": TEXTS,
                    "statement_statuses": SOME_TEXTS, "statement_not_counted": TEXTS,
                    "administration_doses": SOME_TEXTS, "administration_uncertain": TEXTS,
                    "administration_not_counted": TEXTS, "dispense_statuses": SOME_TEXTS, "fhir_statuses": WORD_LISTS,
                    "merge_days": INT, "gap_bridged_days": INT, "request_default_days": INT, "max_supply_days": INT,
                    "dispense_default_days": INT, "no_supply_days": INT, "statement_unverified_months": NUMBER,
                    "schedules": MAPPING, "dose_units": SOME_TEXTS, "dose_days": MAPPING}, "therapy/"),
        **{f"therapy/fhir_statuses/value/{rt}": SOME_TEXTS for rt in (
            "MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense")},
        "therapy/schedules/value/*/mode": TEXT, "therapy/schedules/value/*/cover_months?": NUMBER,
        "therapy/schedules/value/*/iv?/cover_months": NUMBER, "therapy/schedules/value/*/iv?/routes": TEXTS,
        "therapy/schedules/value/*/iv?/patterns": SOME_TEXTS,
        "therapy/schedules/value/*/doses_per_unit?": FACTORS, "therapy/dose_days/value/*": INT,
        "glucocorticoids/source": SOURCE,
        **_entries({"equivalents": FACTORS, "not_counted_names": TEXTS, "systemic_routes": TEXTS, "local_routes": TEXTS,
                    "systemic_words": SOME_TEXTS, "local_words": SOME_TEXTS, "min_daily_mg": NUMBER, "min_days": INT,
                    "join_gap_days": INT, "very_high_daily_mg": NUMBER, "very_high_days": INT,
                    "very_high_year_grams": NUMBER, "frax_note": TEXT, "recent_months": INT}, "glucocorticoids/"),
    },
    "conditions": {  # fractures: read by Knowledge.fracture_rules (rules §6.3)
        "fractures/source": SOURCE,
        **_entries({"same_event_days": INT, "dxa_after_fracture_months": INT, "treatment_failure_min": INT},
                   "fractures/"),
        **_entries({"initial": SOME_TEXTS, "later": SOME_TEXTS}, "fractures/seventh_character/"),
        **_entries({"icd10cm": TEXTS, "text_patterns": TEXTS}, "fractures/history/"),
        **_entries({"same_day_days": INT}, "fractures/high_energy/"),
        "fractures/high_energy/causes": LIST, "fractures/high_energy/causes/*/id": TEXT,
        "fractures/high_energy/causes/*/label": TEXT, "fractures/high_energy/causes/*/icd10cm": SOME_TEXTS,
        "fractures/high_energy/causes/*/except": TEXTS, "fractures/high_energy/causes/*/source": SOURCE,
        "fractures/site_detail/source": SOURCE, "fractures/site_detail/rules": LIST,
        "fractures/site_detail/rules/*/icd10cm": SOME_TEXTS, "fractures/site_detail/rules/*/kind": TEXT,
        "fractures/site_detail/rules/*/position": INT, "fractures/site_detail/rules/*/values?": TEXT_MAP,
        "fractures/site_detail/rules/*/unstated?": TEXTS,
        "fractures/site_detail/levels": TEXT_MAP, "fractures/site_detail/text_laterality": TEXT_MAP,
        **_entries({"icd10cm": SOME_TEXTS, "text_patterns": TEXTS}, "fractures/atypical_femoral_review/"),
    },
    "dxa": {
        "sites/*/label": TEXT, "sites/*/diagnostic": FLAG,
        "sites/not_stated/label": TEXT, "sites/not_stated/diagnostic": FLAG,  # a site-less score falls back to it
        "codes/*/code": TEXT, "codes/*/kind": TEXT, "codes/*/site": TEXT,
        "codes/*/laterality?": TEXT, "codes/*/ambiguous_site?": FLAG,
        "panels/*/code": TEXT,
        "body_sites/snomed/*/code": TEXT, "body_sites/snomed/*/site": TEXT,
        "body_sites/keywords/*/text": TEXT, "body_sites/keywords/*/site": TEXT,
        "body_sites/keywords/*/body_site_only?": FLAG,
    },
    "labs": {  # the analytes' code lists are checked with the value sets, not here
        "interpretation/low": TEXTS, "interpretation/high": TEXTS, "interpretation/normal": TEXTS,
        "analytes": MAPPING, "analytes/*/label": TEXT, "analytes/*/unit": TEXT, "analytes/*/units": FACTORS,
        "analytes/*/display_unit?": TEXT,
        "analytes/*/default_range?/low": NUMBER, "analytes/*/default_range?/high": NUMBER,
        "frax/codes": LIST, "frax/codes/*/code": TEXT, "frax/codes/*/fracture": TEXT,
        "derived/*/label": TEXT, "derived/*/unit": TEXT, "derived/*/source": SOURCE,
        "derived/kidney_function/label": TEXT, "derived/creatinine_clearance/label": TEXT,
        "reports/codes": SOME_TEXTS, "reports/source": SOURCE,
        **_entries({"egfr_race_free": SOME_TEXTS, "egfr_race_black": TEXTS, "creatinine_newer_days": INT,
                    "weight_max_age_months": INT}, "kidney/"),
        **{f"kidney/ckd_epi_2021/{p}": NUMBER for p in ("constant", "exponent_above", "age_base", "female_factor",
                                                         "kappa/female", "kappa/male", "alpha/female", "alpha/male")},
        "kidney/ckd_epi_2021/label": TEXT, "kidney/ckd_epi_2021/source": SOURCE,
        **{f"kidney/cockcroft_gault/{p}": NUMBER for p in ("age_from", "divisor", "female_factor")},
        "kidney/cockcroft_gault/label": TEXT, "kidney/cockcroft_gault/source": SOURCE,
        "frax/text_patterns": WORD_LISTS,
    },
}


def check_contract(raw: dict[str, Any], base: Path, paths: dict[str, Path] | None = None) -> None:
    """Raise KnowledgeError, naming the file and the place, at the first place of CONTRACT that is
    missing or not of its type (and at a number named by a `when` that is not a number).
    ``paths``: the file each name was read from, when not ``base / name.yaml``."""
    from . import KnowledgeError  # here, not at the top: the package imports this module

    def fail(name: str, err: str) -> None:
        path = (paths or {}).get(name) or base / f"{name}.yaml"
        raise KnowledgeError(f"knowledge file {path}: {err}")

    for name, places in CONTRACT.items():
        for place, kind in places.items():
            err = _check(raw.get(name), place.split("/"), [], kind)
            if err:
                fail(name, err)
    numbers = raw["treatment"]["numbers"]
    for key in sorted(_when_numbers(raw["treatment"]) & set(numbers)):
        for place, kind in _entries({key: NUMBER}).items():
            err = _check(numbers, place.split("/"), ["numbers"], kind)
            if err:
                fail("treatment", err)


def _when_numbers(treatment: dict[str, Any]) -> set[str]:
    """The numbers: keys named by the `when` of contraindications and secondary causes."""
    out: set[str] = set()

    def walk(when: Any) -> None:
        if isinstance(when, dict):
            if isinstance(when.get("number"), str):
                out.add(when["number"])
            for group in ("any", "all"):
                for sub in when.get(group) if isinstance(when.get(group), list) else []:
                    walk(sub)

    for entry in treatment["contraindications"] + treatment["secondary_causes"]:
        walk(entry.get("when"))
    return out


def _check(node: Any, segments: list[str], at: list[str], kind: Kind) -> str | None:
    """The first problem with the place ``segments`` below ``node`` (reached by ``at``), or None."""
    if not segments:
        try:
            kind.adapter.validate_python(node)
        except ValidationError as exc:
            return _wrong(node, at, kind, exc)
        return None
    seg, rest = segments[0], segments[1:]
    if seg == "*":
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            return f"at {_place(at)}: expected a mapping or a list, got {_show(node)}"
        for key, value in items:
            err = _check(value, rest, at + [str(key)], kind)
            if err:
                return err
        return None
    key = seg.removesuffix("?")
    if not isinstance(node, dict):
        return f"at {_place(at)}: expected a mapping, got {_show(node)}"
    if key not in node:
        if seg.endswith("?"):
            return None
        below = [s.removesuffix("?") for s in rest]
        what = "it" if below in ([], ["value"]) else "its " + "/".join(below)
        return f"at {_place(at + [key])}: missing (the rules read {what} as {kind.text})"
    return _check(node[key], rest, at + [key], kind)


def _wrong(node: Any, at: list[str], kind: Kind, exc: ValidationError) -> str:
    """A type error: at the place, or at the item or key inside it that is wrong."""
    inner: list[str] = []
    bad = node
    for part in exc.errors()[0]["loc"]:  # follow the error into lists and mappings; stop at a union's tag
        if isinstance(bad, list) and isinstance(part, int) and part < len(bad):
            bad = bad[part]
        elif isinstance(bad, dict) and part in bad:
            bad = bad[part]
        else:
            break
        inner.append(str(part))
    if not inner:
        return f"at {_place(at)}: expected {kind.text}, got {_show(node)}"
    msg = exc.errors()[0]["msg"]
    return f"at {_place(at + inner)}: {msg[:1].lower() + msg[1:]}, got {_show(bad)} ({_place(at)} is read as {kind.text})"


def _place(at: list[str]) -> str:
    return "/".join(at) or "(top)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
