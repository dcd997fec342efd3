"""The example patients of the clinical scenarios, as FHIR R4 transaction Bundles.

Dates in the scenarios are relative to the day of the request ("two weeks ago"), so every
bundle is built for an ``as_of`` date. The files in ``bundles/`` and ``requests/`` were written
by ``python -m fhir_samples.scenarios`` (``make samples``) for the date in ``manifest.json``;
tests build fresh ones for today.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

DXA = {
    "38267-1": "DXA Lumbar spine [T-score] Bone density",
    "38264-8": "DXA Hip [T-score] Bone density",
    "38263-0": "DXA Femur [T-score] Bone density",
    "38265-5": "DXA [T-score] Bone density",
    "85394-5": "DXA Lumbar spine [Z-score] Bone density",
    "80933-5": "DXA Hip [Z-score] Bone density",
}
LABS = {  # key: (loinc, display, ucum unit)
    "calcium": ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL"),
    "phosphate": ("2777-1", "Phosphate [Mass/volume] in Serum or Plasma", "mg/dL"),
    "vitamin_d": ("62292-8", "25-Hydroxyvitamin D2+D3 [Mass/volume] in Serum or Plasma", "ng/mL"),
    "pth": ("2731-8", "Parathyrin.intact [Mass/volume] in Serum or Plasma", "pg/mL"),
    "creatinine": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL"),
    "egfr": ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] by CKD-EPI 2021",
             "mL/min/{1.73_m2}"),
    "tsh": ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L"),
}
RECENT_LABS = {"calcium": 9.4, "phosphate": 3.5, "vitamin_d": 34, "pth": 40, "creatinine": 0.8, "egfr": 68,
               "tsh": 1.8}


@dataclass
class Scenario:
    number: int
    slug: str
    title: str
    sex: str
    age: int
    build: Callable[["Builder"], None]


class Builder:
    def __init__(self, scenario: Scenario, as_of: date):
        self.s = scenario
        self.as_of = as_of
        self.pid = f"bone-{scenario.number:02d}"
        self.resources: list[dict[str, Any]] = []
        self._n = 0

    def _id(self, kind: str) -> str:
        self._n += 1
        return f"{self.pid}-{kind}-{self._n}"

    def ago(self, days: int = 0, months: float = 0, years: float = 0) -> str:
        return (self.as_of - timedelta(days=int(days + months * 30.4375 + years * 365.25))).isoformat()

    def patient(self) -> None:
        birth = self.as_of - timedelta(days=int(self.s.age * 365.25 + 120))
        self.resources.append({
            "resourceType": "Patient", "id": self.pid,
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.99999.1", "value": self.pid}],
            "name": [{"family": f"Scenario{self.s.number:02d}", "given": ["Example"]}],
            "gender": self.s.sex, "birthDate": birth.isoformat(),
        })

    def dxa(self, code: str, value: float, when: str, body_site: dict[str, Any] | None = None) -> None:
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id("dxa"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "imaging", "display": "Imaging"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": DXA[code]}], "text": DXA[code]},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "{T-score}" if "T-score" in DXA[code] else "{Z-score}",
                              "system": UCUM, "code": "{T-score}" if "T-score" in DXA[code] else "{Z-score}"},
        }
        if body_site:
            obs["bodySite"] = body_site
        self.resources.append(obs)

    def lab(self, key: str, value: float, when: str) -> None:
        code, display, unit = LABS[key]
        self.resources.append({
            "resourceType": "Observation", "id": self._id("lab"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory", "display": "Laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        })

    def labs(self, when: str, **overrides: float | None) -> None:
        for key, value in {**RECENT_LABS, **overrides}.items():
            if value is not None:
                self.lab(key, value, when)

    def condition(self, code: str, display: str, onset: str, system: str = ICD, active: bool = True) -> None:
        self.resources.append({
            "resourceType": "Condition", "id": self._id("cond"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active" if active else "resolved"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{self.pid}"},
            "onsetDateTime": onset,
        })

    def med_request(self, rxcui: str, display: str, start: str, status: str = "active", dosage: str = "") -> None:
        mr: dict[str, Any] = {
            "resourceType": "MedicationRequest", "id": self._id("medreq"), "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": display}],
                                          "text": display},
            "subject": {"reference": f"Patient/{self.pid}"},
            "authoredOn": start,
        }
        if dosage:
            mr["dosageInstruction"] = [{"text": dosage}]
        self.resources.append(mr)

    def med_statement(self, rxcui: str, display: str, when: str, status: str = "completed") -> None:
        self.resources.append({
            "resourceType": "MedicationStatement", "id": self._id("medstmt"), "status": status,
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": display}],
                                          "text": display},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": when,
        })

    def bundle(self) -> dict[str, Any]:
        return {
            "resourceType": "Bundle", "type": "transaction",
            "meta": {"tag": [{"system": "https://bone-health-cds.org/sample-as-of", "code": self.as_of.isoformat()}]},
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                       "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in self.resources],
        }


def _s1(b: Builder, labs: bool = True) -> None:
    b.patient()
    b.dxa("38267-1", -4.1, b.ago(days=14))
    b.dxa("38264-8", -2.9, b.ago(days=14))
    if labs:
        b.labs(b.ago(days=30))


def _s2(b: Builder) -> None:
    _s1(b)
    b.condition("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction", b.ago(months=5))


def _s3(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.7, b.ago(days=20))
    b.dxa("38264-8", -2.2, b.ago(days=20))
    b.labs(b.ago(days=25), egfr=25, calcium=9.0, creatinine=2.0)


def _s4(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.8, b.ago(days=10))
    b.dxa("85394-5", -1.2, b.ago(days=10))
    b.labs(b.ago(days=20))


def _s5(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.6, b.ago(months=9))
    b.med_request("993452", "denosumab 60 MG/ML Prefilled Syringe [Prolia]", b.ago(years=3),
                  dosage="60 mg subcutaneously every 6 months")
    for months in (31.5, 25.5, 19.5, 13.5, 7.5):
        b.med_statement("993452", "denosumab 60 MG/ML Prefilled Syringe [Prolia]", b.ago(months=months))
    b.labs(b.ago(days=40))


def _s6(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.6, b.ago(years=6, days=10))
    b.dxa("38267-1", -2.0, b.ago(days=15))
    b.dxa("38264-8", -1.7, b.ago(days=15))
    b.condition("M81.0", "Age-related osteoporosis without current pathological fracture", b.ago(years=6))
    b.med_request("904431", "alendronate sodium 70 MG Oral Tablet", b.ago(years=6),
                  dosage="70 mg by mouth once weekly")
    b.labs(b.ago(days=20))


def _s7(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.9, b.ago(days=12))
    b.labs(b.ago(days=15), vitamin_d=12, calcium=8.3, pth=95)


def _s8(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -3.2, b.ago(days=12))
    b.labs(b.ago(days=15), calcium=10.9, pth=88)


def _s9(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -2.6, b.ago(days=12))
    b.condition("K22.0", "Achalasia of cardia", b.ago(years=4))
    b.labs(b.ago(days=15))


def _s10(b: Builder) -> None:
    b.patient()
    b.dxa("38265-5", -3.1, b.ago(days=12))
    b.labs(b.ago(days=15))


def _s11(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -1.8, b.ago(days=12))
    b.dxa("38264-8", -1.2, b.ago(days=12))
    b.labs(b.ago(days=15))


def _s12(b: Builder) -> None:
    b.patient()
    b.dxa("38267-1", -0.5, b.ago(days=12))
    b.dxa("38264-8", 0.2, b.ago(days=12))
    b.labs(b.ago(days=15))


def _s13(b: Builder) -> None:
    _s1(b, labs=False)
    b.labs(b.ago(months=18))


SCENARIOS = [
    Scenario(1, "very-high-risk", "woman 71, lumbar spine T −4.1, total hip T −2.9, no therapy", "female", 71, _s1),
    Scenario(2, "recent-mi", "as 1, plus a myocardial infarction 5 months ago", "female", 71, _s2),
    Scenario(3, "ckd-egfr-25", "woman 68, T −2.7, eGFR 25, calcium 9.0", "female", 68, _s3),
    Scenario(4, "premenopausal-z-score", "woman 45, lumbar spine T −2.8 and Z −1.2", "female", 45, _s4),
    Scenario(5, "denosumab-overdue", "woman 74 on denosumab, last dose 7.5 months ago, T −2.6", "female", 74, _s5),
    Scenario(6, "alendronate-6-years", "woman 69, alendronate for 6 years, lowest T −2.0", "female", 69, _s6),
    Scenario(7, "vitamin-d-deficient", "woman 66, T −2.9, 25(OH)D 12, calcium 8.3, PTH 95", "female", 66, _s7),
    Scenario(8, "hyperparathyroidism", "woman 62, T −3.2, calcium 10.9, PTH 88", "female", 62, _s8),
    Scenario(9, "achalasia", "woman 70, T −2.6, achalasia", "female", 70, _s9),
    Scenario(10, "site-not-stated", "woman 67, one T-score −3.1 coded 38265-5 with no body site", "female", 67, _s10),
    Scenario(11, "low-bone-mass-no-frax", "woman 66, T −1.8, no FRAX", "female", 66, _s11),
    Scenario(12, "normal", "woman 60, all T-scores above −1.0", "female", 60, _s12),
    Scenario(13, "no-recent-labs", "woman 71 as 1, no labs in the last 12 months", "female", 71, _s13),
]


def build(number: int, as_of: date | None = None) -> dict[str, Any]:
    s = SCENARIOS[number - 1]
    b = Builder(s, as_of or date.today())
    s.build(b)
    return b.bundle()


def file_stem(s: Scenario) -> str:
    return f"{s.number:02d}-{s.slug}"


def hook_request(number: int, bundle: dict) -> dict:
    """The ready patient-view request of a scenario: every prefetch key filled from its bundle."""
    from cds_service.cli import bundle_to_request
    from cds_service.knowledge import load_knowledge
    from cds_service.services.patient_view import prefetch_templates

    req = bundle_to_request(bundle, None, prefetch_templates(load_knowledge()), "patient-view")
    req["hookInstance"] = f"00000000-0000-4000-8000-{number:012d}"
    return req


def write_all(out: Path, as_of: date) -> list[Path]:
    """Write every scenario's bundle and hook request and the manifest; return the files written."""
    (out / "bundles").mkdir(parents=True, exist_ok=True)
    (out / "requests").mkdir(parents=True, exist_ok=True)
    manifest = {"as_of": as_of.isoformat(), "scenarios": []}
    written: list[Path] = []
    for s in SCENARIOS:
        bundle = build(s.number, as_of)
        stem = file_stem(s)
        for path, doc in ((out / "bundles" / f"{stem}.json", bundle),
                          (out / "requests" / f"{stem}.hook.json", hook_request(s.number, bundle))):
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            written.append(path)
        manifest["scenarios"].append({"number": s.number, "title": s.title, "patient": f"bone-{s.number:02d}",
                                      "bundle": f"bundles/{stem}.json", "request": f"requests/{stem}.hook.json"})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    written.append(out / "manifest.json")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description="write the sample bundles and hook requests")
    p.add_argument("--as-of", default=date.today().isoformat())
    p.add_argument("--out", default=str(Path(__file__).parent))
    a = p.parse_args()
    out = Path(a.out)
    written = write_all(out, date.fromisoformat(a.as_of))
    bundles = sum(1 for p in written if p.parent.name == "bundles")
    print(f"wrote {bundles} example patients as of {a.as_of}: FHIR Bundles in {out / 'bundles'}, "
          f"ready patient-view hook requests in {out / 'requests'}, and {out / 'manifest.json'}")


if __name__ == "__main__":
    main()
