"""Every example patient of the project's clinical scenarios (fhir_samples/scenarios.py): what it must and must not get, through the HTTP API
and through `cds-service evaluate`, with the same answer."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import hook_cards
from fhir_samples import scenarios, therapy

DRUGS = ("romosozumab", "teriparatide", "abaloparatide", "alendronate", "risedronate", "ibandronate",
         "zoledronic acid", "denosumab")


def ordered_drugs(cards: list[dict]) -> set[str]:
    """Generic names of every MedicationRequest a card offers to create (osteoporosis drugs only)."""
    out = set()
    for c in cards:
        for s in c.get("suggestions", []):
            for a in s.get("actions", []):
                r = a.get("resource") or {}
                if a["type"] == "create" and r.get("resourceType") == "MedicationRequest":
                    name = r["medicationCodeableConcept"]["text"].lower()
                    out |= {d for d in DRUGS if d in name}
    return out


def recommended(cards: list[dict]) -> set[str]:
    out = set()
    for c in cards:
        for s in c.get("suggestions", []):
            if s.get("isRecommended"):
                for a in s.get("actions", []):
                    out.add(a["resource"]["medicationCodeableConcept"]["text"].lower())
    return out


def service_requests(cards: list[dict]) -> set[str]:
    return {a["resource"]["code"]["coding"][0]["code"] for c in cards for s in c.get("suggestions", [])
            for a in s.get("actions", []) if a.get("resource", {}).get("resourceType") == "ServiceRequest"}


def topic(cards: list[dict], code: str) -> list[dict]:
    return [c for c in cards if c["source"]["topic"]["code"] == code]


def text(cards: list[dict]) -> str:
    return "\n".join(c["summary"] + "\n" + c.get("detail", "") for c in cards)


@pytest.fixture()
def run(client, scenario_request, response_validator):
    def call(number: int) -> list[dict]:
        return hook_cards(client, response_validator, scenario_request(number))
    return call


def test_1_very_high_risk(run):
    cards = run(1)
    (interp,) = topic(cards, "bmd-interpretation")
    assert interp["indicator"] == "critical"
    assert "−4.1" in interp["summary"] and "lumbar spine" in interp["summary"]
    assert "very high" in interp["summary"].lower()
    (treat,) = topic(cards, "treatment")
    assert treat["indicator"] == "critical"
    assert treat["selectionBehavior"] == "at-most-one"
    assert ordered_drugs(cards) == {"romosozumab", "teriparatide", "abaloparatide", "zoledronic acid", "denosumab"}
    assert len(recommended(cards)) == 1
    assert "ACP" in treat["detail"] and "disagree" in treat["detail"]
    assert "83014-1" in service_requests(cards)
    assert not service_requests(cards) & {"17861-6", "2777-1", "62292-8", "2731-8", "2160-0"}, "she has those labs"
    (support,) = topic(cards, "supportive-care")
    assert "Calcium" in support["detail"] and "Vitamin D" in support["detail"]
    for s in treat["suggestions"]:
        (action,) = s["actions"]
        mr = action["resource"]
        assert mr["status"] == "draft" and mr["intent"] in ("proposal", "order")
        assert mr["subject"]["reference"] == "Patient/bone-01"
        assert mr["medicationCodeableConcept"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
        assert mr["dosageInstruction"][0]["text"]


def test_2_recent_mi_blocks_romosozumab(run):
    cards = run(2)
    drugs = ordered_drugs(cards)
    assert "romosozumab" not in drugs
    assert {"teriparatide", "abaloparatide"} <= drugs
    treat = topic(cards, "treatment")[0]
    assert "romosozumab" in treat["detail"] and "myocardial infarction" in treat["detail"].lower()


def test_3_ckd_gets_denosumab_with_boxed_warning(run):
    cards = run(3)
    assert ordered_drugs(cards) == {"denosumab"}
    all_text = text(cards).lower()
    assert "hypocalcaemia" in all_text
    assert "ckd-mineral" in all_text


def test_4_premenopausal_by_z_score(run):
    cards = run(4)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "within the expected range for age" in interp["summary"]
    assert "Z-score −1.2" in interp["summary"]
    assert not ordered_drugs(cards)
    assert not topic(cards, "treatment")
    assert "osteoporosis" not in interp["summary"].lower()
    assert "**Osteoporosis**" not in interp["detail"]


def test_5_denosumab_overdue_is_critical(run):
    cards = run(5)
    mgmt = topic(cards, "therapy-management")
    overdue = [c for c in mgmt if "overdue" in c["summary"].lower()]
    assert overdue and overdue[0]["indicator"] == "critical"
    detail = overdue[0]["detail"].lower()
    assert "rebound" in detail and "bisphosphonate" in detail
    assert "do not simply stop" in detail
    # rules §6.1: "continue denosumab" comes with the draft order for the dose that is due, and only there
    offers = [(s["label"], c["summary"]) for c in cards for s in c.get("suggestions", [])
              for a in s.get("actions", [])
              if "denosumab" in json.dumps(a.get("resource", {}).get("medicationCodeableConcept", {})).lower()]
    assert offers and all(label.startswith("Continue denosumab") for label, _ in offers), offers


def test_6_drug_holiday(run):
    cards = run(6)
    mgmt = topic(cards, "therapy-management")
    assert any("drug holiday" in c["summary"].lower() for c in mgmt)
    assert any("2-4 years" in c["detail"] for c in mgmt)
    assert not ordered_drugs(cards) & {"alendronate", "risedronate", "ibandronate", "zoledronic acid"}


def test_7_vitamin_d_repletion_first(run):
    cards = run(7)
    assert not ordered_drugs(cards) & {"zoledronic acid", "denosumab"}
    safety = topic(cards, "safety")
    vit = [c for c in safety if "vitamin d" in c["summary"].lower()]
    assert vit
    chole = [a["resource"] for c in vit for s in c.get("suggestions", []) for a in s["actions"]]
    assert any("cholecalciferol" in r["medicationCodeableConcept"]["text"] for r in chole)
    all_text = text(cards).lower()
    assert "osteomalacia" in all_text and "secondary hyperparathyroidism" in all_text


def test_8_primary_hyperparathyroidism_flagged(run):
    cards = run(8)
    assert not ordered_drugs(cards) & {"teriparatide", "abaloparatide"}
    assert any("hyperparathyroidism" in c["summary"].lower() for c in topic(cards, "safety"))


def test_9_achalasia_no_oral_bisphosphonate(run):
    cards = run(9)
    drugs = ordered_drugs(cards)
    assert {"zoledronic acid", "denosumab"} <= drugs
    assert not drugs & {"alendronate", "risedronate", "ibandronate"}


def test_10_site_not_stated(run):
    cards = run(10)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "−3.1" in interp["summary"]
    assert "site not stated" in interp["summary"]
    assert "osteoporosis" in interp["summary"].lower()
    assert "forearm" not in interp["summary"].lower() and "radius" not in interp["summary"].lower()
    assert "measured at the forearm" not in interp["detail"].replace("not necessarily measured at the forearm", "")


def test_11_low_bone_mass_needs_frax(run):
    cards = run(11)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "low bone mass" in interp["summary"].lower() and "FRAX" in interp["summary"]
    assert not ordered_drugs(cards)


def test_12_normal_gets_no_treatment(run):
    cards = run(12)
    assert not topic(cards, "treatment")
    assert not ordered_drugs(cards)


def test_13_missing_labs_are_ordered(run):
    cards = run(13)
    codes = service_requests(cards)
    assert {"17861-6", "2777-1", "62292-8", "2731-8"} <= codes
    assert codes & {"2160-0", "98979-8"}
    (mon,) = topic(cards, "monitoring")
    assert mon["selectionBehavior"] == "any"


ESSENTIALS = lambda cards: sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards)  # noqa: E731


@pytest.mark.parametrize("number", [s.number for s in scenarios.SCENARIOS])
def test_evaluate_cli_agrees_with_the_http_api(tmp_path, run, number):
    bundle = scenarios.build(number, date.today())
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    out = subprocess.run([sys.executable, "-m", "cds_service", "evaluate", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert ESSENTIALS(json.loads(out.stdout)["cards"]) == ESSENTIALS(run(number))


def test_committed_samples_match_the_generator():
    root = Path(scenarios.__file__).parent
    manifest = json.loads((root / "manifest.json").read_text())
    as_of = date.fromisoformat(manifest["as_of"])
    for s in scenarios.SCENARIOS:
        committed = json.loads((root / "bundles" / f"{scenarios.file_stem(s)}.json").read_text())
        assert committed == scenarios.build(s.number, as_of), f"fhir_samples/bundles for scenario {s.number} are stale: make samples"
        request = json.loads((root / "requests" / f"{scenarios.file_stem(s)}.hook.json").read_text())
        assert request == scenarios.hook_request(s.number, committed), \
            f"fhir_samples/requests for scenario {s.number} is stale (its prefetch is not what the service asks for): make samples"


def test_make_samples_says_what_it_wrote(tmp_path):
    """`make samples` runs both generators: each prints what it wrote and where, and writes it."""
    for module, expect in (("fhir_samples.scenarios", "13 example patients"),
                           ("fhir_samples.therapy", f"{len(therapy.CASES)} medication histories")):
        out = tmp_path / module
        done = subprocess.run([sys.executable, "-m", module, "--out", str(out), "--as-of", "2026-01-15"],
                              capture_output=True, text=True, timeout=120, cwd=Path(scenarios.__file__).parents[1])
        assert done.returncode == 0, done.stderr
        assert expect in done.stdout and "as of 2026-01-15" in done.stdout and str(out) in done.stdout
        assert json.loads((out / "manifest.json").read_text())["as_of"] == "2026-01-15"
    assert len(list((tmp_path / "fhir_samples.scenarios" / "requests").glob("*.hook.json"))) == 13


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle"),
    ('{"resourceType": "Bundle", "entry": []}', "no Patient"),
])
def test_evaluate_cli_rejects_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = subprocess.run([sys.executable, "-m", "cds_service", "evaluate", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_evaluate_cli_missing_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cds_service", "evaluate", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot read" in out.stderr
