"""Realistic records for the result rules of clinical rules §6.4, one per known bug, through the
Flask app (patient-view), and `cds-service evaluate` for unreadable results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from cds_service.cli import bundle_to_request
from cds_service.services.patient_view import prefetch_templates
from fhir_samples.scenarios import LOINC, UCUM, Builder, Scenario
from tests.conftest import hook_cards
from tests.scenarios.test_scenarios import ordered_drugs, text, topic

TODAY = date.today()
ROOT = Path(__file__).resolve().parents[2]


def builder(sex: str = "female", age: int = 72) -> Builder:
    b = Builder(Scenario(90, "results", "results", sex, age, lambda _: None), TODAY)
    b.patient()
    return b


def last(b: Builder) -> dict:
    return b.resources[-1]


@pytest.fixture()
def run(client, knowledge, response_validator):
    def call(b: Builder) -> list[dict]:
        req = bundle_to_request(b.bundle(), None, prefetch_templates(knowledge), "patient-view")
        return hook_cards(client, response_validator, req)
    return call


def test_future_dated_egfr_does_not_hide_ckd_4(run):
    b = builder()
    b.dxa("38267-1", -2.7, b.ago(days=20))
    b.labs(b.ago(days=10), egfr=26, creatinine=1.9)
    b.lab("egfr", 74, (TODAY + timedelta(days=200)).isoformat())  # a mistyped year
    cards = run(b)
    drugs = ordered_drugs(cards)
    assert "alendronate" not in drugs and "zoledronic acid" not in drugs
    assert "dated in the future" in text(cards)


def test_corrected_t_score_wins_over_the_final_it_replaced(run):
    b = builder()
    b.dxa("38267-1", -2.0, b.ago(days=20))
    b.dxa("38267-1", -2.8, b.ago(days=20))
    last(b).update(status="corrected", issued=b.ago(days=18) + "T09:00:00Z")
    cards = run(b)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "Osteoporosis" in interp["summary"] and "−2.8" in interp["summary"]
    assert "superseded by" in interp["detail"]


def test_t_score_sent_as_text_gives_a_card(run):
    b = builder()
    b.dxa("38267-1", 0, b.ago(days=20))
    del last(b)["valueQuantity"]
    last(b)["valueString"] = "\u22122.7"
    b.labs(b.ago(days=30))
    cards = run(b)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "Osteoporosis" in interp["summary"] and "−2.7" in interp["summary"]


def test_t_score_dated_only_on_its_diagnostic_report_gives_a_card(run):
    b = builder()
    b.dxa("38264-8", -2.9, b.ago(days=20))
    member = last(b)
    del member["effectiveDateTime"]
    b.resources.append({"resourceType": "DiagnosticReport", "id": "dxa-report", "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "38269-7", "display": "DXA Bone density"}]},
                        "subject": {"reference": f"Patient/{b.pid}"}, "effectiveDateTime": b.ago(days=20),
                        "result": [{"reference": f"urn:uuid:{member['id']}"}]})
    b.labs(b.ago(days=30))
    cards = run(b)
    (interp,) = topic(cards, "bmd-interpretation")
    assert "Osteoporosis" in interp["summary"] and "−2.9" in interp["summary"]


def test_normal_calcium_with_high_albumin_is_not_hypocalcaemia(run):
    b = builder()
    b.dxa("38267-1", -2.7, b.ago(days=20))
    b.labs(b.ago(days=10), calcium=8.7)
    b.resources.append({"resourceType": "Observation", "id": "alb", "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "1751-7"}]},
                        "subject": {"reference": f"Patient/{b.pid}"}, "effectiveDateTime": b.ago(days=10),
                        "valueQuantity": {"value": 4.7, "unit": "g/dL", "system": UCUM, "code": "g/dL"}})
    cards = run(b)
    assert "low calcium" not in text(cards).lower()
    assert {"alendronate", "zoledronic acid"} <= ordered_drugs(cards)


def test_high_calcium_with_low_pth_is_not_called_primary_hyperparathyroidism(run):
    b = builder()
    b.dxa("38267-1", -3.4, b.ago(days=20))
    b.labs(b.ago(days=10), calcium=11.6, pth=9)
    cards = run(b)
    all_text = text(cards)
    assert "primary hyperparathyroidism" not in all_text.lower()
    assert "PTHrP" in all_text and "free light chains" in all_text
    assert ordered_drugs(cards) == set()  # no drug start until explained


def test_high_calcium_with_pth_40_is_pth_mediated(run):
    b = builder()
    b.dxa("38267-1", -3.4, b.ago(days=20))
    b.labs(b.ago(days=10), calcium=11.0, pth=40)
    cards = run(b)
    assert "primary hyperparathyroidism likely" in text(cards)
    assert not {"teriparatide", "abaloparatide"} & ordered_drugs(cards)


def test_low_calcium_offers_no_romosozumab(run):
    b = builder()
    b.dxa("38267-1", -3.6, b.ago(days=20))
    b.labs(b.ago(days=10), calcium=7.9)
    cards = run(b)
    assert "romosozumab" not in ordered_drugs(cards)


def test_clearance_from_a_recent_weight_blocks_alendronate(run):
    b = builder(age=84)
    b.dxa("38267-1", -2.7, b.ago(days=20))
    b.labs(b.ago(days=10), egfr=None, creatinine=1.1)  # eGFR computed ≈ 49; CrCl with 45 kg ≈ 27
    b.resources.append({"resourceType": "Observation", "id": "wt", "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
                        "subject": {"reference": f"Patient/{b.pid}"}, "effectiveDateTime": b.ago(days=40),
                        "valueQuantity": {"value": 45, "unit": "kg", "system": UCUM, "code": "kg"}})
    cards = run(b)
    assert not {"alendronate", "risedronate", "zoledronic acid"} & ordered_drugs(cards)
    assert "Cockcroft-Gault" in text(cards)


def test_unreadable_dxa_records_get_one_info_card(run):
    b = builder()
    b.dxa("38267-1", 0, b.ago(days=20))
    del last(b)["valueQuantity"]
    last(b)["valueString"] = "see report"
    b.dxa("38264-8", -2.9, b.ago(days=20))
    last(b)["status"] = "preliminary"
    cards = run(b)
    (info,) = topic(cards, "bmd-interpretation")
    assert info["indicator"] == "info" and "none could be used" in info["summary"]
    assert "not a number" in info["detail"] and "preliminary" in info["detail"]


def test_evaluate_says_on_stderr_what_it_did_not_use(tmp_path):
    b = builder()
    b.dxa("38267-1", 0, b.ago(days=20))
    del last(b)["valueQuantity"]
    last(b)["valueString"] = "see report"
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(b.bundle()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "cds_service.cli", "evaluate", str(path)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "not used" in out.stderr and "not a number" in out.stderr
    assert json.loads(out.stdout)["cards"]
