"""Clinical knowledge: codes, units, thresholds and citations, loaded once from data files.

The files beside this module are the only place where clinical facts live. They are read and
checked at start-up; a broken file stops start-up with a message naming the file and the place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .terminology import CodeIndex, DrugNames, Hit, ValueSet, brands, load_valuesets, norm_icd, norm_name

FILES = ("dxa", "labs", "conditions", "medications", "thresholds", "guidelines", "cards", "treatment",
         "terminology")
LOCAL_CODES = "local-codes.yaml"  # a site's own codes and names, in CDS_KNOWLEDGE_DIR


class KnowledgeError(Exception):
    """A knowledge file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class DxaCode:
    code: str
    kind: str
    site: str
    laterality: str | None
    ambiguous_site: bool


@dataclass(frozen=True)
class Drug:
    key: str
    label: str
    drug_class: str
    valueset: str
    names: tuple[str, ...]
    strength_of: str | None = None
    strengths: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True)
class ConceptMatch:
    """A record's code found in a concept's value set."""
    concept: str
    site: str | None  # the fracture site, for fracture value sets
    coding: dict[str, Any]  # the record's coding that matched
    hit: Hit


def _icd_ranges(items: list[str]) -> tuple[tuple[str, str], ...]:
    """ICD-10-CM codes and ranges ("V00-V99", "W11-W14", "V00.81") as (first, last) prefixes."""
    out = []
    for item in items:
        first, _, last = item.partition("-")
        out.append((norm_icd(first), norm_icd(last or first)))
    return tuple(out)


def in_icd_ranges(code: str, ranges: tuple[tuple[str, str], ...]) -> bool:
    """A normalised ICD-10-CM code falls in one of the ranges (a range's ends cover their children)."""
    return any(first <= code[:len(first)] and code[:len(last)] <= last for first, last in ranges)


@dataclass(frozen=True)
class HighEnergyCause:
    id: str
    label: str
    ranges: tuple[tuple[str, str], ...]
    excepted: tuple[tuple[str, str], ...]
    source: str

    def covers(self, code: str) -> bool:
        return in_icd_ranges(code, self.ranges) and not in_icd_ranges(code, self.excepted)


@dataclass(frozen=True)
class SiteDetailRule:
    prefixes: tuple[str, ...]
    kind: str  # laterality | level
    position: int
    values: dict[str, str]
    unstated: tuple[str, ...]


@dataclass(frozen=True)
class FractureRules:
    """conditions.yaml fractures: (rules §6.3), read once."""
    same_event_days: int
    initial: frozenset[str]
    later: frozenset[str]
    history_codes: frozenset[str]
    history_text: re.Pattern[str] | None
    same_day_days: int
    causes: tuple[HighEnergyCause, ...]
    detail_rules: tuple[SiteDetailRule, ...]
    levels: dict[str, str]
    text_laterality: tuple[tuple[str, re.Pattern[str]], ...]
    dxa_after_fracture_months: int
    treatment_failure_min: int
    aff_prefixes: tuple[str, ...]
    aff_text: re.Pattern[str] | None


def _any_of(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.I) if patterns else None


@dataclass(eq=False)  # compared and hashed by identity: one instance per loaded knowledge
class Knowledge:
    raw: dict[str, Any]
    directory: str = ""
    valuesets: dict[str, ValueSet] = field(default_factory=dict)
    site_directory: str = ""  # CDS_KNOWLEDGE_DIR, when one is used

    # -- DXA -------------------------------------------------------------------------------
    @cached_property
    def dxa_by_code(self) -> dict[str, DxaCode]:
        out = {}
        for e in self.raw["dxa"]["codes"]:
            out[e["code"]] = DxaCode(e["code"], e["kind"], e["site"], e.get("laterality"),
                                     bool(e.get("ambiguous_site")))
        return out

    @cached_property
    def dxa_panel_codes(self) -> frozenset[str]:
        return frozenset(p["code"] for p in self.raw["dxa"]["panels"])

    def site(self, key: str) -> dict[str, Any]:
        return self.raw["dxa"]["sites"][key]

    @cached_property
    def body_site_snomed(self) -> dict[str, str]:
        return {e["code"]: e["site"] for e in self.raw["dxa"]["body_sites"]["snomed"]}

    @cached_property
    def body_site_keywords(self) -> list[dict[str, Any]]:
        return list(self.raw["dxa"]["body_sites"]["keywords"])

    # -- labs ------------------------------------------------------------------------------
    @cached_property
    def lab_by_code(self) -> dict[str, str]:
        """LOINC code → analyte: the codes of labs.yaml and of the analyte's value set."""
        out: dict[str, str] = {}
        for key, a in self.raw["labs"]["analytes"].items():
            for c in self.analyte_codes(key):
                out.setdefault(c, key)
        return out

    def analyte_codes(self, key: str) -> list[str]:
        a = self.raw["labs"]["analytes"][key]
        codes = list(a["codes"])
        vs = self.valuesets.get(a["valueset"]) if a.get("valueset") else None
        if vs is not None:
            codes += [c.code for c in vs.codes + vs.local if c.code not in codes]
        return codes

    def analyte(self, key: str) -> dict[str, Any]:
        return self.raw["labs"]["analytes"][key]

    @cached_property
    def frax_codes(self) -> dict[str, str]:
        return {e["code"]: e["fracture"] for e in self.raw["labs"]["frax"]["codes"]}

    # -- conditions ------------------------------------------------------------------------
    def concept(self, key: str) -> dict[str, Any]:
        return self.raw["conditions"]["concepts"][key]

    # -- value sets -------------------------------------------------------------------------
    @cached_property
    def index(self) -> CodeIndex:
        """Every code of every value set, built once per loaded knowledge."""
        systems = {key: e["uri"] for key, e in self.raw["terminology"]["systems"].items()}
        aliases = {a: e["uri"] for e in self.raw["terminology"]["systems"].values() for a in e.get("aliases", [])}
        index = CodeIndex(systems=systems, aliases=aliases)
        for name, vs in self.valuesets.items():
            for code in vs.codes + vs.local:
                index.add(name, code)
        return index

    def lookup(self, system: Any, code: Any) -> list[Hit]:
        return self.index.lookup(system, code)

    @cached_property
    def concepts_by_valueset(self) -> dict[str, list[tuple[str, str | None]]]:
        """value set → the condition concepts (and fracture site) it stands for."""
        out: dict[str, list[tuple[str, str | None]]] = {}
        for key, c in self.raw["conditions"]["concepts"].items():
            for vs in c.get("valuesets", []):
                out.setdefault(vs, []).append((key, None))
            for entry in c.get("sites", []):
                out.setdefault(entry["valueset"], []).append((key, entry["site"]))
        return out

    @cached_property
    def _site_rank(self) -> dict[str, int]:
        return {e["valueset"]: i for c in self.raw["conditions"]["concepts"].values()
                for i, e in enumerate(c.get("sites", []))}

    def match_condition(self, codings: list[dict[str, Any]]) -> list[ConceptMatch]:
        """The concepts a Condition's codings fall in: one match per concept, the first coding that
        names it; for a fracture, the site of the first listed site value set that holds the code."""
        found: dict[str, ConceptMatch] = {}
        for c in codings:
            hits = self.lookup(c.get("system"), c.get("code"))
            for h in sorted(hits, key=lambda h: self._site_rank.get(h.valueset, -1)):
                for concept, site in self.concepts_by_valueset.get(h.valueset, ()):
                    if concept not in found:
                        found[concept] = ConceptMatch(concept, site, c, h)
        return list(found.values())

    @cached_property
    def unmatched_condition(self) -> tuple[re.Pattern[str], tuple[str, ...], str]:
        u = self.raw["terminology"]["unmatched_relevant"]["condition"]
        return (re.compile("|".join(f"(?:{p})" for p in u["patterns"])),
                tuple(norm_icd(c) for c in u["icd10cm"]), u["reason"])

    @cached_property
    def _unmatched_condition_not(self) -> re.Pattern[str] | None:
        words = self.raw["terminology"]["unmatched_relevant"]["condition"].get("not_patterns") or []
        return re.compile("|".join(f"(?:{p})" for p in words)) if words else None

    def relevant_unmatched_condition(self, codings: list[dict[str, Any]], text: str) -> bool:
        pattern, prefixes, _ = self.unmatched_condition
        lowered = text.lower()
        if pattern.search(lowered):
            return not (self._unmatched_condition_not and self._unmatched_condition_not.search(lowered))
        icd = self.index.systems["icd10cm"]
        return any(self.index.system_uri(c.get("system")) == icd and isinstance(c.get("code"), str)
                   and norm_icd(c["code"]).startswith(prefixes) for c in codings)

    @cached_property
    def fracture_rules(self) -> FractureRules:
        f = self.raw["conditions"]["fractures"]
        he = f["high_energy"]
        sd = f["site_detail"]
        aff = f["atypical_femoral_review"]
        return FractureRules(
            same_event_days=int(f["same_event_days"]["value"]),
            initial=frozenset(f["seventh_character"]["initial"]["value"]),
            later=frozenset(f["seventh_character"]["later"]["value"]),
            history_codes=frozenset(norm_icd(c) for c in f["history"]["icd10cm"]["value"]),
            history_text=_any_of(f["history"]["text_patterns"]["value"]),
            same_day_days=int(he["same_day_days"]["value"]),
            causes=tuple(HighEnergyCause(c["id"], c["label"], _icd_ranges(c["icd10cm"]), _icd_ranges(c["except"]),
                                         c["source"]) for c in he["causes"]),
            detail_rules=tuple(SiteDetailRule(tuple(norm_icd(p) for p in r["icd10cm"]), r["kind"], int(r["position"]),
                                              dict(r.get("values", {})), tuple(r.get("unstated", [])))
                               for r in sd["rules"]),
            levels={norm_icd(code): name for code, name in sd["levels"].items()},
            text_laterality=tuple((side, re.compile(p, re.I)) for side, p in sd["text_laterality"].items()),
            dxa_after_fracture_months=int(f["dxa_after_fracture_months"]["value"]),
            treatment_failure_min=int(f["treatment_failure_min"]["value"]),
            aff_prefixes=tuple(norm_icd(p) for p in aff["icd10cm"]["value"]),
            aff_text=_any_of(aff["text_patterns"]["value"]),
        )

    def counts_by_onset(self, concept: str) -> bool:
        return bool(self.concept(concept).get("counts_by_onset"))

    # -- medications -----------------------------------------------------------------------
    @cached_property
    def drugs(self) -> dict[str, Drug]:
        return {
            k: Drug(k, d["label"], d["class"], d["valueset"], tuple(d["names"]), d.get("strength_of"),
                    tuple(re.compile(p) for p in d.get("strengths", [])))
            for k, d in self.raw["medications"]["drugs"].items()
        }

    @cached_property
    def drug_by_valueset(self) -> dict[str, str]:
        return {d.valueset: d.key for d in self.drugs.values()}

    @cached_property
    def drug_names(self) -> DrugNames:
        """Names and brands of every drug (its own list, the brands in its value set's product
        names, a site's local names), first listed drug first."""
        entries: list[tuple[str, str]] = []
        raw = self.raw["medications"]["drugs"]
        for d in self.drugs.values():
            entries += [(n, d.key) for n in d.names]
        for d in self.drugs.values():
            vs = self.valuesets.get(d.valueset)
            if vs is not None and raw[d.key].get("brands_from_valueset", True):
                entries += [(b, d.key) for b in sorted(brands(vs))]
        for e in self.local_names:
            entries.append((e["name"], e["drug"]))
        return DrugNames.build(entries)

    @cached_property
    def local_names(self) -> list[dict[str, str]]:
        return list(self.raw.get("local", {}).get("names", []))

    @cached_property
    def excluded_drug_codes(self) -> frozenset[str]:
        return frozenset(e["code"] for e in self.raw["medications"]["exclude"])

    @cached_property
    def _variants(self) -> dict[str, list[Drug]]:
        out: dict[str, list[Drug]] = {}
        for d in self.drugs.values():
            if d.strength_of:
                out.setdefault(d.strength_of, []).append(d)
        return out

    def match_drug(self, codings: list[dict[str, Any]], text: str) -> str | None:
        """The drug a medication concept names: by a code of a drug's value set, else by name (and,
        for an ingredient with an oncology strength, by the strength written with it)."""
        for c in codings:
            code = c.get("code")
            if isinstance(code, str) and code.strip() in self.excluded_drug_codes:
                return None
        for c in codings:
            for h in self.lookup(c.get("system"), c.get("code")):
                key = self.drug_by_valueset.get(h.valueset)
                if key is not None:
                    return key
        found = self.drug_names.find(text)
        if not found:
            return None
        keys = [k for k, _ in found]
        low = " ".join(text.lower().replace(" /", "/").replace("/ ", "/").split())
        for key in keys:
            for variant in self._variants.get(key, ()):
                if any(p.search(low) for p in variant.strengths):
                    return variant.key
        order = list(self.drugs)
        return min(keys, key=order.index)

    @cached_property
    def unmatched_medication(self) -> tuple[re.Pattern[str], str]:
        u = self.raw["terminology"]["unmatched_relevant"]["medication"]
        return re.compile("|".join(f"(?:{p})" for p in u["patterns"])), u["reason"]

    @cached_property
    def care_diagnoses(self) -> frozenset[str]:
        """Diagnoses that get the work-up, secondary-cause findings and supportive care."""
        return frozenset(self.raw["treatment"]["care_diagnoses"]["value"])

    @cached_property
    def therapy_classes(self) -> frozenset[str]:
        return frozenset(self.raw["medications"]["osteoporosis_therapy_classes"])

    # -- numbers, citations, card vocabulary ------------------------------------------------
    def threshold(self, key: str) -> Any:
        return self.raw["thresholds"][key]["value"]

    @property
    def treatment(self) -> dict[str, Any]:
        return self.raw["treatment"]

    def number(self, key: str) -> Any:
        return self.raw["treatment"]["numbers"][key]["value"]

    def management(self, key: str) -> list[str]:
        return list(self.raw["treatment"]["management"][key]["value"])

    def guideline(self, key: str) -> dict[str, str]:
        return self.raw["guidelines"][key]

    @property
    def cards(self) -> dict[str, Any]:
        return self.raw["cards"]

    @cached_property
    def system(self) -> dict[str, str]:
        """The code systems' URIs (terminology.yaml), and UCUM's."""
        out = {key: e["uri"] for key, e in self.raw["terminology"]["systems"].items()}
        out["ucum"] = "http://unitsofmeasure.org"
        return out

    # -- prefetch code lists ---------------------------------------------------------------
    def dxa_query_codes(self) -> list[str]:
        return [e["code"] for e in self.raw["dxa"]["codes"]] + sorted(self.dxa_panel_codes)

    def lab_query_codes(self) -> list[str]:
        codes = [c for key in self.raw["labs"]["analytes"] for c in self.analyte_codes(key)]
        codes += [e["code"] for e in self.raw["labs"]["frax"]["codes"]]
        return codes


def _schema() -> dict[str, Any]:
    text = resources.files("cds_service.schemas").joinpath("knowledge.schema.json").read_text()
    return json.loads(text)


def packaged_directory() -> Path:
    return Path(str(resources.files("cds_service.knowledge")))


def load_knowledge(directory: str | Path | None = None, site_directory: str | Path | None = None) -> Knowledge:
    """Read and check every knowledge file; raise KnowledgeError naming the file and place.

    ``directory``: a folder holding every knowledge file (default: the packaged ones).
    ``site_directory`` (CDS_KNOWLEDGE_DIR): a site's folder on top of it: a knowledge file there
    replaces the one of the same name, a value set file in its ``valuesets/`` replaces or adds one,
    and ``local-codes.yaml`` adds the site's own codes and names to value sets and drugs."""
    from .contract import check_contract
    base = Path(directory) if directory else packaged_directory()
    site = Path(site_directory) if site_directory else None
    if site is not None and not site.is_dir():
        raise KnowledgeError(f"knowledge folder {site} (CDS_KNOWLEDGE_DIR) is not a folder")
    raw: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for name in FILES:
        path = base / f"{name}.yaml"
        if site is not None and (site / f"{name}.yaml").exists():
            path = site / f"{name}.yaml"
        paths[name] = path
        raw[name] = _read_yaml(path, required=True)
    local_path = site / LOCAL_CODES if site is not None else None
    if local_path is not None and local_path.exists():
        raw["local"] = _read_yaml(local_path, required=True)
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = list(e.absolute_path)
        file = paths.get(str(where[0])) if where else None
        if where and where[0] == "local":
            file = local_path
        place = "/".join(str(p) for p in where[1:]) or "(top)"
        raise KnowledgeError(f"knowledge file {file or base}: at {place}: {e.message}")
    check_contract(raw, base, paths)
    folders = [base / "valuesets"] + ([site / "valuesets"] if site is not None else [])
    try:
        valuesets = load_valuesets(folders)
    except ValueError as exc:
        raise KnowledgeError(str(exc)) from None
    k = Knowledge(raw=raw, directory=str(base), valuesets=valuesets, site_directory=str(site or ""))
    _cross_check(k, paths)
    if "local" in raw:
        _apply_local_codes(k, local_path)
    return k


def _read_yaml(path: Path, required: bool) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError(f"knowledge file {path} is missing") from None
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"knowledge file {path} is not valid YAML: {exc}") from None


def _apply_local_codes(k: Knowledge, path: Path) -> None:
    """Add a site's codes to their value sets (kept apart as ``local``, with the file's source)."""
    from .terminology import SYSTEM_KEYS, Code, norm_ndc

    local = k.raw["local"]
    source = f"local: {local['source']}"
    aliases = {a: e["uri"] for e in k.raw["terminology"]["systems"].values() for a in e.get("aliases", [])}

    def key(system: str, code: str) -> tuple[str, str]:  # as the code index compares codes
        if system == k.system["ndc"]:
            return system, norm_ndc(code)
        return system, norm_icd(code) if system == k.system["icd10cm"] else code.strip()

    # a drug's code belongs to that drug only: a local code may not name another drug's code
    drug_of_code = {key(c.system, c.code): d.key for d in k.drugs.values() for c in k.valuesets[d.valueset].codes}
    added: dict[str, list[Code]] = {}
    for i, e in enumerate(local.get("codes", [])):
        if e["valueset"] not in k.valuesets:
            raise KnowledgeError(f"knowledge file {path}: at codes/{i}: unknown value set {e['valueset']!r} "
                                 f"(see `cds-service knowledge` for the list)")
        system = k.system.get(e["system"], SYSTEM_KEYS.get(e["system"], e["system"]))
        system = aliases.get(system, system)
        drug = k.drug_by_valueset.get(e["valueset"])
        if drug is not None:
            other = drug_of_code.setdefault(key(system, str(e["code"])), drug)
            if other != drug:
                raise KnowledgeError(f"knowledge file {path}: at codes/{i}: code {e['code']} ({system}) is already "
                                     f"a code of {other}; it cannot be added to value set {e['valueset']} ({drug})")
        added.setdefault(e["valueset"], []).append(Code(system, str(e["code"]), e.get("display", ""), (source,), False))
    for i, e in enumerate(local.get("names", [])):
        if e["drug"] not in k.drugs:
            raise KnowledgeError(f"knowledge file {path}: at names/{i}: unknown drug {e['drug']!r}")
    for name, codes in added.items():
        vs = k.valuesets[name]
        k.valuesets[name] = ValueSet(vs.name, vs.title, vs.codes, {**vs.sources, source: {"title": local["source"]}},
                                     vs.filters, vs.local + tuple(codes))


def _cross_check(k: Knowledge, paths: dict[str, Path]) -> None:
    sites = k.raw["dxa"]["sites"]
    for i, e in enumerate(k.raw["dxa"]["codes"]):
        if e["site"] not in sites:
            raise KnowledgeError(f"knowledge file {paths['dxa']}: at codes/{i}: unknown site {e['site']!r}")
    for e in k.raw["dxa"]["body_sites"]["snomed"] + k.raw["dxa"]["body_sites"]["keywords"]:
        if e["site"] not in sites:
            raise KnowledgeError(f"knowledge file {paths['dxa']}: body_sites: unknown site {e['site']!r}")
    meds = paths["medications"]
    owner: dict[str, str] = {}
    for d in k.drugs.values():
        vs = k.valuesets.get(d.valueset)
        if vs is None:
            raise KnowledgeError(f"knowledge file {meds}: drug {d.key}: no value set {d.valueset!r} in valuesets/")
        if owner.get(d.valueset):
            raise KnowledgeError(f"knowledge file {meds}: value set {d.valueset} is used by {owner[d.valueset]} and {d.key}")
        owner[d.valueset] = d.key
        for code in vs.codes:
            if code.code in k.excluded_drug_codes:
                raise KnowledgeError(f"knowledge file {meds}: drug {d.key}: code {code.code} of value set {vs.name} is on the exclude list")
        if d.strength_of and d.strength_of not in k.drugs:
            raise KnowledgeError(f"knowledge file {meds}: drug {d.key}: strength_of names unknown drug {d.strength_of!r}")
    drug_code_owner: dict[tuple[str, str], str] = {}
    for d in k.drugs.values():
        for code in k.valuesets[d.valueset].codes:
            other = drug_code_owner.setdefault((code.system, code.code), d.key)
            if other != d.key:
                raise KnowledgeError(f"knowledge file {meds}: code {code.code} is in the value sets of {other} and {d.key}")
    classes = {d.drug_class for d in k.drugs.values()}
    for c in k.therapy_classes:
        if c not in classes:
            raise KnowledgeError(f"knowledge file {meds}: osteoporosis_therapy_classes names unknown class {c!r}")
    for key, c in k.raw["conditions"]["concepts"].items():
        for vs in c.get("valuesets", []) + [e["valueset"] for e in c.get("sites", [])]:
            if vs not in k.valuesets:
                raise KnowledgeError(f"knowledge file {paths['conditions']}: concept {key}: no value set {vs!r} in valuesets/")
    for key, a in k.raw["labs"]["analytes"].items():
        if a["unit"] not in a["units"] or a["units"][a["unit"]] != 1.0:
            raise KnowledgeError(f"knowledge file {paths['labs']}: analyte {key}: canonical unit {a['unit']!r} must convert with factor 1")
        if a.get("valueset") and a["valueset"] not in k.valuesets:
            raise KnowledgeError(f"knowledge file {paths['labs']}: analyte {key}: no value set {a['valueset']!r} in valuesets/")
    dxa_vs = k.raw["terminology"]["unmatched_relevant"]["dxa"]["valueset"]
    if dxa_vs not in k.valuesets:
        raise KnowledgeError(f"knowledge file {paths['terminology']}: unmatched_relevant/dxa: no value set {dxa_vs!r} in valuesets/")
    for section, key in (("medication", "patterns"), ("condition", "patterns"), ("condition", "not_patterns")):
        for i, p in enumerate(k.raw["terminology"]["unmatched_relevant"][section].get(key, [])):
            try:
                re.compile(p)
            except re.error as exc:
                raise KnowledgeError(f"knowledge file {paths['terminology']}: at unmatched_relevant/{section}/{key}/{i}: {exc}") from None
    for key, d in k.raw["medications"]["drugs"].items():
        for i, p in enumerate(d.get("strengths", [])):
            try:
                re.compile(p)
            except re.error as exc:
                raise KnowledgeError(f"knowledge file {meds}: at drugs/{key}/strengths/{i}: {exc}") from None
    fr = k.raw["conditions"]["fractures"]
    for where, patterns in (("history/text_patterns", fr["history"]["text_patterns"]["value"]),
                            ("atypical_femoral_review/text_patterns", fr["atypical_femoral_review"]["text_patterns"]["value"]),
                            ("site_detail/text_laterality", list(fr["site_detail"]["text_laterality"].values()))):
        for i, p in enumerate(patterns):
            try:
                re.compile(p)
            except re.error as exc:
                raise KnowledgeError(f"knowledge file {paths['conditions']}: at fractures/{where}/{i}: {exc}") from None
    _check_treatment(k, paths["treatment"])
    for key, r in k.treatment["regimens"].items():
        # the code a draft order carries must name the drug: in its value set, or marked unconfirmed
        if key in k.drugs and not r["rxnorm"].get("check"):
            vs = k.valuesets[k.drugs[key].valueset]
            if not any(c.code == r["rxnorm"]["code"] for c in vs.codes):
                raise KnowledgeError(f"knowledge file {paths['treatment']}: regimens/{key}: RxNorm {r['rxnorm']['code']} "
                                     f"is not in value set {vs.name} (mark it check: true if no source has it)")
    for topic in k.cards["override_reasons"]:
        if topic not in k.cards["topics"]:
            raise KnowledgeError(f"knowledge file {paths['cards']}: override_reasons names unknown topic {topic!r}")


PREDICATES = {"lab_below", "lab_above", "lab_at_least", "lab_below_range", "lab_above_range", "lab_missing",
              "condition", "recent_condition", "recorded_condition", "undated_condition", "older_condition",
              "medication_class", "condition_after_drug", "sex", "on_therapy", "pth_high_with_calcium_high_normal",
              "any", "all", "not"}
CONCEPT_LISTS = ("recent_condition", "recorded_condition", "undated_condition", "older_condition")


def _check_when(k: Knowledge, when: Any, where: str) -> None:
    if not isinstance(when, dict) or not when:
        raise KnowledgeError(f"{where}: 'when' must be a mapping")
    keys = set(when) - {"number"}
    if len(keys) != 1 or not keys <= PREDICATES:
        raise KnowledgeError(f"{where}: 'when' must hold one of {sorted(PREDICATES)}, got {sorted(when)}")
    (kind,) = keys
    value = when[kind]
    if kind in ("any", "all"):
        for i, sub in enumerate(value):
            _check_when(k, sub, f"{where}/{kind}/{i}")
        return
    if kind == "not":
        _check_when(k, value, f"{where}/not")
        return
    if kind.startswith("lab_") and value not in k.raw["labs"]["analytes"] and value not in k.raw["labs"].get("derived", {}):
        raise KnowledgeError(f"{where}: unknown analyte {value!r}")
    if kind == "on_therapy" and (not isinstance(value, list) or any(d not in k.drugs for d in value)):
        raise KnowledgeError(f"{where}: on_therapy needs a list of drugs of medications.yaml, got {value!r}")
    if kind in ("lab_below", "lab_above", "lab_at_least", "recent_condition", "older_condition") \
            and when.get("number") not in k.treatment["numbers"]:
        raise KnowledgeError(f"{where}: {kind} needs a 'number' from numbers:, got {when.get('number')!r}")
    concepts = k.raw["conditions"]["concepts"]
    classes = {d.drug_class for d in k.drugs.values()}
    if kind == "condition_after_drug":
        if not isinstance(value, dict) or not isinstance(value.get("conditions"), list) \
                or not isinstance(value.get("classes"), list):
            raise KnowledgeError(f"{where}: condition_after_drug needs lists 'conditions' and 'classes'")
        named, drug_classes = value["conditions"], value["classes"]
    else:
        named = [value] if kind == "condition" else value if kind in CONCEPT_LISTS else []
        drug_classes = value if kind == "medication_class" else []
    if (kind in CONCEPT_LISTS or kind == "medication_class") and not isinstance(value, list):
        raise KnowledgeError(f"{where}: {kind} needs a list")
    for c in named:
        if c not in concepts:
            raise KnowledgeError(f"{where}: unknown condition concept {c!r}")
    for c in drug_classes:
        if c not in classes:
            raise KnowledgeError(f"{where}: unknown drug class {c!r}")


def _check_treatment(k: Knowledge, path: Path) -> None:
    t = k.treatment
    known_drugs = set(k.drugs) | set(t["regimens"])
    guidelines = set(k.raw["guidelines"])
    for level, opt in t["options"].items():
        for d in opt["first"] + opt["alternatives"] + opt.get("alternatives_when_blocked", []):
            if d not in t["regimens"]:
                raise KnowledgeError(f"knowledge file {path}: options/{level}: no regimen for {d!r}")
        for g in opt["guidelines"]:
            if g not in guidelines:
                raise KnowledgeError(f"knowledge file {path}: options/{level}: unknown guideline {g!r}")
    for key, entry in t["management"].items():
        for d in entry["value"]:
            if d not in t["regimens"]:
                raise KnowledgeError(f"knowledge file {path}: management/{key}: no regimen for {d!r}")
    for i, c in enumerate(t["contraindications"]):
        where = f"knowledge file {path}: contraindications/{i} ({c['id']})"
        _check_when(k, c["when"], where)
        for d in c.get("blocks", []) + c.get("warns", []):
            if d not in known_drugs:
                raise KnowledgeError(f"{where}: unknown drug {d!r}")
        if c["source"] not in guidelines:
            raise KnowledgeError(f"{where}: source {c['source']!r} is not a guideline key")
        if c.get("also_condition") and c["also_condition"] not in k.raw["conditions"]["concepts"]:
            raise KnowledgeError(f"{where}: unknown condition concept {c['also_condition']!r}")
    for i, c in enumerate(t["secondary_causes"]):
        where = f"knowledge file {path}: secondary_causes/{i} ({c['id']})"
        _check_when(k, c["when"], where)
        if c["source"] not in guidelines:
            raise KnowledgeError(f"{where}: source {c['source']!r} is not a guideline key")
        if c.get("suggest") and c["suggest"] not in t["regimens"]:
            raise KnowledgeError(f"{where}: no regimen for suggestion {c['suggest']!r}")
    for i, lab in enumerate(t["labs_for_workup"]):
        for a in lab["analyte"] if isinstance(lab["analyte"], list) else [lab["analyte"]]:
            if a not in k.raw["labs"]["analytes"]:
                raise KnowledgeError(f"knowledge file {path}: labs_for_workup/{i}: unknown analyte {a!r}")
