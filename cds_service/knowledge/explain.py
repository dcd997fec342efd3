"""What the value sets hold and why a code or name falls in a concept: for `cds-service knowledge`,
for reviewers and integrators. Reads the loaded knowledge only; matches as the service does."""
from __future__ import annotations

from typing import Any

from . import Knowledge


def concept_of(k: Knowledge, valueset: str) -> list[str]:
    """What the rules read a value set as: a drug, a condition (with its fracture site), a lab."""
    out = []
    if valueset in k.drug_by_valueset:
        d = k.drugs[k.drug_by_valueset[valueset]]
        out.append(f"drug {d.key} ({d.drug_class})")
    for concept, site in k.concepts_by_valueset.get(valueset, ()):
        out.append(f"condition {concept}" + (f" (site {site})" if site else ""))
    for key, a in k.raw["labs"]["analytes"].items():
        if a.get("valueset") == valueset:
            out.append(f"lab {key}")
    if k.raw["terminology"]["unmatched_relevant"]["dxa"]["valueset"] == valueset:
        out.append("DXA codes (those dxa.yaml does not read are listed as not used)")
    return out


def describe(k: Knowledge) -> list[dict[str, Any]]:
    """One row a value set: its concept, code counts by system, sources and unconfirmed codes."""
    short = {uri: key for key, uri in k.system.items()}
    rows = []
    for name, vs in sorted(k.valuesets.items()):
        rows.append({
            "valueset": name,
            "title": vs.title,
            "read_as": concept_of(k, name),
            "codes": {short.get(s, s): n for s, n in sorted(vs.counts().items())},
            "local_codes": len(vs.local),
            "unconfirmed": [c.code for c in vs.codes if c.check],
            "sources": [_source_text(src) for _, src in sorted(vs.sources.items())],
        })
    return rows


def _source_text(src: dict[str, Any]) -> str:
    parts = [src.get("title", "")]
    for key in ("oid", "version", "expansion"):
        if src.get(key):
            parts.append(f"{key} {src[key]}")
    return ", ".join(p for p in parts if p)


def lookup(k: Knowledge, query: str, system: str | None = None) -> dict[str, Any]:
    """Where a code (in any system, or the one named) or a drug name falls, and why."""
    query = query.strip()
    systems = [k.system.get(system, system)] if system else \
        [uri for key, uri in k.system.items() if key != "ucum"] + _local_systems(k)
    codes = []
    for uri in systems:
        for h in k.lookup(uri, query):
            vs = k.valuesets[h.valueset]
            codes.append({
                "system": uri, "code": h.code.code, "display": h.code.display, "valueset": h.valueset,
                "read_as": concept_of(k, h.valueset), "via": h.via,
                "sources": [_source_text(vs.sources[s]) if s in vs.sources else s for s in h.code.sources],
                "confirmed": not h.code.check,
            })
    out: dict[str, Any] = {"query": query, "codes": codes}
    names = k.drug_names.find(query)
    if names:
        drug = k.match_drug([], query)
        out["name"] = {"drug": drug, "names_found": [n for _, n in names],
                       "strength": drug is not None and bool(k.drugs[drug].strength_of)}
    elif not codes:
        pattern, reason = k.unmatched_medication
        cpattern, _, creason = k.unmatched_condition
        if pattern.search(query.lower()):
            out["unmatched"] = reason
        elif cpattern.search(query.lower()):
            out["unmatched"] = creason
    return out


def _local_systems(k: Knowledge) -> list[str]:
    return sorted({c.system for vs in k.valuesets.values() for c in vs.local} - set(k.system.values()))
