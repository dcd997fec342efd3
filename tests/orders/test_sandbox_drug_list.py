"""order-select with every bisphosphonate the CDS Hooks sandbox's drug picker offers, for the patient of
scenario 3 (eGFR 25): each is recognised and blocked with a critical card (clinical rules §3)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.orders.test_orders_http import RXNORM, actions, bundle, call, order_request

SANDBOX_CSV = Path(__file__).resolve().parents[2] / "terminology" / "sources" / "sandbox-medication-list-osteoporosis.csv"
# the ingredient a product's name starts with → the drug; those contraindicated below eGFR 35 or 30
INGREDIENT = {"alendronate": "alendronate", "alendronic": "alendronate", "ibandronate": "ibandronate",
              "ibandronic": "ibandronate", "risedronate": "risedronate", "zoledronic": "zoledronic_acid",
              "raloxifene": None}
BLOCKED_BELOW_EGFR = {"alendronate": 35, "zoledronic_acid": 35, "risedronate": 30, "ibandronate": 30}


def _rows() -> list[dict[str, str]]:
    with SANDBOX_CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["drug"] = INGREDIENT[r["display"].split()[0].lower()]
    return rows


ALL_ROWS = _rows()
ROWS = [r for r in ALL_ROWS if r["drug"] in BLOCKED_BELOW_EGFR]


def test_the_sandbox_list_holds_the_bisphosphonates():
    counts: dict[str | None, int] = {}
    for r in ALL_ROWS:
        counts[r["drug"]] = counts.get(r["drug"], 0) + 1
    # the sandbox's picker has no zoledronic acid product; raloxifene is not contraindicated by eGFR
    assert counts == {"alendronate": 26, "risedronate": 22, "ibandronate": 7, None: 5}
    assert len(ROWS) == 55


def sandbox_draft(row: dict[str, str]) -> dict[str, Any]:
    """A draft order as the sandbox's order-select screen sends it for a picked product."""
    return {"resourceType": "MedicationRequest", "id": "sandbox-order", "status": "draft", "intent": "proposal",
            "subject": {"reference": "Patient/bone-03"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": row["code"], "display": row["display"]}],
                                          "text": row["display"]}}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['code']}-{r['display']}" for r in ROWS])
def test_order_select_of_a_sandbox_bisphosphonate_for_egfr_25_is_critical(client, response_validator,
                                                                          scenario_request, row):
    req = order_request(scenario_request, 3, "order-select", bundle(sandbox_draft(row)),
                        selections=["MedicationRequest/sandbox-order"])
    cards = call(client, response_validator, req)
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert len(critical) == 1, [(c["indicator"], c["summary"]) for c in cards]
    c = critical[0]
    drug = row["drug"].replace("_", " ")
    assert drug in c["summary"].lower(), c["summary"]
    assert "egfr 25 " in c["detail"].lower()
    assert re.search(rf"\beGFR below {BLOCKED_BELOW_EGFR[row['drug']]}\b", c["detail"]), c["detail"]
    assert [a["resourceId"] for a in actions(c, "delete")] == ["MedicationRequest/sandbox-order"]


# the sandbox's list has no zoledronic acid: every RxNorm code of the packaged zoledronic acid 5 mg value
# set instead, sent as a code alone (no display, no text), as an EHR's order screen may send it
ZOLEDRONIC = [(c[1], c[2]) for c in json.loads(
    (Path(__file__).resolve().parents[2] / "cds_service" / "knowledge" / "valuesets" / "zoledronic_acid.json")
    .read_text(encoding="utf-8"))["codes"] if c[0] == "rxnorm"]


def test_the_zoledronic_acid_value_set_has_products():
    assert len(ZOLEDRONIC) >= 3 and ("705824", "100 ML zoledronic acid 0.05 MG/ML Injection") in ZOLEDRONIC


@pytest.mark.parametrize(("code", "display"), ZOLEDRONIC, ids=[f"{c}-{d}" for c, d in ZOLEDRONIC])
def test_order_select_of_zoledronic_acid_by_code_alone_for_egfr_25_is_critical(client, response_validator,
                                                                              scenario_request, code, display):
    draft = sandbox_draft({"code": code, "display": display})
    draft["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": code}]}
    req = order_request(scenario_request, 3, "order-select", bundle(draft), selections=["MedicationRequest/sandbox-order"])
    cards = call(client, response_validator, req)
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert len(critical) == 1, [(c["indicator"], c["summary"]) for c in cards]
    assert "zoledronic acid" in critical[0]["summary"].lower() and "eGFR below 35 " in critical[0]["detail"]
