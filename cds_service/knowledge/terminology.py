"""Value sets and the indexes that match a record's codes and names to them.

The value sets are JSON files in ``valuesets/`` beside this module, built from published code lists
by ``terminology/build_valuesets.py`` (each keeps its sources). A site adds its own codes and names in
``local-codes.yaml`` in the folder named by ``CDS_KNOWLEDGE_DIR``. Everything here is built once, when
the knowledge is loaded; matching a record is a few dictionary lookups.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

_NON_WORD = re.compile(r"[^0-9a-z]+")
_BRAND = re.compile(r"\[([^\]]+)\]")
_NDC_SEGMENTS = re.compile(r"^(\d{4,5})-(\d{3,4})-(\d{1,2})$")


def norm_icd(code: str) -> str:
    """An ICD-10-CM code as the index keeps it: no dot, upper case, no spaces."""
    return code.replace(".", "").replace(" ", "").upper()


def norm_name(text: str) -> str:
    """Words of a drug name for matching: lower case, punctuation and hyphens as spaces
    ("Denosumab-bbdz 60 MG/ML" → "denosumab bbdz 60 mg ml")."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def norm_ndc(code: str) -> str:
    """An NDC in its 11-digit form without hyphens; the 10-digit hyphenated forms (4-4-2, 5-3-2,
    5-4-1) are padded in the segment that is short, as CMS does."""
    code = code.strip()
    m = _NDC_SEGMENTS.match(code)
    if m:
        a, b, c = m.groups()
        return a.zfill(5) + b.zfill(4) + c.zfill(2)
    return code.replace("-", "")


@dataclass(frozen=True)
class Code:
    system: str  # the system's URI
    code: str
    display: str
    sources: tuple[str, ...]
    check: bool  # no source confirms it


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    codes: tuple[Code, ...]
    sources: dict[str, dict[str, Any]]
    filters: tuple[dict[str, Any], ...] = ()
    local: tuple[Code, ...] = ()  # codes a site added (local-codes.yaml)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.codes + self.local:
            out[c.system] = out.get(c.system, 0) + 1
        return out


@dataclass(frozen=True)
class Hit:
    """A code found in a value set."""
    valueset: str
    code: Code
    via: str  # "code" | "ICD-10-CM category X" | "name 'x'"


@dataclass
class CodeIndex:
    """(system, code) → the value sets that hold it; ICD-10-CM also by category."""
    systems: dict[str, str]  # key (rxnorm, ...) → URI
    aliases: dict[str, str]  # another URI of a system (an OID) → its URI
    exact: dict[tuple[str, str], list[Hit]] = field(default_factory=dict)
    icd: dict[str, list[Hit]] = field(default_factory=dict)

    def add(self, vs: str, code: Code) -> None:
        hit = Hit(vs, code, "code")
        if code.system == self.systems["icd10cm"]:
            self.icd.setdefault(norm_icd(code.code), []).append(hit)
        else:
            self.exact.setdefault((code.system, self._norm(code.system, code.code)), []).append(hit)

    def _norm(self, system: str, code: str) -> str:
        return norm_ndc(code) if system == self.systems["ndc"] else code.strip()

    def system_uri(self, system: Any) -> str | None:
        if not isinstance(system, str):
            return None
        s = system.strip()
        return self.aliases.get(s, s)

    def lookup(self, system: Any, code: Any) -> list[Hit]:
        """Every value set that holds the code. An ICD-10-CM code is found, in each value set, through
        the most specific code of that set at or above it in the code set (M80.08XA through M80.08
        when only that is listed), whatever other value sets list."""
        uri = self.system_uri(system)
        if uri is None or not isinstance(code, str) or not code.strip():
            return []
        if uri == self.systems["icd10cm"]:
            norm = norm_icd(code)
            out: list[Hit] = []
            found: set[str] = set()
            for n in range(len(norm), 2, -1):
                for h in self.icd.get(norm[:n], ()):
                    if h.valueset not in found:
                        found.add(h.valueset)
                        out.append(h if n == len(norm) else Hit(h.valueset, h.code, f"ICD-10-CM category {h.code.code}"))
            return out
        return self.exact.get((uri, self._norm(uri, code)), [])


def load_valuesets(folders: Iterable[Path]) -> dict[str, ValueSet]:
    """The value set files of each folder in turn; a later folder's file replaces an earlier one of the
    same name. Raises ValueError naming the file when one is unreadable."""
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                found[p.stem] = p
    out: dict[str, ValueSet] = {}
    for name, path in found.items():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            out[name] = _valueset(name, data)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"value set file {path}: {exc}") from None
    return out


SYSTEM_KEYS = {
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "ndc": "http://hl7.org/fhir/sid/ndc",
    "snomed": "http://snomed.info/sct",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "loinc": "http://loinc.org",
}


def _valueset(name: str, data: dict[str, Any]) -> ValueSet:
    codes = []
    for row in data["codes"]:
        system, code, display, sources = row[0], row[1], row[2], row[3]
        uri = SYSTEM_KEYS.get(system, system)
        if not isinstance(code, str) or not code:
            raise ValueError(f"a code of {name} is not a string: {row!r}")
        codes.append(Code(uri, code, str(display), tuple(sources), len(row) > 4 and row[4] == "check"))
    return ValueSet(name=name, title=str(data.get("title", name)), codes=tuple(codes),
                    sources=dict(data.get("sources", {})), filters=tuple(data.get("filters", [])))


@dataclass(frozen=True)
class DrugNames:
    """Drug names → drug keys, matched as whole words of a normalised text."""
    names: dict[str, str]  # normalised name → drug key (first listed drug wins)
    longest: int  # words in the longest name

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str]]) -> "DrugNames":
        names: dict[str, str] = {}
        for name, key in entries:
            n = norm_name(name)
            if n:
                names.setdefault(n, key)
        return cls(names, max((len(n.split()) for n in names), default=1))

    def find(self, text: str) -> list[tuple[str, str]]:
        """(drug key, the name found) for every listed name in the text, in the order of the text."""
        words = norm_name(text).split()
        out: list[tuple[str, str]] = []
        for i in range(len(words)):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                phrase = " ".join(words[i:i + n])
                key = self.names.get(phrase)
                if key is not None:
                    out.append((key, phrase))
                    break
        return out


def brands(vs: ValueSet) -> set[str]:
    """Brand names a value set's product displays carry in brackets ("... [Prolia]")."""
    out = set()
    for c in vs.codes:
        for m in _BRAND.finditer(c.display):
            out.add(m.group(1).strip())
    return out
