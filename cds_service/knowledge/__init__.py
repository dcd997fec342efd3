"""Clinical knowledge: codes, units, thresholds and citations, loaded once from data files.

The files beside this module are the only place where clinical facts live. They are read and
checked at start-up; a broken file stops start-up with a message naming the file and the place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FILES = ("dxa", "labs", "conditions", "medications", "thresholds", "guidelines", "cards", "treatment")


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
    ingredient: str
    products: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(eq=False)  # compared and hashed by identity: one instance per loaded knowledge
class Knowledge:
    raw: dict[str, Any]
    directory: str = ""

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
        out = {}
        for key, a in self.raw["labs"]["analytes"].items():
            for c in a["codes"]:
                out[c] = key
        return out

    def analyte(self, key: str) -> dict[str, Any]:
        return self.raw["labs"]["analytes"][key]

    @cached_property
    def frax_codes(self) -> dict[str, str]:
        return {e["code"]: e["fracture"] for e in self.raw["labs"]["frax"]["codes"]}

    # -- conditions ------------------------------------------------------------------------
    def concept(self, key: str) -> dict[str, Any]:
        return self.raw["conditions"]["concepts"][key]

    @cached_property
    def icd_prefixes(self) -> list[tuple[str, str, str | None]]:
        """(prefix, concept, fracture site) sorted longest prefix first."""
        out: list[tuple[str, str, str | None]] = []
        for key, c in self.raw["conditions"]["concepts"].items():
            for code in c.get("icd10cm", []):
                out.append((norm_icd(code), key, None))
            for code, site in c.get("icd10cm_sites", {}).items():
                out.append((norm_icd(code), key, site))
        out.sort(key=lambda t: -len(t[0]))
        return out

    @cached_property
    def icd_prefix_index(self) -> tuple[tuple[int, ...], dict[str, tuple[str, str | None]]]:
        """icd_prefixes as (prefix lengths, longest first; prefix → (concept, fracture site)): a code
        is matched by a few dictionary lookups instead of a scan of every prefix."""
        index: dict[str, tuple[str, str | None]] = {}
        for prefix, concept, site in self.icd_prefixes:
            index.setdefault(prefix, (concept, site))  # the first listed wins, as in the scan
        return tuple(sorted({len(p) for p in index}, reverse=True)), index

    @cached_property
    def snomed_concepts(self) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for key, c in self.raw["conditions"]["concepts"].items():
            for code in c.get("snomed", []):
                out[code] = (key, None)
            for code, site in c.get("snomed_sites", {}).items():
                out[code] = (key, site)
        return out

    def counts_by_onset(self, concept: str) -> bool:
        return bool(self.concept(concept).get("counts_by_onset"))

    # -- medications -----------------------------------------------------------------------
    @cached_property
    def drugs(self) -> dict[str, Drug]:
        return {
            k: Drug(k, d["label"], d["class"], d["ingredient"], tuple(d.get("products", [])),
                    tuple(n.lower() for n in d.get("names", [])))
            for k, d in self.raw["medications"]["drugs"].items()
        }

    @cached_property
    def drug_by_code(self) -> dict[str, str]:
        out = {}
        for d in self.drugs.values():
            out[d.ingredient] = d.key
            for p in d.products:
                out[p] = d.key
        return out

    @cached_property
    def excluded_drug_codes(self) -> frozenset[str]:
        return frozenset(e["code"] for e in self.raw["medications"]["exclude"])

    @cached_property
    def excluded_drug_names(self) -> tuple[str, ...]:
        return tuple(n.lower() for n in self.raw["medications"]["exclude_names"])

    @cached_property
    def excluded_name_sets(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(w.lower() for w in e["words"]) for e in self.raw["medications"].get("exclude_name_sets", []))

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
        return {
            "loinc": "http://loinc.org",
            "snomed": "http://snomed.info/sct",
            "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
            "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "ucum": "http://unitsofmeasure.org",
        }

    # -- prefetch code lists ---------------------------------------------------------------
    def dxa_query_codes(self) -> list[str]:
        return [e["code"] for e in self.raw["dxa"]["codes"]] + sorted(self.dxa_panel_codes)

    def lab_query_codes(self) -> list[str]:
        codes = [c for a in self.raw["labs"]["analytes"].values() for c in a["codes"]]
        codes += [e["code"] for e in self.raw["labs"]["frax"]["codes"]]
        return codes


def norm_icd(code: str) -> str:
    """An ICD-10-CM code as the prefixes are kept: no dot, upper case."""
    return code.replace(".", "").upper()


def _schema() -> dict[str, Any]:
    text = resources.files("cds_service.schemas").joinpath("knowledge.schema.json").read_text()
    return json.loads(text)


def load_knowledge(directory: str | Path | None = None) -> Knowledge:
    """Read and check every knowledge file; raise KnowledgeError naming the file and place."""
    base = Path(directory) if directory else Path(str(resources.files("cds_service.knowledge")))
    raw: dict[str, Any] = {}
    for name in FILES:
        path = base / f"{name}.yaml"
        try:
            raw[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KnowledgeError(f"knowledge file {path} is missing") from None
        except yaml.YAMLError as exc:
            raise KnowledgeError(f"knowledge file {path} is not valid YAML: {exc}") from None
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = list(e.absolute_path)
        fname = f"{where[0]}.yaml" if where else "knowledge"
        place = "/".join(str(p) for p in where[1:]) or "(top)"
        raise KnowledgeError(f"knowledge file {base / fname}: at {place}: {e.message}")
    k = Knowledge(raw=raw, directory=str(base))
    _cross_check(k, base)
    return k


def _cross_check(k: Knowledge, base: Path) -> None:
    sites = k.raw["dxa"]["sites"]
    for i, e in enumerate(k.raw["dxa"]["codes"]):
        if e["site"] not in sites:
            raise KnowledgeError(f"knowledge file {base / 'dxa.yaml'}: at codes/{i}: unknown site {e['site']!r}")
    for e in k.raw["dxa"]["body_sites"]["snomed"] + k.raw["dxa"]["body_sites"]["keywords"]:
        if e["site"] not in sites:
            raise KnowledgeError(f"knowledge file {base / 'dxa.yaml'}: body_sites: unknown site {e['site']!r}")
    seen: dict[str, str] = {}
    for d in k.drugs.values():
        for code in (d.ingredient, *d.products):
            if code in k.excluded_drug_codes:
                raise KnowledgeError(f"knowledge file {base / 'medications.yaml'}: drug {d.key}: code {code} is on the exclude list")
            if code in seen and seen[code] != d.key:
                raise KnowledgeError(f"knowledge file {base / 'medications.yaml'}: code {code} is used by {seen[code]} and {d.key}")
            seen[code] = d.key
    classes = {d.drug_class for d in k.drugs.values()}
    for c in k.therapy_classes:
        if c not in classes:
            raise KnowledgeError(f"knowledge file {base / 'medications.yaml'}: osteoporosis_therapy_classes names unknown class {c!r}")
    for key, a in k.raw["labs"]["analytes"].items():
        if a["unit"] not in a["units"] or a["units"][a["unit"]] != 1.0:
            raise KnowledgeError(f"knowledge file {base / 'labs.yaml'}: analyte {key}: canonical unit {a['unit']!r} must convert with factor 1")
    _check_treatment(k, base / "treatment.yaml")
    for topic in k.cards["override_reasons"]:
        if topic not in k.cards["topics"]:
            raise KnowledgeError(f"knowledge file {base / 'cards.yaml'}: override_reasons names unknown topic {topic!r}")


PREDICATES = {"lab_below", "lab_above", "lab_below_range", "lab_above_range", "condition", "recent_condition",
              "sex", "pth_high_with_calcium_high_normal", "any", "all"}


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
    if kind.startswith("lab_") and value not in k.raw["labs"]["analytes"]:
        raise KnowledgeError(f"{where}: unknown analyte {value!r}")
    if kind in ("lab_below", "lab_above", "recent_condition") and when.get("number") not in k.treatment["numbers"]:
        raise KnowledgeError(f"{where}: {kind} needs a 'number' from numbers:, got {when.get('number')!r}")
    concepts = k.raw["conditions"]["concepts"]
    for c in ([value] if kind == "condition" else value if kind == "recent_condition" else []):
        if c not in concepts:
            raise KnowledgeError(f"{where}: unknown condition concept {c!r}")


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
