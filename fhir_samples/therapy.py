"""Sample patients whose osteoporosis therapy is written the way EHRs write it (clinical rules §6.1).

Each case is a patient built as a FHIR R4 transaction Bundle relative to an ``as_of`` date, with the
medication records an EHR, an infusion centre or a pharmacy sends: MedicationAdministration (dose by
dose: clinic injections and infusions), MedicationDispense (pharmacy fills), MedicationRequest (orders,
plans, holds, do-not-perform) and MedicationStatement (what the patient reports, medication
reconciliation), with ``medicationReference`` to contained and Bundle Medications, and structured
dosage (route, doseAndRate, timing) for glucocorticoids.

Every case carries what a clinician expects of the service, as data: ``must`` and ``must_not``, lists
of checks in this vocabulary (evaluated by ``tests/scenarios/test_real_records_therapy.py``):

- ``("offers", drug)``: a card suggestion creates a MedicationRequest for that drug (keys of the
  knowledge files: alendronate, risedronate, ibandronate, zoledronic_acid, denosumab, teriparatide,
  abaloparatide, romosozumab);
- ``("says", phrase)``: some card's summary or detail contains the phrase (case-insensitive);
- ``("indicator", level, phrase)``: a card with that indicator (info, warning, critical) whose summary
  contains the phrase (case-insensitive);
- ``("not_used", "ResourceType/id")``: the record is listed under data not used (``Facts.ignored``;
  ``cds-service evaluate`` prints them on stderr);
- ``("no_cards",)``: the answer is ``{"cards": []}`` (used by the Synthea expectations for deceased
  patients).

``python -m fhir_samples.therapy --as-of YYYY-MM-DD`` writes every Bundle to ``fhir_samples/therapy/``
(with a manifest of the cases), for ``cds-service evaluate fhir_samples/therapy/<case>.json``.
"""
from __future__ import annotations

import argparse
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

from fhir_samples.scenarios import ICD, RXNORM, UCUM, Builder, Scenario

SNOMED = "http://snomed.info/sct"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MR_STATUS_REASON = "http://terminology.hl7.org/CodeSystem/medicationrequest-status-reason"
MED_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
ADMIN_CATEGORY = "http://terminology.hl7.org/CodeSystem/medication-admin-category"
EPIC_MED = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"  # an Epic site's medication (ERX) ids
SAMPLE_NS = uuid.UUID("6f1c2a8e-3b0d-5c4e-9a7f-0e5b2d9c1a47")

ROUTES = {  # SNOMED CT route of administration
    "oral": ("26643006", "Oral route"),
    "iv": ("47625008", "Intravenous route"),
    "sc": ("34206005", "Subcutaneous route"),
    "topical": ("6064005", "Topical route"),
    "inhaled": ("447694001", "Respiratory tract route"),
    "ophthalmic": ("54485002", "Ophthalmic route"),
}

DRUGS = ("alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab", "teriparatide",
         "abaloparatide", "romosozumab")


@dataclass(frozen=True)
class Product:
    """A product as an EHR names it: RxNorm code and display, and the EHR's own text."""
    rxcui: str | None
    display: str
    text: str
    local: str | None = None  # the site's own medication id (Epic ERX), sent beside RxNorm

    def concept(self) -> dict[str, Any]:
        codings = []
        if self.local:
            codings.append({"system": EPIC_MED, "code": self.local, "display": self.text.upper()})
        if self.rxcui:
            codings.append({"system": RXNORM, "code": self.rxcui, "display": self.display})
        return {"coding": codings, "text": self.text} if codings else {"text": self.text}


# RxNorm codes from cds_service/knowledge/valuesets/*.json (and Synthea's modules for the inhaler and
# the cream); texts as Epic and Cerner print them
P = {
    "alendronate_70": Product("904431", "alendronic acid 70 MG Oral Tablet", "alendronate (FOSAMAX) 70 MG tablet",
                              local="10203"),
    "alendronate_10": Product("904419", "Alendronic acid 10 MG Oral Tablet", "Alendronic acid 10 MG Oral Tablet"),
    "risedronate_35": Product("905024", "risedronate sodium 35 MG Oral Tablet", "risedronate (ACTONEL) 35 MG tablet"),
    "prolia": Product("993456", "1 ML denosumab 60 MG/ML Prefilled Syringe [Prolia]",
                      "denosumab (PROLIA) 60 mg/mL injection syringe", local="31642"),
    "reclast": Product("705875", "100 ML zoledronic acid 0.05 MG/ML Injection [Reclast]",
                       "zoledronic acid (RECLAST) 5 mg/100 mL IVPB", local="28904"),
    "zoledronic_5": Product("705824", "100 ML zoledronic acid 0.05 MG/ML Injection",
                            "zoledronic acid 5 mg/100 mL infusion"),
    "boniva_iv": Product("904954", "3 ML ibandronic acid 1 MG/ML Prefilled Syringe [Boniva]",
                         "ibandronate (BONIVA) 3 mg/3 mL injection syringe"),
    "forteo": Product("1435117", "28 ACTUAT teriparatide 0.02 MG/ACTUAT Pen Injector [Forteo]",
                      "teriparatide (FORTEO) 20 mcg/dose (620 mcg/2.48 mL) pen injector"),
    "tymlos": Product("1921082", "abaloparatide pen injector [Tymlos]",
                      "abaloparatide (TYMLOS) 80 mcg/dose (3,120 mcg/1.56 mL) pen injector"),
    "evenity": Product("2123190", "1.17 ML romosozumab-aqqg 89.7 MG/ML Prefilled Syringe [Evenity]",
                       "romosozumab-aqqg (EVENITY) 105 mg/1.17 mL syringe"),
    "prednisone_5": Product("312617", "prednisone 5 MG Oral Tablet", "predniSONE (DELTASONE) 5 MG tablet"),
    "prednisone_20": Product("312615", "prednisone 20 MG Oral Tablet", "predniSONE (DELTASONE) 20 MG tablet"),
    "pulmicort": Product("966524", "120 ACTUAT budesonide 0.18 MG/ACTUAT Dry Powder Inhaler [Pulmicort]",
                         "budesonide (PULMICORT FLEXHALER) 180 mcg/actuation inhaler"),
    "hydrocortisone_cream": Product("106258", "hydrocortisone 10 MG/ML Topical Cream",
                                    "hydrocortisone 1 % cream"),
    # no RxNorm code was at hand for the eye drops: the site's own code and its text, as many EHRs send
    "prednisolone_eye": Product(None, "", "prednisoLONE acetate (PRED FORTE) 1 % ophthalmic suspension",
                                local="4417"),
}

WEEKLY = {"frequency": 1, "period": 1, "periodUnit": "wk"}
DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}


def qty(value: float, unit: str, code: str | None = None, system: str | None = UCUM) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if system:
        q["system"] = system
        q["code"] = code or unit
    return q


def route(key: str) -> dict[str, Any]:
    code, display = ROUTES[key]
    return {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display}


def dosage(text: str, route_key: str | None = None, dose: tuple[float, str] | None = None,
           timing: dict[str, Any] | None = None, timing_text: str | None = None) -> dict[str, Any]:
    """A Dosage as an order or dispense carries it (dosageInstruction)."""
    d: dict[str, Any] = {"sequence": 1, "text": text}
    if timing or timing_text:
        d["timing"] = {}
        if timing:
            d["timing"]["repeat"] = dict(timing)
        if timing_text:
            d["timing"]["code"] = {"text": timing_text}
    if route_key:
        d["route"] = route(route_key)
    if dose:
        d["doseAndRate"] = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type",
                                                  "code": "ordered", "display": "Ordered"}]},
                             "doseQuantity": qty(dose[0], dose[1])}]
    return d


def at(day: str, hhmm: str = "10:30") -> str:
    """A local date-time on that day, as EHRs send them (US Central, standard time)."""
    return f"{day}T{hhmm}:00-06:00"


@dataclass(frozen=True)
class TherapyCase:
    id: str  # therapy-NN-slug
    description: str
    build: Callable[["TherapyBuilder"], None]
    must: list[tuple[str, ...]] = field(default_factory=list)
    must_not: list[tuple[str, ...]] = field(default_factory=list)
    sex: str = "female"
    age: int = 72

    @property
    def number(self) -> int:
        return int(self.id.split("-")[1])

    @property
    def slug(self) -> str:
        return self.id.split("-", 2)[2]


class TherapyBuilder(Builder):
    """``Builder`` with the four kinds of medication record, Medications and real UUID fullUrls."""

    def __init__(self, case: TherapyCase, as_of: date):
        super().__init__(Scenario(case.number, case.slug, case.description, case.sex, case.age, lambda _: None),
                         as_of)
        self.case = case
        self.pid = f"therapy-{case.number:02d}"

    # -- dates ----------------------------------------------------------------------------------
    def day(self, days_ago: float) -> str:
        return (self.as_of - timedelta(days=int(round(days_ago)))).isoformat()

    # -- the patient ----------------------------------------------------------------------------
    def patient(self) -> None:
        birth = self.as_of - timedelta(days=int(self.s.age * 365.25 + 97))
        self.resources.append({
            "resourceType": "Patient", "id": self.pid,
            "identifier": [{"use": "usual",
                            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "MR", "display": "Medical record number"}]},
                            "system": "urn:oid:2.16.840.1.113883.19.5.99999.1", "value": f"E{40000 + self.s.number}"}],
            "active": True,
            "name": [{"use": "official", "family": f"Therapy{self.s.number:02d}", "given": ["Sample"]}],
            "gender": self.s.sex, "birthDate": birth.isoformat(),
        })

    def base(self, lumbar: float | None = -2.7, hip: float | None = None, neck: float | None = None,
             dxa_days: int = 30, labs_days: int | None = 25, **labs: float | None) -> None:
        """The patient, a DXA exam and the recent labs (RECENT_LABS with any changes)."""
        self.patient()
        self.exam(dxa_days, lumbar, hip, neck)
        if labs_days is not None:
            self.labs(self.day(labs_days), **labs)

    def exam(self, days_ago: float, lumbar: float | None = None, hip: float | None = None,
             neck: float | None = None) -> None:
        when = self.day(days_ago)
        for code, value in (("38267-1", lumbar), ("38264-8", hip), ("38263-0", neck)):
            if value is not None:
                self.dxa(code, value, when)

    def problem(self, code: str, display: str, onset_days: float, system: str = ICD) -> None:
        self.condition(code, display, self.day(onset_days), system=system)

    # -- references -----------------------------------------------------------------------------
    def full_url(self, resource: dict[str, Any]) -> str:
        return "urn:uuid:" + str(uuid.uuid5(SAMPLE_NS, f"{resource['resourceType']}/{resource['id']}"))

    def _subject(self) -> dict[str, Any]:
        return {"reference": f"Patient/{self.pid}"}

    def _medication(self, r: dict[str, Any], product: Product | None, reference: dict[str, Any] | None) -> None:
        if reference is not None:
            r["medicationReference"] = reference
        else:
            assert product is not None
            r["medicationCodeableConcept"] = product.concept()

    def medication(self, product: Product, rid: str | None = None, form: tuple[str, str] | None = None,
                   strength: tuple[float, str, float, str] | None = None, ingredient: tuple[str, str] | None = None,
                   contained: bool = False) -> dict[str, Any]:
        """A Medication: added to the Bundle, or returned to be contained in a record."""
        med: dict[str, Any] = {"resourceType": "Medication", "id": rid or self._id("med"), "code": product.concept(),
                               "status": "active"}
        if form:
            med["form"] = {"coding": [{"system": SNOMED, "code": form[0], "display": form[1]}], "text": form[1]}
        if ingredient:
            ing: dict[str, Any] = {"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": ingredient[0],
                                                                      "display": ingredient[1]}]},
                                   "isActive": True}
            if strength:
                ing["strength"] = {"numerator": qty(strength[0], strength[1]),
                                   "denominator": qty(strength[2], strength[3], "{" + strength[3] + "}")}
            med["ingredient"] = [ing]
        if not contained:
            self.resources.append(med)
        return med

    # -- MedicationAdministration ---------------------------------------------------------------
    def administration(self, product: Product, when: str | None, status: str = "completed",
                       dose: tuple[float, str] | None = None, route_key: str | None = None,
                       end: str | None = None, text: str = "", rid: str | None = None,
                       status_reason: str | None = None, note: str | None = None,
                       site: str | None = None, rate: dict[str, Any] | None = None) -> dict[str, Any]:
        """One dose given in clinic (``when``: a date-time; ``end`` makes it an effectivePeriod)."""
        r: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": rid or self._id("medadmin"),
                             "status": status,
                             "category": {"coding": [{"system": ADMIN_CATEGORY, "code": "outpatient",
                                                      "display": "Outpatient"}]}}
        self._medication(r, product, None)
        r["subject"] = self._subject()
        if when is not None:
            if end is not None or status == "in-progress":
                r["effectivePeriod"] = {"start": when, **({"end": end} if end else {})}
            else:
                r["effectiveDateTime"] = when
        r["performer"] = [{"actor": {"display": "Infusion and injection clinic nurse"}}]
        if status_reason:
            r["statusReason"] = [{"text": status_reason}]
        dsg: dict[str, Any] = {"text": text or (product.text + " given")}
        if site:
            dsg["site"] = {"text": site}
        if route_key:
            dsg["route"] = route(route_key)
        if dose:
            dsg["dose"] = qty(dose[0], dose[1])
        if rate:
            dsg["rateRatio"] = rate
        r["dosage"] = dsg
        if note:
            r["note"] = [{"text": note}]
        self.resources.append(r)
        return r

    # -- MedicationDispense ---------------------------------------------------------------------
    def dispense(self, product: Product | None, handed_over: str | None, status: str = "completed",
                 quantity: dict[str, Any] | None = None, days_supply: int | None = None,
                 prepared: str | None = None, first: bool = False, instruction: dict[str, Any] | None = None,
                 reference: dict[str, Any] | None = None, prescription: str | None = None,
                 rid: str | None = None, pharmacy: str = "Main Street Pharmacy #2231") -> dict[str, Any]:
        """One pharmacy fill (``handed_over``/``prepared``: date-times)."""
        r: dict[str, Any] = {"resourceType": "MedicationDispense", "id": rid or self._id("meddisp"), "status": status}
        self._medication(r, product, reference)
        r["subject"] = self._subject()
        r["performer"] = [{"actor": {"display": pharmacy}}]
        if prescription:
            r["authorizingPrescription"] = [{"reference": f"MedicationRequest/{prescription}"}]
        r["type"] = {"coding": [{"system": ACT_CODE, "code": "FF" if first else "RF",
                                 "display": "First Fill" if first else "Refill"}]}
        if quantity is not None:
            r["quantity"] = quantity
        if days_supply is not None:
            r["daysSupply"] = qty(days_supply, "days", "d")
        if prepared:
            r["whenPrepared"] = prepared
        if handed_over:
            r["whenHandedOver"] = handed_over
        if instruction:
            r["dosageInstruction"] = [instruction]
        self.resources.append(r)
        return r

    # -- MedicationRequest ----------------------------------------------------------------------
    def order(self, product: Product | None, authored: str, status: str = "active", intent: str = "order",
              instruction: dict[str, Any] | None = None, supply_days: int | None = None,
              repeats: int | None = None, validity: tuple[str, str] | None = None,
              quantity: dict[str, Any] | None = None, do_not_perform: bool = False,
              status_reason: dict[str, Any] | None = None, reason: str | None = None,
              reference: dict[str, Any] | None = None, contained: list[dict[str, Any]] | None = None,
              rid: str | None = None, note: str | None = None, community: bool = True) -> dict[str, Any]:
        r: dict[str, Any] = {"resourceType": "MedicationRequest", "id": rid or self._id("medreq")}
        if contained:
            r["contained"] = contained
        r["status"] = status
        if status_reason:
            r["statusReason"] = status_reason
        r["intent"] = intent
        r["category"] = [{"coding": [{"system": MED_CATEGORY, "code": "community" if community else "outpatient",
                                      "display": "Community" if community else "Outpatient"}]}]
        if do_not_perform:
            r["doNotPerform"] = True
        self._medication(r, product, reference)
        r["subject"] = self._subject()
        r["authoredOn"] = authored
        r["requester"] = {"display": "Ana Rivera, MD"}
        if reason:
            r["reasonCode"] = [{"text": reason}]
        if note:
            r["note"] = [{"text": note}]
        if instruction:
            r["dosageInstruction"] = [instruction]
        dr: dict[str, Any] = {}
        if validity:
            dr["validityPeriod"] = {"start": validity[0], "end": validity[1]}
        if repeats is not None:
            dr["numberOfRepeatsAllowed"] = repeats
        if quantity:
            dr["quantity"] = quantity
        if supply_days is not None:
            dr["expectedSupplyDuration"] = qty(supply_days, "days", "d")
        if dr:
            r["dispenseRequest"] = dr
        self.resources.append(r)
        return r

    # -- MedicationStatement --------------------------------------------------------------------
    def statement(self, product: Product | None, status: str, start: str | None = None, end: str | None = None,
                  when: str | None = None, asserted: str | None = None, instruction: dict[str, Any] | None = None,
                  status_reason: str | None = None, note: str | None = None, rid: str | None = None,
                  source_patient: bool = True) -> dict[str, Any]:
        r: dict[str, Any] = {"resourceType": "MedicationStatement", "id": rid or self._id("medstmt"), "status": status}
        if status_reason:
            r["statusReason"] = [{"text": status_reason}]
        self._medication(r, product, None)
        r["subject"] = self._subject()
        if start or end:
            r["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        elif when:
            r["effectiveDateTime"] = when
        if asserted:
            r["dateAsserted"] = asserted
        if source_patient:
            r["informationSource"] = {"reference": f"Patient/{self.pid}"}
        if instruction:
            r["dosage"] = [instruction]
        if note:
            r["note"] = [{"text": note}]
        self.resources.append(r)
        return r

    # -- the Bundle -----------------------------------------------------------------------------
    def bundle(self) -> dict[str, Any]:
        return {
            "resourceType": "Bundle", "type": "transaction",
            "meta": {"tag": [{"system": "https://bone-health-cds.org/sample-as-of", "code": self.as_of.isoformat()},
                             {"system": "https://bone-health-cds.org/sample-case", "code": self.case.id}]},
            "entry": [{"fullUrl": self.full_url(r), "resource": r,
                       "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in self.resources],
        }


# -- pieces the cases share --------------------------------------------------------------------------

PROLIA_DOSE = dosage("60 mg subcutaneously every 6 months", "sc", (60, "mg"))
ALN_WEEKLY = dosage("Take 1 tablet (70 mg) by mouth every 7 days in the morning with a full glass of water, "
                    "30 minutes before food; stay upright", "oral", (70, "mg"), WEEKLY, "Weekly")


def _denosumab_doses(b: TherapyBuilder, last_months: float, doses: int = 6) -> None:
    """Prolia given in clinic every 6 months, one completed administration per dose."""
    for i in range(doses - 1, -1, -1):
        b.administration(P["prolia"], at(b.ago(months=last_months + 6 * i), "09:40"), dose=(60, "mg"),
                         route_key="sc", site="Left upper arm", text="60 mg subcutaneously once")


def _zoledronic(b: TherapyBuilder, days_ago: float, status: str = "completed", **kw: Any) -> dict[str, Any]:
    start = b.day(days_ago)
    kw.setdefault("end", at(start, "11:05") if status == "completed" else None)
    return b.administration(P["reclast"], at(start, "10:30"), status=status, dose=(5, "mg"), route_key="iv",
                            text="5 mg in 100 mL intravenously over 30 minutes",
                            rate={"numerator": qty(100, "mL"), "denominator": qty(30, "min")}, **kw)


def _alendronate_fills(b: TherapyBuilder, last_days: float, count: int, every: int = 90, days_supply: int | None = 90,
                       tablets: int | None = 13, product: str = "alendronate_70", **kw: Any) -> None:
    """Pharmacy fills of weekly alendronate, oldest first, the last ``last_days`` ago."""
    for i in range(count - 1, -1, -1):
        day = b.day(last_days + every * i)
        b.dispense(P[product], at(day, "16:10"), days_supply=days_supply,
                   quantity=qty(tablets, "tablet", "{tbl}") if tablets else None,
                   prepared=at(day, "11:00"), first=(i == count - 1), instruction=ALN_WEEKLY, **kw)


def _teriparatide_fills(b: TherapyBuilder, last_days: float, count: int, product: str = "forteo",
                        every: int = 28) -> None:
    """Monthly pen fills (quantity 1 pen; no daysSupply: a Forteo pen holds 28 daily doses, a Tymlos pen 30)."""
    text = ("Inject 20 mcg under the skin daily" if product == "forteo" else "Inject 80 mcg under the skin daily")
    dose = (20, "ug") if product == "forteo" else (80, "ug")
    for i in range(count - 1, -1, -1):
        day = b.day(last_days + every * i)
        b.dispense(P[product], at(day, "15:00"), quantity=qty(1, "pen", "{pen}"), first=(i == count - 1),
                   instruction=dosage(text, "sc", dose, DAILY, "Daily"), pharmacy="Specialty Pharmacy Services")


def _prednisone_orders(b: TherapyBuilder, first_days: int, renewals: int, every: int = 30,
                       instruction: dict[str, Any] | None = None, product: str = "prednisone_5",
                       tablets: int = 45) -> None:
    """Prednisone renewed every ``every`` days: the earlier orders completed, the latest active."""
    for i in range(renewals):
        authored = b.day(first_days - every * i)
        last = i == renewals - 1
        b.order(P[product], authored, status="active" if last else "completed", instruction=instruction,
                supply_days=every, repeats=0, quantity=qty(tablets, "tablet", "{tbl}"),
                validity=(authored, b.day(first_days - every * i - 365)))


# -- the cases ------------------------------------------------------------------------------------------

def _01(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=35)
    b.exam(3 * 365 + 20, lumbar=-3.0, hip=-2.3)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 3 * 365 + 20)
    _denosumab_doses(b, last_months=2)


def _02(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=40)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 3 * 365 + 220)
    _denosumab_doses(b, last_months=6.5)


def _03(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=60)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 3 * 365 + 260)
    _denosumab_doses(b, last_months=8)


def _04(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=40)
    _denosumab_doses(b, last_months=3)
    b.statement(P["prolia"], "stopped", start=b.ago(months=33), end=b.ago(months=3), asserted=b.ago(days=14),
                status_reason="Patient declined further injections (dental implant planned)",
                instruction=PROLIA_DOSE)


def _05(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.4, hip=-2.0, dxa_days=60)
    b.exam(4 * 365 + 30, lumbar=-2.9, hip=-2.3)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 4 * 365 + 30)
    _denosumab_doses(b, last_months=15)
    _zoledronic(b, days_ago=round(9 * 30.4375), note="Transition from denosumab: 6 months after the last Prolia dose")


def _06(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.5, hip=-2.0, dxa_days=50)
    _denosumab_doses(b, last_months=6)
    _zoledronic(b, days_ago=round(3 * 30.4375), note="Transition from denosumab: 3 months after the last Prolia dose")


def _07(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.4, hip=-2.0, dxa_days=75)
    b.exam(3 * 365 + 250, lumbar=-2.8, hip=-2.2)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 3 * 365 + 250)
    _denosumab_doses(b, last_months=8)
    b.order(P["alendronate_70"], b.day(61), instruction=ALN_WEEKLY, supply_days=84, repeats=3,
            quantity=qty(12, "tablet", "{tbl}"), validity=(b.day(61), b.day(61 - 365)),
            reason="Follow-on after denosumab", rid="therapy-07-order-alendronate")
    b.dispense(P["alendronate_70"], at(b.day(60), "17:20"), quantity=qty(12, "tablet", "{tbl}"),
               days_supply=84, first=True, instruction=ALN_WEEKLY, prescription="therapy-07-order-alendronate")


def _08(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.9, hip=-2.3, dxa_days=40)
    # a rebound vertebral fracture 6.3 months after the last Prolia dose, when it no longer covered her
    b.problem("M80.08XA", "Age-related osteoporosis with current pathological fracture, vertebra(e), "
                          "initial encounter for fracture", 50)
    _denosumab_doses(b, last_months=8)
    _teriparatide_fills(b, last_days=7, count=2)


def _09(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=60, egfr=25, creatinine=2.0, calcium=9.1)
    b.problem("N18.4", "Chronic kidney disease, stage 4 (severe)", 2 * 365)
    _denosumab_doses(b, last_months=7.5)


def _10(b: TherapyBuilder) -> None:
    """Prolia bought by the clinic from a specialty pharmacy: one dispense per dose."""
    b.base(lumbar=-2.6, hip=-2.2, dxa_days=45)
    for months in (26, 20, 14, 8, 2):
        day = b.ago(months=months)
        if months == 14:  # the pharmacy system sent only when it was prepared
            b.dispense(P["prolia"], None, quantity=qty(1, "syringe", "{syringe}"), prepared=at(day, "08:15"),
                       instruction=PROLIA_DOSE, pharmacy="Specialty Pharmacy Services")
        else:
            b.dispense(P["prolia"], at(day, "13:45"), quantity=qty(1, "syringe", "{syringe}"),
                       prepared=at(day, "08:15"), instruction=PROLIA_DOSE, pharmacy="Specialty Pharmacy Services",
                       first=months == 26)
    # a fill the payer declined a week before the one that went through: not a dose
    b.dispense(P["prolia"], None, status="declined", quantity=qty(1, "syringe", "{syringe}"),
               prepared=at(b.ago(months=2, days=7), "08:15"), instruction=PROLIA_DOSE,
               pharmacy="Specialty Pharmacy Services")


def _11(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.3, hip=-2.0, neck=-2.2, dxa_days=30)
    b.exam(3 * 365 + 30, lumbar=-2.7, hip=-2.4, neck=-2.6)
    for months in (30, 18, 6):
        _zoledronic(b, days_ago=round(months * 30.4375))


def _12(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=220)
    authored = b.ago(months=6)
    b.order(P["reclast"], authored, status="completed",
            instruction=dosage("5 mg intravenously over at least 30 minutes, once", "iv", (5, "mg"),
                               timing_text="Once"),
            reason="Postmenopausal osteoporosis", community=False)


def _13(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.8, hip=-2.3, dxa_days=40, labs_days=12)
    _zoledronic(b, days_ago=0, status="in-progress")


def _14(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.3, dxa_days=90, labs_days=70)
    day = b.ago(months=2)
    b.administration(P["reclast"], at(day, "10:30"), status="stopped", end=at(day, "10:42"), dose=(5, "mg"),
                     route_key="iv", text="5 mg in 100 mL intravenously over 30 minutes",
                     status_reason="Infusion stopped: patient reported chest tightness and flushing",
                     note="About 40 mL infused before the infusion was stopped",
                     rate={"numerator": qty(100, "mL"), "denominator": qty(30, "min")})


def _15(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=50)
    _zoledronic(b, days_ago=35, status="not-done", status_reason="Patient declined: afraid of flu-like reaction",
                end=None)
    _zoledronic(b, days_ago=21, status="entered-in-error", status_reason="Charted on the wrong patient")
    _zoledronic(b, days_ago=14, status="on-hold", end=None, rid="therapy-15-admin-on-hold",
                status_reason="Held: waiting for dental clearance")
    _zoledronic(b, days_ago=7, status="unknown", end=None, rid="therapy-15-admin-unknown")


def _16(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=400, labs_days=92)
    _zoledronic(b, days_ago=372 + 365)
    _zoledronic(b, days_ago=372)


def _17(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.2, hip=-2.0, neck=-1.8, dxa_days=30)
    b.exam(6 * 365 + 20, lumbar=-2.7, hip=-2.3, neck=-2.2)
    _alendronate_fills(b, last_days=30, count=25)


def _18(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.2, dxa_days=400)
    _alendronate_fills(b, last_days=20, count=13, every=28, days_supply=None, tablets=4)


def _19(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.2, dxa_days=400)
    for i in range(11, -1, -1):
        day = b.day(10 + 30 * i)
        # no daysSupply; no quantity, or a package count the knowledge cannot turn into doses
        b.dispense(P["alendronate_70"], at(day, "16:10"), first=(i == 11), instruction=ALN_WEEKLY,
                   quantity=qty(1, "box", system=None) if i == 0 else None)


def _20(b: TherapyBuilder) -> None:
    """Alendronate 2014-2020 (for an evaluation in late 2026): 6 years of fills, nothing since."""
    b.base(lumbar=-2.1, hip=-2.1, neck=-2.0, dxa_days=round(6.6 * 365.25))
    b.exam(round(12.6 * 365.25), lumbar=-2.6, hip=-2.2, neck=-2.4)
    _alendronate_fills(b, last_days=round(6.5 * 365.25), count=25)


def _21(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.0, hip=-1.9, neck=-2.1, dxa_days=455)
    b.exam(round(6.6 * 365.25), lumbar=-2.6, hip=-2.2, neck=-2.3)
    _alendronate_fills(b, last_days=round(1.25 * 365.25), count=22)


def _22(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.4, hip=-2.6, neck=-2.5, dxa_days=30)
    b.exam(round(2.6 * 365.25), lumbar=-2.2, hip=-2.2, neck=-2.3)
    _alendronate_fills(b, last_days=round(2.5 * 365.25), count=21)


def _23(b: TherapyBuilder) -> None:
    _21(b)
    b.problem("M80.08XA", "Age-related osteoporosis with current pathological fracture, vertebra(e), "
                          "initial encounter for fracture", 60)


def _24(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.8, hip=-2.3, dxa_days=30)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 5 * 365 + 30)
    authored = b.day(3 * 365 + 90 + 8 * 90 + 2)  # two days before the first of 9 fills
    b.order(P["alendronate_70"], authored, status="stopped", instruction=ALN_WEEKLY, supply_days=90, repeats=3,
            quantity=qty(13, "tablet", "{tbl}"), validity=(authored, b.day(3 * 365 + 90 + 8 * 90 + 2 - 365)),
            status_reason={"text": "Stopped by patient: dyspepsia"}, rid="therapy-24-order-alendronate")
    _alendronate_fills(b, last_days=3 * 365 + 90, count=9, prescription="therapy-24-order-alendronate")


def _25(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    authored = b.day(425)
    b.order(P["alendronate_70"], authored, status="completed", instruction=ALN_WEEKLY, supply_days=90, repeats=3,
            quantity=qty(13, "tablet", "{tbl}"), validity=(authored, b.day(425 - 365)))


def _26(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=80)
    b.order(P["alendronate_70"], b.day(45), status="completed", instruction=ALN_WEEKLY,
            note="E-prescribed to the patient's pharmacy")


def _27(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    b.order(P["alendronate_70"], b.day(20), intent="plan", instruction=ALN_WEEKLY,
            note="Plan: start after the dental work is finished")
    b.order(P["alendronate_70"], b.day(6), intent="proposal", instruction=ALN_WEEKLY,
            note="Pharmacist proposal from the osteoporosis clinic")


def _28(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    b.order(P["alendronate_70"], b.day(400), do_not_perform=True,
            reason="Severe oesophagitis on alendronate in the past", note="Do not prescribe oral bisphosphonates")


def _29(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    b.order(P["reclast"], b.day(60), status="cancelled", instruction=dosage("5 mg IV once", "iv", (5, "mg")),
            status_reason={"coding": [{"system": MR_STATUS_REASON, "code": "clarif",
                                       "display": "Prescription requires clarification"}]}, community=False)
    b.order(P["prolia"], b.day(7), status="draft", instruction=PROLIA_DOSE, community=False)
    b.order(P["alendronate_70"], b.day(30), status="entered-in-error", instruction=ALN_WEEKLY)
    b.order(P["risedronate_35"], b.day(90), status="unknown",
            instruction=dosage("Take 1 tablet (35 mg) by mouth weekly", "oral", (35, "mg"), WEEKLY))


def _30(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=760)
    authored = b.day(730)
    b.order(P["alendronate_70"], authored, instruction=ALN_WEEKLY, supply_days=90, repeats=3,
            quantity=qty(13, "tablet", "{tbl}"), validity=(authored, b.day(365)), rid="therapy-30-order-alendronate")
    _alendronate_fills(b, last_days=370, count=5, prescription="therapy-30-order-alendronate")


def _31(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=450)
    authored = b.day(425)
    b.order(P["alendronate_70"], authored, status="on-hold", instruction=ALN_WEEKLY, supply_days=90, repeats=3,
            quantity=qty(13, "tablet", "{tbl}"), validity=(authored, b.day(60)),
            status_reason={"coding": [{"system": MR_STATUS_REASON, "code": "surg",
                                       "display": "Patient scheduled for surgery"}],
                           "text": "Held for dental extractions"},
            rid="therapy-31-order-alendronate")
    _alendronate_fills(b, last_days=150, count=4, prescription="therapy-31-order-alendronate")


def _32(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    b.statement(P["alendronate_70"], "intended", start=b.day(-14), asserted=b.day(14), instruction=ALN_WEEKLY,
                note="Patient plans to start after her dentist visit")


def _33(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=260)
    b.order(P["alendronate_70"], b.day(240), instruction=ALN_WEEKLY, supply_days=84, repeats=3,
            quantity=qty(12, "tablet", "{tbl}"))
    b.statement(P["alendronate_70"], "not-taken", asserted=b.day(30), when=b.day(30),
                status_reason="Patient stopped taking it after two weeks: heartburn")


def _34(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    b.statement(P["alendronate_70"], "active", start=b.day(3 * 365), asserted=b.day(2 * 365), instruction=ALN_WEEKLY,
                note="Reported at intake: takes a weekly bone pill prescribed elsewhere")


def _35(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.3, hip=-2.0, neck=-2.1, dxa_days=30)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", round(6.6 * 365.25))
    b.statement(P["risedronate_35"], "completed", start=b.day(round(6.5 * 365.25)), end=b.day(365),
                asserted=b.day(30), instruction=dosage("35 mg by mouth weekly", "oral", (35, "mg"), WEEKLY),
                note="Outside records from her previous primary care physician")


ALN_MED = dict(form=("421026006", "Oral tablet"), strength=(70, "mg", 1, "tbl"), ingredient=("46041", "alendronate"))


def _36(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=200)
    med = b.medication(P["alendronate_70"], rid="med1", contained=True, **ALN_MED)
    b.order(None, b.day(180), instruction=ALN_WEEKLY, supply_days=84, repeats=3, quantity=qty(12, "tablet", "{tbl}"),
            reference={"reference": "#med1"}, contained=[med], validity=(b.day(180), b.day(-185)))


def _37(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=200)
    med = b.medication(P["alendronate_70"], rid="therapy-37-med-alendronate", **ALN_MED)
    ref = {"reference": b.full_url(med)}
    rx = b.order(None, b.day(180), instruction=ALN_WEEKLY, supply_days=84, repeats=3,
                 quantity=qty(12, "tablet", "{tbl}"), reference=ref, validity=(b.day(180), b.day(-185)))
    b.dispense(None, at(b.day(180), "17:00"), quantity=qty(12, "tablet", "{tbl}"), days_supply=84, first=True,
               reference=ref, prescription=rx["id"], instruction=ALN_WEEKLY)
    b.dispense(None, at(b.day(96), "17:00"), quantity=qty(12, "tablet", "{tbl}"), days_supply=84,
               reference=ref, prescription=rx["id"], instruction=ALN_WEEKLY)
    b.dispense(None, at(b.day(12), "17:00"), quantity=qty(12, "tablet", "{tbl}"), days_supply=84,
               reference=ref, prescription=rx["id"], instruction=ALN_WEEKLY)


def _38(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=200)
    b.order(None, b.day(180), instruction=ALN_WEEKLY, supply_days=84, repeats=3,
            reference={"reference": "Medication/therapy-38-formulary-10203"}, rid="therapy-38-order-unresolved")


def _39(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.9, hip=-2.4, dxa_days=30)
    b.exam(930, lumbar=-3.4, hip=-2.7)
    b.problem("M81.0", "Age-related osteoporosis without current pathological fracture", 930)
    _teriparatide_fills(b, last_days=152 + 28, count=27)


def _40(b: TherapyBuilder) -> None:
    b.base(lumbar=-3.1, hip=-2.6, dxa_days=400)
    b.problem("M80.08XA", "Age-related osteoporosis with current pathological fracture, vertebra(e), "
                          "initial encounter for fracture", 395)
    six_years = round(6 * 365.25)
    _teriparatide_fills(b, last_days=six_years + 28, count=15)
    _zoledronic(b, days_ago=six_years - 60)
    _teriparatide_fills(b, last_days=10, count=12, product="tymlos", every=30)


def _41(b: TherapyBuilder) -> None:
    b.base(lumbar=-3.1, hip=-2.5, dxa_days=300)
    _teriparatide_fills(b, last_days=60 + 28, count=8)


def _42(b: TherapyBuilder) -> None:
    b.base(lumbar=-3.3, hip=-2.6, dxa_days=400)
    for k in range(11, -1, -1):
        b.administration(P["evenity"], at(b.day(61 + 30 * k), "14:00"), dose=(210, "mg"), route_key="sc",
                         text="210 mg (two 105 mg/1.17 mL syringes) subcutaneously", site="Abdomen")


def _43(b: TherapyBuilder) -> None:
    """Each romosozumab dose three times: the order, the specialty-pharmacy dispense, the clinic injection."""
    b.base(lumbar=-3.3, hip=-2.6, dxa_days=200)
    for k in range(5, -1, -1):
        given = 20 + 30 * k
        rx = b.order(P["evenity"], b.day(given + 6), status="completed",
                     instruction=dosage("210 mg subcutaneously once (two syringes)", "sc", (210, "mg"),
                                        timing_text="Once"), community=False)
        b.dispense(P["evenity"], at(b.day(given + 4), "12:00"), quantity=qty(2, "syringe", "{syringe}"),
                   prescription=rx["id"], pharmacy="Specialty Pharmacy Services", first=k == 5)
        b.administration(P["evenity"], at(b.day(given), "14:00"), dose=(210, "mg"), route_key="sc",
                         text="210 mg (two 105 mg/1.17 mL syringes) subcutaneously", site="Abdomen")


PRED_7_5 = dosage("Take 1.5 tablets (7.5 mg total) by mouth daily", "oral", (7.5, "mg"), DAILY, "Daily")


def _44(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.2, hip=-1.9, dxa_days=30)
    b.problem("M06.9", "Rheumatoid arthritis, unspecified", 3 * 365)
    _prednisone_orders(b, first_days=180, renewals=6, instruction=PRED_7_5)


def _45(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.2, hip=-1.9, dxa_days=30)
    b.problem("J45.40", "Moderate persistent asthma, uncomplicated", 6 * 365)
    for days in (720, 360, 20):
        b.order(P["pulmicort"], b.day(days),
                instruction=dosage("Inhale 2 puffs (360 mcg) twice daily; rinse mouth after use", "inhaled",
                                   (2, "{puff}"), {"frequency": 2, "period": 1, "periodUnit": "d"}, "BID"),
                status="active" if days == 20 else "completed", supply_days=60, repeats=5)
    b.order(P["hydrocortisone_cream"], b.day(200),
            instruction=dosage("Apply a thin layer to affected areas twice daily", "topical",
                               timing={"frequency": 2, "period": 1, "periodUnit": "d"}, timing_text="BID"),
            supply_days=30, repeats=2)
    for days in (150, 120, 90, 60, 30):
        b.order(P["prednisolone_eye"], b.day(days), status="active" if days == 30 else "completed",
                instruction=dosage("Instill 1 drop into the left eye 4 times daily", "ophthalmic", (1, "{drop}"),
                                   {"frequency": 4, "period": 1, "periodUnit": "d"}, "QID"),
                supply_days=30, repeats=0, reason="Anterior uveitis, left eye")


def _46(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.2, hip=-1.9, dxa_days=30)
    b.problem("M35.3", "Polymyalgia rheumatica", 130)
    _prednisone_orders(b, first_days=120, renewals=4,
                       instruction={"sequence": 1, "text": "Take as directed per the rheumatology taper schedule",
                                    "route": route("oral")})


def _47(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.0, hip=-1.8, dxa_days=30)
    b.problem("M35.3", "Polymyalgia rheumatica", 25)
    authored = b.day(20)
    b.order(P["prednisone_5"], authored,
            instruction=dosage("Take 3 tablets (15 mg) by mouth daily", "oral", (15, "mg"), DAILY, "Daily"),
            supply_days=30, repeats=2, quantity=qty(90, "tablet", "{tbl}"), validity=(authored, b.day(20 - 365)),
            note="Planned course: at least 3 months, then taper")


def _48(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.2, dxa_days=30)
    b.problem("M31.6", "Other giant cell arteritis", 52)
    authored = b.day(49)
    b.order(P["prednisone_20"], authored,
            instruction=dosage("Take 2 tablets (40 mg) by mouth daily with breakfast", "oral", (40, "mg"), DAILY,
                               "Daily"),
            supply_days=30, repeats=2, quantity=qty(60, "tablet", "{tbl}"), validity=(authored, b.day(49 - 365)))
    for days in (49, 19):
        b.dispense(P["prednisone_20"], at(b.day(days), "18:30"), quantity=qty(60, "tablet", "{tbl}"),
                   days_supply=30, first=days == 49)


def _49(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.1, dxa_days=30, labs_days=20, egfr=25, creatinine=2.0)
    b.problem("N18.4", "Chronic kidney disease, stage 4 (severe)", 200)
    authored = b.day(3 * 365)
    b.order(P["alendronate_70"], authored, instruction=ALN_WEEKLY, supply_days=84, repeats=11,
            quantity=qty(12, "tablet", "{tbl}"), rid="therapy-49-order-alendronate")
    _alendronate_fills(b, last_days=30, count=13, every=84, days_supply=84, tablets=12,
                       prescription="therapy-49-order-alendronate")


def _50(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.7, hip=-2.2, dxa_days=30)
    undated = _zoledronic(b, days_ago=40, rid="therapy-50-admin-undated")
    del undated["effectivePeriod"]
    b.statement(Product(None, "", "bone strengthening injection"), "active", asserted=b.day(10),
                rid="therapy-50-statement-unnamed", note="Patient says she gets a bone strengthening injection")
    b.order(P["alendronate_70"], b.day(60), status="bogus", instruction=ALN_WEEKLY, rid="therapy-50-order-bogus-status")


def _51(b: TherapyBuilder) -> None:
    b.base(lumbar=-2.6, hip=-2.2, dxa_days=300, labs_days=40)
    for months in (10, 7, 4, 1):
        b.administration(P["boniva_iv"], at(b.ago(months=months), "11:15"), dose=(3, "mg"), route_key="iv",
                         text="3 mg intravenously over 15-30 seconds")


NOT_ANY_DRUG = [("offers", d) for d in DRUGS]
# a treatment card calling a patient untreated (its summary), when she was treated and is on a holiday
NOT_UNTREATED = [("indicator", level, "untreated") for level in ("info", "warning", "critical")]
NOT_NEW_ANTIRESORPTIVE = [("offers", "alendronate"), ("offers", "zoledronic_acid")]

CASES: list[TherapyCase] = [
    TherapyCase("therapy-01-denosumab-on-schedule",
                "woman 74, Prolia given in clinic every 6 months for 3 years (completed administrations), "
                "last dose 2 months ago, lumbar T −2.6",
                _01, must=[("says", "on denosumab")],
                must_not=NOT_NEW_ANTIRESORPTIVE + [("offers", "denosumab"), ("says", "course ended"),
                                                   ("indicator", "warning", "denosumab"),
                                                   ("indicator", "critical", "denosumab")], age=74),
    TherapyCase("therapy-02-denosumab-due",
                "woman 74, Prolia every 6 months for 3 years, last dose 6.5 months ago: the next dose is due",
                _02, must=[("indicator", "warning", "denosumab"), ("offers", "denosumab")],
                must_not=[("indicator", "critical", "denosumab")], age=74),
    TherapyCase("therapy-03-denosumab-overdue",
                "woman 74, Prolia every 6 months for 3 years, last dose 8 months ago: overdue (rebound)",
                _03, must=[("indicator", "critical", "denosumab"), ("says", "overdue"), ("offers", "denosumab")],
                age=74),
    TherapyCase("therapy-04-denosumab-stopped",
                "woman 73, Prolia for 3 years, last dose 3 months ago, then a MedicationStatement 'stopped' "
                "(patient declined further injections), nothing since",
                _04, must=[("indicator", "warning", "denosumab")],
                must_not=[("says", "on denosumab"), ("indicator", "critical", "denosumab")], age=73),
    TherapyCase("therapy-05-denosumab-then-zoledronic-at-6-months",
                "woman 75, Prolia for 3 years, then zoledronic acid 5 mg 6 months after the last dose "
                "(ECTS transition)",
                _05, must=[("says", "on zoledronic acid")],
                must_not=[("indicator", "warning", "denosumab"), ("indicator", "critical", "denosumab")], age=75),
    TherapyCase("therapy-06-denosumab-then-zoledronic-at-3-months",
                "woman 75, Prolia for 3 years, zoledronic acid given only 3 months after the last dose: "
                "check bone turnover",
                _06, must=[("says", "CTX")], must_not=[("indicator", "critical", "denosumab")], age=75),
    TherapyCase("therapy-07-denosumab-then-alendronate",
                "woman 72, Prolia for 3 years, last dose 8 months ago; weekly alendronate ordered and filled "
                "2 months ago, covering her now",
                _07, must=[("says", "on alendronate")],
                must_not=[("indicator", "warning", "denosumab"), ("indicator", "critical", "denosumab"),
                          ("offers", "alendronate")]),
    TherapyCase("therapy-08-denosumab-then-teriparatide",
                "woman 72, Prolia last given 8 months ago, a vertebral fracture 7 weeks ago, teriparatide "
                "pens started 5 weeks ago: an anabolic does not cover the denosumab rebound",
                _08, must=[("indicator", "critical", "denosumab")], must_not=[("says", "on denosumab")]),
    TherapyCase("therapy-09-denosumab-overdue-bisphosphonates-blocked",
                "woman 76 with CKD stage 4 (eGFR 25), Prolia last given 7.5 months ago: every bisphosphonate "
                "is contraindicated, so resume denosumab (or refer)",
                _09, must=[("indicator", "critical", "denosumab"), ("offers", "denosumab")],
                must_not=[("offers", "alendronate"), ("offers", "zoledronic_acid"), ("offers", "risedronate"),
                          ("offers", "ibandronate")], age=76),
    TherapyCase("therapy-10-denosumab-dispensed-per-dose",
                "woman 71, Prolia from a specialty pharmacy, one completed dispense per dose every 6 months "
                "(one with whenPrepared only), last 2 months ago; a declined fill beside it",
                _10, must=[("says", "on denosumab")],
                must_not=[("offers", "denosumab"), ("indicator", "warning", "denosumab"),
                          ("indicator", "critical", "denosumab")], age=71),
    TherapyCase("therapy-11-zoledronic-3-infusions-holiday",
                "woman 70, zoledronic acid 5 mg infused yearly × 3 (last 6 months ago), now hip T −2.0, "
                "femoral neck −2.2, no fracture: a drug holiday is due",
                _11, must=[("says", "drug holiday")], must_not=NOT_ANY_DRUG, age=70),
    TherapyCase("therapy-12-zoledronic-completed-order",
                "woman 72, one completed zoledronic acid order (intent order) 6 months ago and no "
                "administration record: one dose on the order date",
                _12, must=[("says", "on zoledronic acid")],
                must_not=[("offers", "alendronate"), ("offers", "zoledronic_acid"),
                          ("says", "no osteoporosis therapy")]),
    TherapyCase("therapy-13-zoledronic-infusion-in-progress",
                "woman 72, her first zoledronic acid infusion is running now (administration in-progress)",
                _13, must=[("says", "on zoledronic acid")], must_not=NOT_NEW_ANTIRESORPTIVE),
    TherapyCase("therapy-14-zoledronic-partial-infusion",
                "woman 72, zoledronic acid infusion stopped after 12 minutes 2 months ago (administration "
                "stopped): counted, but the dose is uncertain",
                _14, must=[("says", "dose uncertain")], must_not=NOT_NEW_ANTIRESORPTIVE),
    TherapyCase("therapy-15-zoledronic-not-given",
                "woman 72, untreated, T −2.7: zoledronic acid administrations not-done, entered-in-error, "
                "on-hold and unknown; none is a dose",
                _15, must=[("not_used", "MedicationAdministration/therapy-15-admin-on-hold"),
                           ("not_used", "MedicationAdministration/therapy-15-admin-unknown"),
                           ("offers", "zoledronic_acid")],
                must_not=[("says", "on zoledronic acid"), ("says", "dose uncertain")]),
    TherapyCase("therapy-16-zoledronic-due-no-recent-creatinine",
                "woman 73, zoledronic acid yearly, last infusion 12 months ago (next dose due), last "
                "creatinine 3 months ago: a creatinine is needed before the dose",
                _16, must=[("says", "creatinine")], must_not=[("says", "on a drug holiday")], age=73),
    TherapyCase("therapy-17-alendronate-fills-6-years-holiday",
                "woman 70, alendronate filled every 90 days (daysSupply 90) for 6 years, last fill 30 days "
                "ago, hip T −2.0, femoral neck −1.8, no fracture: a drug holiday",
                _17, must=[("says", "drug holiday")], must_not=NOT_ANY_DRUG, age=70),
    TherapyCase("therapy-18-alendronate-fills-in-tablets",
                "woman 69, alendronate 70 mg fills of 4 tablets every 28 days, no daysSupply, last 20 days "
                "ago: 4 weekly tablets are 28 days",
                _18, must=[("says", "on alendronate")],
                must_not=[("says", "supply assumed"), ("offers", "alendronate")], age=69),
    TherapyCase("therapy-19-alendronate-supply-assumed",
                "woman 69, alendronate filled monthly with neither daysSupply nor a usable quantity, last "
                "fill 10 days ago: 30 days assumed per fill",
                _19, must=[("says", "supply assumed"), ("says", "on alendronate")],
                must_not=[("offers", "alendronate")], age=69),
    TherapyCase("therapy-20-alendronate-2014-2020-holiday",
                "woman 78, alendronate fills for 6 years ending 6.5 years ago (2014-2020 for late 2026), "
                "hip T −2.1 at the stop, no fracture: a holiday past 4 years, reassess now",
                _20, must=[("says", "drug holiday"), ("indicator", "warning", "reassess")],
                must_not=[("offers", "alendronate"), *NOT_UNTREATED], age=78),
    TherapyCase("therapy-21-alendronate-holiday-1-year",
                "woman 73, alendronate fills for 5 years, the last 15 months ago (supply ended a year ago), "
                "hip T −1.9, femoral neck −2.1 at the stop: on a drug holiday, reassess with DXA at 2 years",
                _21, must=[("indicator", "info", "drug holiday")],
                must_not=[("indicator", "warning", "reassess"), ("offers", "alendronate"), *NOT_UNTREATED],
                age=73),
    TherapyCase("therapy-22-alendronate-holiday-hip-falls",
                "woman 74, alendronate holiday since 2.5 years; new DXA hip T −2.6: reassess now",
                _22, must=[("indicator", "warning", "reassess")], must_not=[*NOT_UNTREATED], age=74),
    TherapyCase("therapy-23-alendronate-holiday-new-fracture",
                "woman 73 on an alendronate holiday since 15 months, new osteoporotic vertebral fracture "
                "2 months ago: reassess now (not a fracture on therapy)",
                _23, must=[("indicator", "warning", "reassess")],
                must_not=[("says", "treatment failure"), *NOT_UNTREATED], age=73),
    TherapyCase("therapy-24-alendronate-2-years-previously-treated",
                "woman 71, alendronate for 2 years ending 3 years ago (order stopped for dyspepsia, fills), "
                "osteoporosis T −2.8",
                _24, must=[("says", "previously treated")],
                must_not=[("says", "on alendronate"), ("says", "no osteoporosis therapy recorded")], age=71),
    TherapyCase("therapy-25-alendronate-completed-order-ended",
                "woman 72, one completed alendronate order 14 months ago, 90 days × (1 + 3 repeats), valid "
                "12 months: exposure ended 2 months ago",
                _25, must=[("says", "previously treated")], must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-26-alendronate-completed-order-90-days",
                "woman 72, alendronate e-prescribed 45 days ago (order completed, no supply duration): "
                "covered for 90 days by convention",
                _26, must=[("says", "on alendronate")], must_not=[("offers", "alendronate")]),
    TherapyCase("therapy-27-alendronate-plan-and-proposal",
                "woman 72, untreated, T −2.7: alendronate as an active order of intent plan and one of "
                "intent proposal, neither an order",
                _27, must=[("offers", "alendronate")], must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-28-alendronate-do-not-perform",
                "woman 72, T −2.7, an alendronate order with doNotPerform true (severe oesophagitis on it "
                "before)",
                _28, must_not=[("says", "on alendronate"), ("offers", "alendronate")]),
    TherapyCase("therapy-29-orders-that-are-not-therapy",
                "woman 72, T −2.7: zoledronic acid order cancelled, Prolia order draft, alendronate order "
                "entered-in-error, risedronate order of unknown status",
                _29, must=[("offers", "alendronate"), ("offers", "zoledronic_acid")],
                must_not=[("says", "on zoledronic acid"), ("says", "on denosumab"), ("says", "on alendronate"),
                          ("says", "on risedronate")]),
    TherapyCase("therapy-30-alendronate-no-supply-since",
                "woman 72, active alendronate order from 2 years ago, 90-day fills until 370 days ago and "
                "none since: ordered, no supply since",
                _30, must=[("says", "no supply since")], must_not=[("offers", "alendronate")]),
    TherapyCase("therapy-31-alendronate-on-hold",
                "woman 72, alendronate order on hold (dental extractions), last fill 5 months ago",
                _31, must=[("says", "on hold since")], must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-32-alendronate-statement-intended",
                "woman 72, untreated, T −2.7: a MedicationStatement 'intended' for alendronate (a plan)",
                _32, must=[("offers", "alendronate")], must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-33-alendronate-not-taken-after-order",
                "woman 72, active alendronate order 8 months ago, then a MedicationStatement 'not-taken' "
                "1 month ago (heartburn)",
                _33, must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-34-alendronate-statement-unverified",
                "woman 72, only a patient-reported 'active' alendronate MedicationStatement asserted 2 years "
                "ago, nothing behind it",
                _34, must=[("says", "unverified")]),
    TherapyCase("therapy-35-risedronate-statement-completed-holiday",
                "woman 74, risedronate for 5.5 years ending a year ago (MedicationStatement completed from "
                "outside records), hip T −2.0, femoral neck −2.1: on a drug holiday",
                _35, must=[("says", "drug holiday")],
                must_not=[("offers", "risedronate"), ("offers", "alendronate"), *NOT_UNTREATED], age=74),
    TherapyCase("therapy-36-alendronate-contained-medication",
                "woman 72, active alendronate order naming its drug by medicationReference to a contained "
                "Medication",
                _36, must=[("says", "on alendronate")], must_not=[("offers", "alendronate")]),
    TherapyCase("therapy-37-alendronate-bundle-medication",
                "woman 72, alendronate order and fills naming a Medication in the Bundle by its urn:uuid "
                "fullUrl",
                _37, must=[("says", "on alendronate")], must_not=[("offers", "alendronate")]),
    TherapyCase("therapy-38-medication-not-found",
                "woman 72, an active order whose medicationReference names a Medication that is not in the "
                "Bundle (and no fhirServer)",
                _38, must=[("not_used", "MedicationRequest/therapy-38-order-unresolved")],
                must_not=[("says", "on alendronate")]),
    TherapyCase("therapy-39-teriparatide-24-months-no-follow-on",
                "woman 73, teriparatide pens filled monthly (1 pen = 28 doses) for 25 months, ended 5 months "
                "ago, no antiresorptive since",
                _39, must=[("indicator", "warning", "start an antiresorptive now"), ("says", "24 months")],
                must_not=[("says", "on teriparatide")], age=73),
    TherapyCase("therapy-40-pth-analogues-lifetime",
                "woman 75, teriparatide for 14 months ending 6 years ago (then zoledronic acid), abaloparatide "
                "pens for the last 11 months: over 24 months of PTH analogues in a lifetime",
                _40, must=[("says", "24 months"), ("says", "on abaloparatide")],
                must_not=[("indicator", "warning", "start an antiresorptive now")], age=75),
    TherapyCase("therapy-41-teriparatide-short-course-ended",
                "woman 70, teriparatide for 8 months, stopped 2 months ago (cost), no antiresorptive",
                _41, must=[("indicator", "warning", "start an antiresorptive now")], age=70),
    TherapyCase("therapy-42-romosozumab-course-complete",
                "woman 71, romosozumab 210 mg given monthly × 12 (completed administrations), the course "
                "ended a month ago, nothing since",
                _42, must=[("indicator", "warning", "start an antiresorptive now"), ("says", "course complete")],
                must_not=[("offers", "romosozumab")], age=71),
    TherapyCase("therapy-43-romosozumab-order-dispense-administration",
                "woman 71, 6 monthly romosozumab doses each recorded three times (order, dispense, "
                "administration within a week): 6 doses, not 18",
                _43, must=[("says", "on romosozumab")],
                must_not=[("indicator", "warning", "start an antiresorptive now"), ("says", "course complete")],
                age=71),
    TherapyCase("therapy-44-prednisone-7-5-mg-6-months",
                "woman 66 with rheumatoid arthritis, oral prednisone 7.5 mg daily renewed every 30 days for "
                "6 months, T −2.2",
                _44, must=[("says", "glucocorticoid")], age=66),
    TherapyCase("therapy-45-local-corticosteroids-only",
                "woman 66, T −2.2, inhaled budesonide, hydrocortisone cream and prednisolone eye drops for "
                "months, no systemic glucocorticoid",
                _45, must_not=[("says", "glucocorticoid")], age=66),
    TherapyCase("therapy-46-prednisone-dose-unreadable",
                "woman 67 with polymyalgia rheumatica, oral prednisone 'as directed' (no structured dose) "
                "renewed monthly for 4 months",
                _46, must=[("says", "glucocorticoid"), ("says", "dose unknown")], age=67),
    TherapyCase("therapy-47-prednisone-planned-3-months",
                "woman 68 with polymyalgia rheumatica, prednisone 15 mg daily started 20 days ago, ordered "
                "for 90 days (30 days + 2 repeats)",
                _47, must=[("says", "glucocorticoid")], age=68),
    TherapyCase("therapy-48-prednisone-40-mg",
                "woman 70 with giant cell arteritis, prednisone 40 mg daily for 7 weeks, T −2.6: very high "
                "risk from the dose",
                _48, must=[("says", "glucocorticoid"), ("says", "very high")], age=70),
    TherapyCase("therapy-49-alendronate-egfr-25",
                "woman 77 taking alendronate (active order, fills every 84 days), eGFR now 25: stop or hold it",
                _49, must=[("indicator", "warning", "alendronate")],
                must_not=[("says", "continue alendronate"), ("offers", "alendronate"), ("offers", "zoledronic_acid")],
                age=77),
    TherapyCase("therapy-50-unreadable-medication-records",
                "woman 72, T −2.7: a zoledronic acid administration without a date, a 'bone strengthening "
                "injection' statement, an alendronate order of status 'bogus'",
                _50, must=[("not_used", "MedicationAdministration/therapy-50-admin-undated"),
                           ("not_used", "MedicationStatement/therapy-50-statement-unnamed"),
                           ("not_used", "MedicationRequest/therapy-50-order-bogus-status")],
                must_not=[("says", "on zoledronic acid"), ("says", "on alendronate")]),
    TherapyCase("therapy-51-ibandronate-iv-every-3-months",
                "woman 72, ibandronate 3 mg IV given every 3 months (completed administrations), last "
                "1 month ago",
                _51, must=[("says", "on ibandronate")],
                must_not=[("offers", "ibandronate"), ("offers", "alendronate"), ("offers", "zoledronic_acid")]),
]

BY_ID = {c.id: c for c in CASES}


def build(case_id: str, as_of: date | None = None) -> dict[str, Any]:
    """The transaction Bundle of one case, its dates relative to ``as_of`` (default today)."""
    case = BY_ID[case_id]
    b = TherapyBuilder(case, as_of or date.today())
    case.build(b)
    return b.bundle()


def write_all(out: Path, as_of: date) -> list[Path]:
    """Write every case's Bundle and the manifest; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    manifest: dict[str, Any] = {"as_of": as_of.isoformat(), "cases": []}
    for case in CASES:
        name = f"{case.id}.json"
        (out / name).write_text(json.dumps(build(case.id, as_of), indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
        written.append(out / name)
        manifest["cases"].append({"id": case.id, "description": case.description, "bundle": name,
                                  "patient": f"therapy-{case.number:02d}",
                                  "must": [list(c) for c in case.must], "must_not": [list(c) for c in case.must_not]})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(out / "manifest.json")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description="write the therapy sample bundles (clinical rules §6.1)")
    p.add_argument("--as-of", default=date.today().isoformat())
    p.add_argument("--out", default=str(Path(__file__).parent / "therapy"))
    a = p.parse_args()
    out = Path(a.out)
    written = write_all(out, date.fromisoformat(a.as_of))
    print(f"wrote {len(written) - 1} medication histories as of {a.as_of}: FHIR Bundles in {out}, "
          f"with {out / 'manifest.json'} (what a clinician expects of each)")


if __name__ == "__main__":
    main()
