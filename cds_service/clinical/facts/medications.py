"""Medication records of four kinds → one ``MedicationFact`` each (rules §6.1).

MedicationRequest, MedicationStatement, MedicationAdministration and MedicationDispense are read
as the table of rules §6.1 says: which statuses and intents count, what date a dose or a stretch of
supply has, and how long a fill or an order lasts. Which statuses count, the conventions (90 days,
30 days, ...) and each drug's schedule are in knowledge/medications.yaml ``therapy``. A record that
cannot be used (no date, no known drug, a status outside FHIR's value set, an unresolvable
``medicationReference``) is listed in ``Facts.ignored`` with the reason, never dropped.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .model import (DAYS_PER_MONTH, DOSE_UNCERTAIN, add_days, DRUG_MEMO_SIZE, SUPPLY_ASSUMED, DRUG_MEMO_TEXT, Facts, Ignored, MedicationFact, _codings,
                    _display, _number, _ref, _text_of, parse_date)

KIND = {"MedicationRequest": "request", "MedicationStatement": "statement",
        "MedicationAdministration": "administration", "MedicationDispense": "dispense"}
MEDICATION_REF = re.compile(r"(?:(?:^|/)Medication/([^/]+?)(?:/_history/[^/]+)?|^urn:uuid:(.+))$")
STRENGTH_MG = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b(?!\s*/\s*(?:ml|actuat))", re.I)
# UCUM units of duration → days
DURATION_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": DAYS_PER_MONTH,
                 "month": DAYS_PER_MONTH, "months": DAYS_PER_MONTH, "a": 365.25, "year": 365.25, "h": 1 / 24,
                 "min": 1 / 1440}


def duration_days(quantity: Any) -> float | None:
    """A FHIR Duration (value and UCUM unit) in days, or None."""
    value = _number(quantity)
    if value is None or value < 0 or not isinstance(quantity, dict):
        return None
    unit = quantity.get("code") or quantity.get("unit")
    factor = DURATION_DAYS.get(unit.strip().lower()) if isinstance(unit, str) else None
    return value * factor if factor else None


def _period(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dosages(med: dict[str, Any]) -> list[dict[str, Any]]:
    """The dosage elements of any of the four records (dosageInstruction, dosage: a list or one)."""
    out: list[Any] = []
    for key in ("dosageInstruction", "dosage"):
        v = med.get(key)
        out += v if isinstance(v, list) else [v] if isinstance(v, dict) else []
    return [d for d in out if isinstance(d, dict)]


class MedicationReader:
    """Mixed into FactBuilder: reads the four medication record types."""

    def _init_medications(self) -> None:
        t = self.k.raw["medications"]["therapy"]
        v = {key: entry["value"] for key, entry in t.items() if isinstance(entry, dict) and "value" in entry}
        self._med_rules = v
        self._fhir_statuses = {rt: frozenset(s) for rt, s in v["fhir_statuses"].items()}
        self._schedules = v["schedules"]
        self._dose_units = frozenset(u.lower() for u in v["dose_units"])
        gc = {key: entry["value"] for key, entry in self.k.raw["medications"]["glucocorticoids"].items()
              if isinstance(entry, dict) and "value" in entry}
        self._gc = gc
        self._gc_local_words = re.compile("|".join(gc["local_words"]), re.I)
        self._gc_systemic_words = re.compile("|".join(gc["systemic_words"]), re.I)
        self._gc_names = sorted(gc["equivalents"].items(), key=lambda kv: -len(kv[0]))  # methylprednisolone first
        self._gc_not_counted = re.compile(r"\b(?:" + "|".join(gc["not_counted_names"]) + r")\b", re.I)
        self._drug_memo: dict[tuple[Any, ...], str | None] = {}
        self._iv_patterns = {drug: re.compile("|".join(s["iv"]["patterns"]), re.I)
                             for drug, s in self._schedules.items() if isinstance(s.get("iv"), dict)}

    # -- which drug ------------------------------------------------------------------------
    def _concept(self, med: dict[str, Any], medications: dict[str, dict[str, Any]]) -> tuple[Any, str | None]:
        """The record's medication concept, resolving ``medicationReference`` to a contained Medication
        or one among the resources (by ``Medication/{id}`` or ``urn:uuid:{id}``): (concept, why not)."""
        if "medicationCodeableConcept" in med:
            concept = med.get("medicationCodeableConcept")
            if not isinstance(concept, dict):
                return None, "has a medicationCodeableConcept that is not a CodeableConcept"
            return concept, None
        ref = med.get("medicationReference")
        if not isinstance(ref, dict):
            return None, "names no medication (no medicationCodeableConcept or medicationReference)"
        target = ref.get("reference")
        if not isinstance(target, str) or not target.strip():
            if isinstance(ref.get("display"), str):
                return {"text": ref["display"]}, None  # a reference by its words only
            return None, "has a medicationReference without a reference"
        target = target.strip()
        found = None
        if target.startswith("#"):
            for c in med.get("contained") or []:
                if isinstance(c, dict) and c.get("resourceType") == "Medication" and c.get("id") == target[1:]:
                    found = c
        else:
            m = MEDICATION_REF.search(target)
            if m:
                found = medications.get(m.group(1) or m.group(2))
        if found is None:
            return None, (f"its medicationReference {target} could not be resolved (not contained, not in the data, "
                          "not readable from the fhirServer)")
        concept = found.get("code")
        if not isinstance(concept, dict):
            if isinstance(ref.get("display"), str) and ref["display"].strip():
                concept = {"text": ref["display"]}  # the reference's own words, when the Medication has no code
            else:
                return None, f"its Medication ({target}) has no code"
        if isinstance(ref.get("display"), str) and not concept.get("text"):
            concept = {**concept, "text": ref["display"]}
        form = _display(found.get("form"))
        if form and isinstance(concept, dict):  # "Prolia" + form "Injection" → the words of a product
            concept = {**concept, "text": f"{_display(concept)} {form}".strip()}
        return concept, None

    def match_drug(self, concept: Any) -> str | None:
        """The knowledge key of the drug a medicationCodeableConcept names, or None. The answer
        depends only on the concept's codes and its words, so it is remembered by those: the same
        few hundred medication concepts recur across patients."""
        codings = _codings(concept)
        pairs = tuple((c.get("system"), c.get("code")) for c in codings)
        text = _text_of(concept)
        if len(text) > DRUG_MEMO_TEXT or not all(isinstance(s, str) and isinstance(c, str) for s, c in pairs):
            return self.k.match_drug(codings, text)  # unusual concepts are not remembered
        key = (pairs, text)
        try:
            return self._drug_memo[key]
        except KeyError:
            pass
        found = self.k.match_drug(codings, text)
        if len(self._drug_memo) >= DRUG_MEMO_SIZE:
            self._drug_memo.clear()
        self._drug_memo[key] = found
        return found

    # -- one record ------------------------------------------------------------------------
    def _medication(self, med: dict[str, Any], facts: Facts, medications: dict[str, dict[str, Any]]) -> None:
        rtype = med["resourceType"]
        ref = _ref(med)
        concept, why = self._concept(med, medications)
        if why is not None:
            if not self._other_patient(med, facts):
                facts.ignored.append(Ignored(ref, f"medication record {why}"))
            return
        drug = self.match_drug(concept)
        if drug is None:
            text = _text_of(concept)
            pattern, reason = self.k.unmatched_medication
            if text and pattern.search(text.lower()) and not self._other_patient(med, facts):
                facts.ignored.append(Ignored(ref, f"{_display(concept) or text}: {reason}"))
            return
        if self._other_patient(med, facts):
            return
        d = self.k.drugs[drug]
        display = _display(concept) or next(
            (h.code.display for c in _codings(concept) for h in self.k.lookup(c.get("system"), c.get("code"))
             if h.code.display), d.label)  # a record coded only: its code's name in the value set
        status = med.get("status")
        if not isinstance(status, str) or status not in self._fhir_statuses[rtype]:
            facts.ignored.append(Ignored(ref, f"{d.label}: status {status if isinstance(status, str) else 'missing'!r} "
                                              f"is not a FHIR R4 {rtype} status"))
            return
        if d.drug_class == "glucocorticoid":
            # a record coded only: the value set's name for its code gives the words (ingredient, strength, form)
            named = [h.code.display for c in _codings(concept) for h in self.k.lookup(c.get("system"), c.get("code"))
                     if h.code.display]
            if named:
                concept = {**concept, "text": " ".join([_text_of(concept)] + named)} if isinstance(concept, dict) \
                    else {"text": " ".join(named)}
        if d.drug_class == "glucocorticoid" and self._gc_not_counted.search(_text_of(concept)):
            facts.ignored.append(Ignored(ref, f"{display}: not a systemic glucocorticoid counted for bone health "
                                              "(fludrocortisone, inhaled, nasal and topical steroids are not)"))
            return
        base = dict(drug=drug, label=d.label, drug_class=d.drug_class, kind=KIND[rtype], status=status,
                    resource=ref, display=display)
        dose_drug = self._dose_by_dose(drug, med, concept)
        reader = {"request": self._request, "statement": self._statement, "administration": self._administration,
                  "dispense": self._dispense}[KIND[rtype]]
        fact = reader(med, facts, base, dose_drug, d.label)
        if fact is None:
            return
        if d.drug_class == "glucocorticoid":
            fact = self._glucocorticoid(med, concept, fact)
        facts.medications.append(fact)

    def _dose_by_dose(self, drug: str, med: dict[str, Any], concept: Any) -> bool:
        schedule = self._schedules.get(drug) or {}
        if schedule.get("mode") == "dose":
            return True
        iv = schedule.get("iv")
        if not isinstance(iv, dict):
            return False
        for dosage in _dosages(med):
            for c in _codings(dosage.get("route")):
                if c.get("code") in iv["routes"]:
                    return True
        words = " ".join([_text_of(concept)] + [_text_of(x.get("route")) + " " + str(x.get("text") or "")
                                                for x in _dosages(med)])
        return bool(self._iv_patterns[drug].search(words))

    def _request(self, med, facts, base, dose_drug, label) -> MedicationFact | None:
        ref, status = base["resource"], base["status"]
        intent = med.get("intent")
        if intent not in self._med_rules["request_intents"]:
            facts.ignored.append(Ignored(ref, f"{label}: intent {intent or 'missing'} is not an order "
                                              f"(only {', '.join(self._med_rules['request_intents'])} count)"))
            return None
        if med.get("doNotPerform") is True:
            facts.ignored.append(Ignored(ref, f"{label}: an order not to give it (doNotPerform); not exposure"))
            if status in ("active", "on-hold"):  # in force: the drug is not to be offered (rules §6.1)
                facts.do_not_perform.setdefault(base["drug"], ref)
            return None
        if status not in self._med_rules["request_statuses"]:
            facts.ignored.append(Ignored(ref, f"{label}: order status {status} does not count "
                                              f"({', '.join(self._med_rules['request_not_counted'])} orders are not exposure)"))
            return None
        bounds = {}
        for di in _dosages(med):
            rep = _period(_period(di.get("timing")).get("repeat"))
            if isinstance(rep.get("boundsPeriod"), dict):
                bounds = rep["boundsPeriod"]
                break
        authored = parse_date(med.get("authoredOn"))
        start = parse_date(bounds.get("start")) or authored
        if start is None:
            facts.ignored.append(Ignored(ref, f"{label}: order without a date (no authoredOn or dosage bounds)"))
            return None
        bound_end = parse_date(bounds.get("end"))
        dr = _period(med.get("dispenseRequest"))
        validity_end = parse_date(_period(dr.get("validityPeriod")).get("end"))
        supply = duration_days(dr.get("expectedSupplyDuration"))
        repeats = dr.get("numberOfRepeatsAllowed")
        repeats = repeats if isinstance(repeats, int) and not isinstance(repeats, bool) and 0 <= repeats < 1000 else 0
        supplied = int(supply * (1 + repeats)) if supply else None
        if supplied is not None and supplied > int(self._med_rules["max_supply_days"]):
            supplied = None  # an implausible supply (a typing error or a placeholder): the convention applies
        if status == "active":
            ended = bound_end is not None and bound_end < facts.as_of
            return MedicationFact(**base, start=start, end=bound_end if ended else None, current=not ended,
                                  supply_days=supplied)
        if status == "on-hold":
            meta = _period(med.get("meta"))
            since = parse_date(meta.get("lastUpdated"))
            since = since if since and since <= facts.as_of and since >= start else start
            return MedicationFact(**base, start=start, end=since, on_hold=True)
        if status == "completed" and dose_drug:
            return MedicationFact(**base, start=authored or start, dose=True)
        # completed or stopped: exposure for the order's supply, cut at how long it may be filled
        if supplied is not None:
            end = add_days(start, max(supplied - 1, 0))
            if validity_end and validity_end < end:
                end = validity_end
        else:
            end = None
        if status == "stopped":
            end = bound_end or validity_end or end or start
            return MedicationFact(**base, start=start, end=min(end, facts.as_of), stopped=True)
        if bound_end:
            end = bound_end
        if end is None:  # the rules' convention for an order of unknown length (90 days)
            end = add_days(start, int(self._med_rules["request_default_days"]) - 1)
        return MedicationFact(**base, start=start, end=end, supply_days=supplied)

    def _statement(self, med, facts, base, dose_drug, label) -> MedicationFact | None:
        ref, status = base["resource"], base["status"]
        period = _period(med.get("effectivePeriod"))
        asserted = parse_date(med.get("dateAsserted"))
        start = parse_date(period.get("start")) or parse_date(med.get("effectiveDateTime")) or asserted
        end = parse_date(period.get("end"))
        if status == "not-taken":
            when = asserted or start or end
            facts.ignored.append(Ignored(ref, f"{label}: the patient is not taking it (statement not-taken)"))
            if when is None:
                return None
            reasons = med.get("statusReason") if isinstance(med.get("statusReason"), list) else []
            why = "; ".join(t for t in (_display(r) for r in reasons) if t)[:200] or None
            return MedicationFact(**base, start=when, not_taken=True, asserted=asserted, note=why)
        if status not in self._med_rules["statement_statuses"]:
            why = {"intended": "a plan, not exposure (statement intended)"}.get(
                status, f"statement status {status} does not count "
                        f"({', '.join(self._med_rules['statement_not_counted'])} statements are not exposure)")
            facts.ignored.append(Ignored(ref, f"{label}: {why}"))
            return None
        if start is None:
            facts.ignored.append(Ignored(ref, f"{label}: statement without a date (no effective date or dateAsserted)"))
            return None
        if dose_drug and not period and isinstance(med.get("effectiveDateTime"), str) and status != "stopped":
            # a dose-by-dose drug taken at one time: that is a dose (denosumab "taken 2026-03-02")
            return MedicationFact(**base, start=start, dose=True, current=status == "active", asserted=asserted)
        if status == "active":
            ended = end is not None and end < facts.as_of
            return MedicationFact(**base, start=start, end=end if ended else None, current=not ended, asserted=asserted)
        if status == "stopped":
            end = end or asserted or start
            return MedicationFact(**base, start=start, end=min(max(end, start), facts.as_of), stopped=True,
                                  asserted=asserted)
        end = end or parse_date(med.get("effectiveDateTime")) or asserted or start
        return MedicationFact(**base, start=start, end=max(end, start), asserted=asserted)

    def _administration(self, med, facts, base, dose_drug, label) -> MedicationFact | None:
        ref, status = base["resource"], base["status"]
        if status not in self._med_rules["administration_doses"] and status not in self._med_rules["administration_uncertain"]:
            why = {"not-done": "not given (not-done)", "entered-in-error": "entered in error"}.get(status, f"status {status}")
            facts.ignored.append(Ignored(ref, f"{label}: administration {why}; not counted as a dose"))
            return None
        when = parse_date(med.get("effectiveDateTime")) or parse_date(_period(med.get("effectivePeriod")).get("start"))
        if when is None:
            facts.ignored.append(Ignored(ref, f"{label}: administration without a date"))
            return None
        note = DOSE_UNCERTAIN if status in self._med_rules["administration_uncertain"] else None
        if dose_drug:
            return MedicationFact(**base, start=when, dose=True, note=note)
        days = self._dose_days(base["drug"], med)
        return MedicationFact(**base, start=when, end=add_days(when, max(days - 1, 0)), note=note,
                              supply_days=days)

    def _dispense(self, med, facts, base, dose_drug, label) -> MedicationFact | None:
        ref, status = base["resource"], base["status"]
        if status not in self._med_rules["dispense_statuses"]:
            facts.ignored.append(Ignored(ref, f"{label}: dispense status {status}; only completed fills count"))
            return None
        when = parse_date(med.get("whenHandedOver")) or parse_date(med.get("whenPrepared"))
        if when is None:
            facts.ignored.append(Ignored(ref, f"{label}: fill without a date (no whenHandedOver or whenPrepared)"))
            return None
        if dose_drug:
            return MedicationFact(**base, start=when, dose=True)
        days = duration_days(med.get("daysSupply"))
        note = None
        limit = float(self._med_rules["max_supply_days"])
        if days is None or days <= 0 or days > limit:
            days = self._quantity_days(base["drug"], med)
        if days is None or days > limit:
            days = float(self._med_rules["dispense_default_days"])
            note = SUPPLY_ASSUMED
        days = max(int(round(days)), 1)
        return MedicationFact(**base, start=when, end=add_days(when, days - 1), note=note, supply_days=days)

    def _dose_days(self, drug: str, med: dict[str, Any]) -> int:
        """Days one dose lasts: from the record's timing (once weekly → 7), else the drug's default."""
        for d in _dosages(med):
            rep = _period(_period(d.get("timing")).get("repeat"))
            freq, period = rep.get("frequency"), rep.get("period")
            unit = DURATION_DAYS.get(rep.get("periodUnit")) if isinstance(rep.get("periodUnit"), str) else None
            if isinstance(freq, int) and freq > 0 and isinstance(period, (int, float)) and period > 0 and unit:
                return max(1, int(round(period * unit / freq)))
        return int(self._med_rules["dose_days"].get(drug, 1))

    def _quantity_days(self, drug: str, med: dict[str, Any]) -> float | None:
        """A fill's supply from its quantity: pens × doses per pen, or tablets × days per dose."""
        q = med.get("quantity")
        n = _number(q)
        if n is None or n <= 0 or not isinstance(q, dict):
            return None
        units = {str(q.get(k)).strip().lower() for k in ("code", "unit") if isinstance(q.get(k), str)}
        per_unit = {u.lower(): v for u, v in ((self._schedules.get(drug) or {}).get("doses_per_unit") or {}).items()}
        for u in units:
            if u in per_unit:
                return n * float(per_unit[u]) * self._dose_days(drug, med)
        if units & self._dose_units:
            return n * self._dose_days(drug, med)
        return None

    # -- glucocorticoids (rules §6.1, ACR 2022) ---------------------------------------------
    def _glucocorticoid(self, med: dict[str, Any], concept: Any, fact: MedicationFact) -> MedicationFact:
        from dataclasses import replace

        gc = self._gc
        route = None
        texts = [_text_of(concept)]
        for d in _dosages(med):
            for c in _codings(d.get("route")):
                if c.get("code") in gc["local_routes"]:
                    route = "local"
                elif c.get("code") in gc["systemic_routes"] and route is None:
                    route = "systemic"
            texts += [_text_of(d.get("route")), str(d.get("text") or "")]
        words = " ".join(t for t in texts if t)
        if route is None:
            if self._gc_local_words.search(words):
                route = "local"
            elif self._gc_systemic_words.search(words):
                route = "systemic"
        factor = next((f for name, f in self._gc_names if re.search(rf"\b{name}\b", _text_of(concept), re.I)), None)
        daily = self._daily_mg(med, _text_of(concept), self._dose_units)
        planned = self._planned_days(med)
        return replace(fact, route=route, daily_mg=round(daily * float(factor), 2) if daily and factor else None,
                       planned_days=planned)

    @staticmethod
    def _daily_mg(med: dict[str, Any], text: str, dose_units: frozenset[str]) -> float | None:
        """mg of the drug a day from the dosage: a dose in mg, or in tablets × the strength in the name,
        times doses a day from the timing (once a day when the timing says nothing)."""
        for d in _dosages(med):
            dose = None
            for dr in d.get("doseAndRate") or [] if isinstance(d.get("doseAndRate"), list) else []:
                if isinstance(dr, dict) and isinstance(dr.get("doseQuantity"), dict):
                    dose = dr["doseQuantity"]
                    break
            if dose is None and isinstance(d.get("dose"), dict):  # MedicationAdministration.dosage.dose
                dose = d["dose"]
            value = _number(dose)
            if value is None or value <= 0:
                continue
            unit = str(dose.get("code") or dose.get("unit") or "").strip().lower()
            if unit == "mg":
                mg = value
            elif unit in ("g",):
                mg = value * 1000
            else:
                strength = STRENGTH_MG.search(text)
                if not strength or (unit and unit not in dose_units):
                    continue
                mg = value * float(strength.group(1))
            rep = _period(_period(d.get("timing")).get("repeat"))
            freq, period = rep.get("frequency", 1), rep.get("period", 1)
            unit_days = DURATION_DAYS.get(rep.get("periodUnit", "d")) if isinstance(rep.get("periodUnit", "d"), str) else None
            if not (isinstance(freq, (int, float)) and isinstance(period, (int, float)) and unit_days
                    and not isinstance(freq, bool) and 0 < freq < 1000 and 0 < period < 1e6):
                continue  # an unreadable timing: the dose is unknown, never negative or infinite
            daily = mg * freq / (period * unit_days)
            if not math.isfinite(daily) or daily <= 0:
                continue
            return daily
        return None

    @staticmethod
    def _planned_days(med: dict[str, Any]) -> int | None:
        """The course the record plans: its dosage bounds, supply × repeats, or days' supply."""
        for d in _dosages(med):
            rep = _period(_period(d.get("timing")).get("repeat"))
            bp = _period(rep.get("boundsPeriod"))
            s, e = parse_date(bp.get("start")), parse_date(bp.get("end"))
            if s and e and e >= s:
                return (e - s).days + 1
            days = duration_days(rep.get("boundsDuration"))
            if days:
                return int(days)
        dr = _period(med.get("dispenseRequest"))
        supply = duration_days(dr.get("expectedSupplyDuration"))
        if supply:
            repeats = dr.get("numberOfRepeatsAllowed")
            repeats = repeats if isinstance(repeats, int) and not isinstance(repeats, bool) and 0 <= repeats < 1000 else 0
            return int(supply * (1 + repeats))
        days = duration_days(med.get("daysSupply"))
        return int(days) if days else None

