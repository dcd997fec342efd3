#!/usr/bin/env python3
"""Build the service's value sets from the published code lists in terminology/sources/.

    python terminology/build_valuesets.py            write cds_service/knowledge/valuesets/*.json
    python terminology/build_valuesets.py --check    exit 1 when the files there differ from a fresh build
    python terminology/build_valuesets.py --out DIR  write somewhere else

The recipe is terminology/concepts.yaml. ICD-10-CM codes are checked against, named from and expanded
with the CMS tabular release that the package simple-icd-10-cm ships (pip install simple-icd-10-cm,
part of the project's test extra). The output is sorted and stable, so a rebuild with the same inputs
gives the same bytes.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
DEFAULT_OUT = HERE.parent / "cds_service" / "knowledge" / "valuesets"

SYSTEMS = {
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "ndc": "http://hl7.org/fhir/sid/ndc",
    "snomed": "http://snomed.info/sct",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "loinc": "http://loinc.org",
}
KEY_OF = {uri: key for key, uri in SYSTEMS.items()}

VSAC = re.compile(r'^VSAC (?P<oid>[\d.]+) "(?P<title>[^"]*)" v(?P<version>\S+) \[(?P<repo>[^@\]]+)@(?P<commit>[0-9a-f]+)\]')
RXNORM = re.compile(r"^RxNorm (?P<date>\d{4}-\d{2}-\d{2}) Current Prescribable Content.*\[(?P<repo>[^@\]]+)@(?P<commit>[0-9a-f]+)")
SYNTHEA = re.compile(r"^Synthea module \S+ \[(?P<repo>[^@\]]+)@(?P<commit>[0-9a-f]+)")


class BuildError(Exception):
    pass


def icd_release():
    try:
        import simple_icd_10_cm as cm
    except ImportError:  # pragma: no cover - the test extra installs it
        raise BuildError("the package simple-icd-10-cm is needed: pip install simple-icd-10-cm") from None
    data = Path(cm.__file__).parent / "data"
    tabular = sorted(p.name for p in data.glob("*tabular*.xml"))
    name = tabular[0] if tabular else "unknown tabular file"
    return cm, f"CMS ICD-10-CM tabular release ({name}), via simple-icd-10-cm {metadata.version('simple-icd-10-cm')}"


class Builder:
    def __init__(self) -> None:
        self.cm, self.icd_release = icd_release()
        self.provenance = json.loads((SOURCES / "provenance.json").read_text(encoding="utf-8"))
        self.vsac = {(v["oid"], v["version"]): v for v in self.provenance["valuesets"]}
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.sources: dict[str, dict[str, Any]] = {}  # every source any value set names, by id
        self.sandbox = self._csv(SOURCES / "sandbox-medication-list-osteoporosis.csv")
        synthea_file = next(SOURCES.glob("synthea/synthea_module_codes_*.csv"))
        self.synthea_commit = synthea_file.stem.rsplit("_", 1)[-1]
        self.synthea = {(r["system"].lower(), r["code"]) for r in self._csv(synthea_file)}
        self.built: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    @staticmethod
    def _csv(path: Path) -> list[dict[str, str]]:
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    def table(self, name: str) -> list[dict[str, str]]:
        if name not in self.tables:
            path = SOURCES / "merged" / f"{name}.csv"
            if not path.exists():
                raise BuildError(f"no table {path}")
            self.tables[name] = self._csv(path)
        return self.tables[name]

    # -- sources ---------------------------------------------------------------------------
    def source_id(self, text: str) -> str:
        """One published source, from a merged table's source_valueset part, as a short id."""
        text = text.strip()
        m = VSAC.match(text)
        if m:
            sid = f"vsac:{m['oid']}|{m['version']}"
            if sid not in self.sources:
                v = self.vsac.get((m["oid"], m["version"]), {})
                self.sources[sid] = {
                    "title": f"VSAC value set \"{m['title']}\"", "oid": m["oid"],
                    "url": f"http://cts.nlm.nih.gov/fhir/ValueSet/{m['oid']}", "version": m["version"],
                    "expansion": v.get("expansion_timestamp"),
                    "published_in": f"{v.get('repo', m['repo'])}@{v.get('commit', m['commit'])} {v.get('path', '')}".strip(),
                    "licence": "CC0-1.0 (eCQM content repository); codes under their code systems' terms",
                }
            return sid
        m = RXNORM.match(text)
        if m:
            sid = f"rxnorm:{m['date']}"
            self.sources.setdefault(sid, {
                "title": f"RxNorm Current Prescribable Content {m['date']} (SAB=RXNORM, non-suppressed)",
                "version": m["date"], "published_in": f"{m['repo']}@{m['commit']}",
                "licence": "RxNorm (NLM): public"})
            return sid
        m = SYNTHEA.match(text)
        if m:
            sid = f"synthea:{m['commit']}"
            self.sources.setdefault(sid, self._synthea_source(m["commit"]))
            return sid
        raise BuildError(f"source not understood: {text[:120]!r}")

    def _synthea_source(self, commit: str) -> dict[str, Any]:
        return {"title": "codes emitted by Synthea's modules", "version": commit,
                "published_in": f"synthetichealth/synthea@{commit}", "licence": "Apache-2.0"}

    def sandbox_source(self) -> str:
        sid = "cds-hooks-sandbox:medication-list"
        origin = self.sandbox[0]["source"] if self.sandbox else ""
        self.sources.setdefault(sid, {"title": "CDS Hooks sandbox medication picker (what its order-select screen sends)",
                                      "published_in": origin, "licence": "Apache-2.0"})
        return sid

    def written_source(self, text: str) -> str:
        sid = "written:" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
        self.sources.setdefault(sid, {"title": text})
        return sid

    def icd_source(self) -> str:
        sid = "icd10cm:cms"
        self.sources.setdefault(sid, {"title": self.icd_release, "licence": "ICD-10-CM (CMS/NCHS): public"})
        return sid

    def confirmations(self, system: str, code: str) -> list[str]:
        """The sources in which a code written in the recipe was found."""
        found: set[str] = set()
        for name in sorted(p.stem for p in (SOURCES / "merged").glob("*.csv")):
            for r in self.table(name):
                if r["system"] == SYSTEMS[system] and r["code"] == code:
                    found.update(self.source_id(p) for p in r["source_valueset"].split(" | "))
        if any(r["system"] == SYSTEMS[system] and r["code"] == code for r in self.sandbox):
            found.add(self.sandbox_source())
        if system == "rxnorm" and ("rxnorm", code) in self.synthea or system == "snomed" and ("snomed-ct", code) in self.synthea:
            sid = f"synthea:{self.synthea_commit}"
            self.sources.setdefault(sid, self._synthea_source(self.synthea_commit))
            found.add(sid)
        if system == "icd10cm" and self.cm.is_valid_item(code):
            found.add(self.icd_source())
        return sorted(found)

    # -- ICD-10-CM -------------------------------------------------------------------------
    def icd(self, code: str, where: str) -> str:
        if not self.cm.is_valid_item(code):
            raise BuildError(f"{where}: ICD-10-CM code {code} is not in the {self.icd_release}")
        return self.cm.add_dot(code) if "." not in code and len(code) > 3 else code

    # -- one value set ---------------------------------------------------------------------
    def build(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        codes: dict[tuple[str, str], dict[str, Any]] = {}
        filters: list[dict[str, Any]] = []

        def add(system: str, code: str, display: str, sources: list[str], check: bool = False) -> None:
            if system == "icd10cm":
                code = self.icd(code, f"value set {name}")
                display = self.cm.get_description(code)
            entry = codes.setdefault((system, code), {"system": system, "code": code, "display": display,
                                                      "sources": set(), "check": check})
            entry["sources"].update(sources)
            entry["check"] = entry["check"] and check
            if not entry["display"]:
                entry["display"] = display

        for inc in spec["include"]:
            if "table" in inc:
                keep = inc.get("icd_prefixes")
                drop = inc.get("drop_icd_prefixes", [])
                drop_display = re.compile(inc["drop_display"], re.I) if inc.get("drop_display") else None
                dropped = 0
                for r in self.table(inc["table"]):
                    system = KEY_OF.get(r["system"])
                    if system is None:
                        raise BuildError(f"value set {name}: table {inc['table']}: unknown system {r['system']}")
                    if system in inc.get("drop_systems", []):
                        dropped += 1
                        continue
                    if system == "icd10cm":
                        nc = r["code"].replace(".", "")
                        if keep is not None and not any(nc.startswith(p.replace(".", "")) for p in keep) or \
                                any(nc.startswith(p.replace(".", "")) for p in drop):
                            dropped += 1
                            continue
                    if drop_display and drop_display.search(r["display"]):
                        dropped += 1
                        continue
                    add(system, r["code"], r["display"], [self.source_id(p) for p in r["source_valueset"].split(" | ")])
                if keep is not None or drop or drop_display or inc.get("drop_systems"):
                    filters.append({"table": inc["table"], "rows_left_out": dropped, "why": inc.get("why", "")})
            elif "sandbox" in inc:
                pattern = re.compile(inc["sandbox"], re.I)
                for r in self.sandbox:
                    if pattern.search(r["display"]):
                        add(KEY_OF[r["system"]], r["code"], r["display"], [self.sandbox_source()])
            elif "codes" in inc:
                written = self.written_source(inc["source"])
                for c in inc["codes"]:
                    confirmed = self.confirmations(c["system"], c["code"])
                    add(c["system"], c["code"], c.get("display", ""), [written, *confirmed], check=not confirmed)
            elif "icd_categories" in inc:
                written = self.written_source(inc["source"])
                for cat in inc["icd_categories"]:
                    cat = self.icd(cat, f"value set {name}")
                    for code in [cat, *self.cm.get_descendants(cat)]:
                        add("icd10cm", code, "", [written, self.icd_source()])
            else:
                raise BuildError(f"value set {name}: include entry not understood: {inc}")

        removed = []
        for r in spec.get("remove", []):
            if codes.pop((r["system"], r["code"]), None) is not None:
                removed.append(r)
        shared = spec.get("drop_shared_with")
        if shared:
            other = self.built.get(shared)
            if other is None:
                raise BuildError(f"value set {name}: drop_shared_with {shared} must be built before it")
            common = [k for k in codes if k in other]
            for k in common:
                del codes[k]
            filters.append({"rows_left_out": len(common), "why": f"codes that {shared} holds too (they name no strength) are left to {shared}"})
        self._add_whole_categories(codes)
        self.built[name] = codes
        rows = sorted(codes.values(), key=lambda e: (e["system"], e["code"]))
        used = sorted({s for e in rows for s in e["sources"]})
        return {
            "name": name,
            "title": spec["title"],
            "generated_by": "terminology/build_valuesets.py from terminology/concepts.yaml",
            "sources": {sid: self.sources[sid] for sid in used},
            "filters": filters,
            "removed": removed,
            "counts": {s: sum(1 for e in rows if e["system"] == s) for s in sorted({e["system"] for e in rows})},
            "codes": [[e["system"], e["code"], e["display"], sorted(e["sources"])] + (["check"] if e["check"] else [])
                      for e in rows],
        }

    def _add_whole_categories(self, codes: dict[tuple[str, str], dict[str, Any]]) -> None:
        """A category every code under which is in the value set stands in it too: a record coded
        with the category (a less specific diagnosis) then matches as well."""
        icd = {c for (s, c) in codes if s == "icd10cm"}
        candidates: set[str] = set()
        for c in icd:
            candidates.update(a for a in self.cm.get_ancestors(c) if self.cm.is_category_or_subcategory(a))
        for cat in sorted(candidates - icd):
            leaves = [d for d in self.cm.get_descendants(cat) if self.cm.is_leaf(d)]
            if leaves and all(d in icd for d in leaves):
                codes[("icd10cm", cat)] = {"system": "icd10cm", "code": cat, "display": self.cm.get_description(cat),
                                           "sources": {self.icd_source()}, "check": False}


def _dump(vs: dict[str, Any]) -> str:
    """JSON with one code a line: readable in a diff, small on disk."""
    head = {k: v for k, v in vs.items() if k != "codes"}
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    rows = ",\n".join("  " + json.dumps(row, ensure_ascii=False) for row in vs["codes"])
    return f'{text},\n "codes": [\n{rows}\n ]\n}}\n'


def build_all(out: Path) -> dict[str, bytes]:
    recipe = yaml.safe_load((HERE / "concepts.yaml").read_text(encoding="utf-8"))
    b = Builder()
    files: dict[str, bytes] = {}
    for name, spec in recipe["valuesets"].items():
        vs = b.build(name, spec)
        files[f"{name}.json"] = _dump(vs).encode("utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = p.parse_args(argv)
    try:
        files = build_all(args.out)
    except BuildError as exc:
        print(f"build_valuesets: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = sorted(n for n, data in files.items() if not (args.out / n).exists() or (args.out / n).read_bytes() != data)
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
        for n in stale:
            print(f"out of date: {args.out / n}")
        for n in extra:
            print(f"not built by the recipe: {args.out / n}")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n in (p for p in args.out.glob("*.json") if p.name not in files):
        n.unlink()
    for n, data in files.items():
        (args.out / n).write_bytes(data)
    total = sum(len(json.loads(d)["codes"]) for d in files.values())
    print(f"wrote {len(files)} value sets ({total} codes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
