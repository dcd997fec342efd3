"""Observations: DXA scores, DXA panels, labs in canonical units and FRAX (rules §1, §6.4)."""
from __future__ import annotations

from datetime import date
from typing import Any

from .model import (Facts, Frax, Ignored, Lab, Score, _codings, _display, _effective, _number, _ref, _text_of,
                    _unit, _unit_factor, _value, months_after)


class ObservationReader:
    """Mixed into FactBuilder: reads Observations."""

    def _lab_only(self, obs: dict[str, Any], codes: list[str]) -> str | None:
        """The analyte of an Observation that is a lab result and nothing else the rules read."""
        lab_by_code = self.k.lab_by_code
        lab = next((c for c in codes if c in lab_by_code), None)
        if lab is None or not self._not_lab_only.isdisjoint(codes):
            return None
        text = obs["code"].get("text") if isinstance(obs.get("code"), dict) else None
        if isinstance(text, str) and "frax" in text.lower():
            return None
        return lab_by_code[lab]

    def _read_labs(self, deferred: dict[str, list[tuple[str, dict[str, Any], list[str]]]], facts: Facts) -> None:
        """Read each analyte's results newest first: every result of the last 12 months (so that a
        recent unusable one is reported), and back until one usable result is found. Older results
        are superseded by that one and are not read (the latest value wins, rules §1)."""
        months = float(self.k.threshold("lab_max_age_months"))
        cutoff = months_after(facts.as_of, -months).isoformat()
        for analyte, items in deferred.items():
            items.sort(key=lambda t: t[0], reverse=True)
            for key, r, codes in items:
                read = facts.labs.get(analyte)
                # older than the window and a usable result is read: stop, but read the rest of that
                # result's day (a correction of it may follow)
                if key and key < cutoff and read and key[:10] < read[-1].date.isoformat():
                    break
                try:
                    self._observation(r, facts, codes)
                except (AttributeError, TypeError, ValueError, KeyError, OverflowError):
                    facts.ignored.append(Ignored(_ref(r), "malformed: an element does not have its FHIR R4 type"))


    # -- observations ----------------------------------------------------------------------
    def _loinc_codes(self, concept: Any) -> list[str]:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return []
        loinc = self._loinc_systems
        return [c["code"] for c in codings
                if isinstance(c, dict) and isinstance(c.get("system"), str) and c["system"] in loinc
                and isinstance(c.get("code"), str)]

    def _observation(self, obs: dict[str, Any], facts: Facts, codes: list[str]) -> None:
        """``codes``: the Observation's LOINC codes, read once by ``build``."""
        dxa = next((c for c in codes if c in self.k.dxa_by_code), None)
        panel = any(c in self.k.dxa_panel_codes for c in codes)
        lab = next((c for c in codes if c in self.k.lab_by_code), None)
        frax = self._frax_kind(obs, codes)
        if not (dxa or panel or lab or frax):
            unread = next((c for c in codes if c in self._dxa_unread), None)
            if unread and not self._other_patient(obs, facts):
                facts.ignored.append(Ignored(_ref(obs), f"DXA code {unread} "
                                             f"({_display(obs.get('code')) or 'no display'}): {self._dxa_unread_reason}",
                                             "dxa"))
            return
        ref = _ref(obs)
        if self._other_patient(obs, facts):
            return
        status = obs.get("status")
        if status not in self.counted_status:
            facts.ignored.append(Ignored(ref, f"status is {status or 'missing'}, only {', '.join(sorted(self.counted_status))} results count",
                                         "dxa" if (dxa or panel) else ""))
            return
        group = "dxa" if (dxa or panel) else ""
        when = _effective(obs)
        if when is None and isinstance(obs.get("id"), str) and obs["id"] in facts.parent_dates:
            when = facts.parent_dates[obs["id"]][0]  # dated by its DiagnosticReport or panel (rules §6.4)
        if when is None:
            facts.ignored.append(Ignored(ref, "no effective date", group))
            return
        if (when - facts.as_of).days > self._future_days:
            facts.ignored.append(Ignored(ref, f"dated in the future ({when.isoformat()}, after the evaluation date)",
                                         group))
            return
        status = status if isinstance(status, str) else ""
        issued = obs.get("issued") if isinstance(obs.get("issued"), str) else ""
        if dxa:
            self._score(obs, dxa, obs, when, ref, facts, obs.get("code"), status, issued)
        if panel:
            components = obs.get("component")
            if not isinstance(components, list):
                if not dxa:
                    facts.ignored.append(Ignored(ref, "DXA panel without a component list", "dxa"))
                components = []
            for i, comp in enumerate(components):
                if not isinstance(comp, dict):
                    continue
                ccode = next((c for c in self._loinc_codes(comp.get("code")) if c in self.k.dxa_by_code), None)
                if ccode:
                    self._score(obs, ccode, comp, when, f"{ref} component {i}", facts,
                                comp.get("code"), status, issued)
        if lab:
            self._lab(obs, lab, when, ref, facts, status, issued)
        if frax:
            value = _value(obs)[0]
            if value is None:
                facts.ignored.append(Ignored(ref, "FRAX result without a numeric value"))
            else:
                facts.frax.append(Frax(frax, value, when, ref))

    def _frax_kind(self, obs: dict[str, Any], codes: list[str]) -> str | None:
        if self.k.frax_codes:
            for c in _codings(obs.get("code")):
                if c.get("code") in self.k.frax_codes:
                    return self.k.frax_codes[c["code"]]
        if codes and all(c in self.k.lab_by_code or c in self.k.dxa_by_code for c in codes):
            return None  # coded as a lab or DXA result: not a FRAX result
        text = _text_of(obs.get("code")).lower()
        if "frax" not in text:
            return None
        for kind, words in self.k.raw["labs"]["frax"]["text_patterns"].items():
            if all(w in text for w in words):
                return kind
        return None

    def _score(self, obs: dict[str, Any], code: str, element: dict[str, Any], when: date, ref: str, facts: Facts,
               code_concept: Any, status: str = "", issued: str = "") -> None:
        entry = self.k.dxa_by_code[code]
        value, quantity, why = _value(element)
        if value is None:
            facts.ignored.append(Ignored(ref, f"DXA result {code} {why}", "dxa"))
            return
        site, note = entry.site, None
        if entry.ambiguous_site:
            site, note = self._resolve_site(obs, code_concept)
        info = self.k.site(site)
        unit = _unit(quantity) if isinstance(quantity, dict) else ""
        if entry.kind != "bmd" and unit and not (unit.startswith("{") or unit in ("1", "SD") or "score" in unit.lower()):
            facts.ignored.append(Ignored(ref, f"DXA score {code} has unit {unit!r}, expected a score annotation such as {{T-score}}",
                                         "dxa"))
            return
        facts.scores.append(Score(
            kind=entry.kind, site=site, site_label=info["label"], diagnostic=bool(info["diagnostic"]),
            laterality=entry.laterality, value=value, unit=unit, date=when, code=code, resource=ref,
            site_note=note, status=status, issued=issued))

    def _resolve_site(self, obs: dict[str, Any], code_concept: Any) -> tuple[str, str | None]:
        body = obs.get("bodySite")
        for c in _codings(body):
            if self.k.index.system_uri(c.get("system")) == self.k.system["snomed"] and c.get("code") in self.k.body_site_snomed:
                return self.k.body_site_snomed[c["code"]], None
        body_text = _text_of(body).lower()
        code_text = (code_concept.get("text") or "").lower() if isinstance(code_concept, dict) else ""
        for kw in self.k.body_site_keywords:
            if kw["text"] in body_text:
                return kw["site"], None
            if not kw.get("body_site_only") and kw["text"] in code_text:
                return kw["site"], None
        return "not_stated", "the measurement site is not stated (LOINC 38265-5 without a body site)"

    def _lab(self, obs: dict[str, Any], code: str, when: date, ref: str, facts: Facts, status: str = "",
             issued: str = "") -> None:
        key = self.k.lab_by_code[code]
        a = self.k.analyte(key)
        value, q, why = _value(obs)
        if value is None:
            facts.ignored.append(Ignored(ref, f"{a['label']} {why}"))
            return
        unit = _unit(q) if q is not None else ""
        factor = _unit_factor(a["units"], unit)
        if factor is None:
            facts.ignored.append(Ignored(ref, f"{a['label']} unit {unit or '(none)'!r} is not known; value not used"))
            return
        low = high = None
        for rr in obs.get("referenceRange") or []:
            if isinstance(rr, dict):
                lo, hi = rr.get("low"), rr.get("high")
                lf = _unit_factor(a["units"], _unit(lo)) if isinstance(lo, dict) else None
                hf = _unit_factor(a["units"], _unit(hi)) if isinstance(hi, dict) else None
                if lf is not None and _number(lo) is not None:
                    low = round(_number(lo) * lf, 4)
                if hf is not None and _number(hi) is not None:
                    high = round(_number(hi) * hf, 4)
                break
        interp = None
        for c in _codings((obs.get("interpretation") or [None])[0]):
            if isinstance(c.get("code"), str):
                interp = c["code"]
                break
        facts.labs.setdefault(key, []).append(Lab(
            analyte=key, label=a["label"], value=round(value * factor, 4), unit=a["unit"],
            original=f"{value:g} {unit}".strip(), date=when, resource=ref, low=low, high=high,
            interpretation=interp, code=code, status=status, issued=issued))

