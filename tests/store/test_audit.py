"""Every hook call is audited: one hook_calls row, one row per card and per suggestion; ids hashed on request."""
from __future__ import annotations

import json

import pytest

from cds_service.config import ConfigError
from tests.conftest import post_hook

from .conftest import count, make_app, query


def test_hook_call_is_audited(store_url, scenario_request):
    client = make_app(store_url).test_client()
    req = scenario_request(1)
    r = post_hook(client, req)
    assert r.status_code == 200
    issued = r.get_json()["cards"]
    assert issued
    rows = query(store_url, "SELECT * FROM hook_calls")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == 200
    assert row["outcome"] == "ok"
    assert row["service_id"] == "bone-health-patient-view"
    assert row["hook_instance"] == req["hookInstance"]
    assert row["card_count"] == len(issued)
    assert row["patient_ref"] == req["context"]["patientId"]  # not hashed unless asked
    assert row["user_ref"] == req["context"]["userId"]
    keys = json.loads(row["prefetch_keys"])
    assert set(keys) == set(req["prefetch"]) and set(keys.values()) == {"prefetch"}
    assert row["total_ms"] >= 0 and row["gather_ms"] is not None and row["rules_ms"] is not None
    assert row["total_ms"] >= row["rules_ms"]

    card_rows = {c["uuid"]: c for c in query(store_url, "SELECT * FROM cards")}
    assert set(card_rows) == {c["uuid"] for c in issued}
    for c in issued:
        cr = card_rows[c["uuid"]]
        assert cr["hook_call_id"] == row["id"]
        assert cr["topic"] == c["source"]["topic"]["code"]
        assert cr["indicator"] == c["indicator"]
        assert cr["summary"] == c["summary"]
    want = {(s["uuid"], c["uuid"], s["label"]) for c in issued for s in c.get("suggestions", [])}
    assert want, "scenario 1 should offer suggestions"
    got = {(s["uuid"], s["card_uuid"], s["label"]) for s in query(store_url, "SELECT * FROM suggestions")}
    assert got == want


def test_every_call_gets_its_own_row(store_url, scenario_request):
    client = make_app(store_url).test_client()
    for n in (1, 2, 3):
        assert post_hook(client, scenario_request(n)).status_code == 200
    assert count(store_url, "hook_calls") == 3
    assert count(store_url, "hook_calls", "status = 200") == 3


def test_bad_hook_call_is_audited_with_its_status(store_url, scenario_request):
    client = make_app(store_url).test_client()
    req = scenario_request(1)
    del req["context"]
    r = post_hook(client, req)
    assert r.status_code == 400
    rows = query(store_url, "SELECT * FROM hook_calls")
    assert len(rows) == 1
    assert rows[0]["status"] == 400
    assert rows[0]["card_count"] == 0
    assert rows[0]["outcome"] and rows[0]["outcome"] != "ok"
    assert count(store_url, "cards") == 0

    r = post_hook(client, "{not json")
    assert r.status_code == 400
    assert count(store_url, "hook_calls", "status = 400") == 2


def test_hashed_ids(store_url, scenario_request):
    key = "k" * 32
    client = make_app(store_url, audit_hash_ids=True, audit_hash_key=key).test_client()
    req = scenario_request(1)
    patient, user = req["context"]["patientId"], req["context"]["userId"]
    assert post_hook(client, req).status_code == 200
    row = query(store_url, "SELECT * FROM hook_calls")[0]
    assert row["patient_ref"].startswith("hmac-sha256:") and len(row["patient_ref"]) == len("hmac-sha256:") + 64
    assert row["user_ref"].startswith("hmac-sha256:")
    assert row["patient_ref"] != row["user_ref"]
    for value in row.values():
        assert patient not in str(value) and user not in str(value)
    for table in ("cards", "suggestions"):
        for r in query(store_url, f"SELECT * FROM {table}"):
            for value in r.values():
                assert patient not in str(value) and user not in str(value)
    # the same id gives the same reference (so calls of one patient can be grouped), a new key another
    assert post_hook(client, scenario_request(1)).status_code == 200
    refs = {r["patient_ref"] for r in query(store_url, "SELECT patient_ref FROM hook_calls")}
    assert len(refs) == 1
    other = make_app(store_url, audit_hash_ids=True, audit_hash_key="x" * 32).test_client()
    assert post_hook(other, scenario_request(1)).status_code == 200
    assert len({r["patient_ref"] for r in query(store_url, "SELECT patient_ref FROM hook_calls")}) == 2


def test_hash_ids_without_key_refuses_to_start(tmp_path):
    with pytest.raises((ConfigError, ValueError), match="CDS_AUDIT_HASH_KEY"):
        make_app(f"sqlite:///{tmp_path / 'a.db'}", audit_hash_ids=True)
    with pytest.raises((ConfigError, ValueError), match="CDS_AUDIT_HASH_KEY"):
        make_app(f"sqlite:///{tmp_path / 'a.db'}", audit_hash_ids=True, audit_hash_key="short")


def test_hashed_ids_also_in_error_outcomes(store_url, scenario_request):
    """An error message may quote the ids (a prefetched Patient that is not context.patientId)."""
    client = make_app(store_url, audit_hash_ids=True, audit_hash_key="k" * 32).test_client()
    req = scenario_request(1)
    req["context"]["patientId"] = "someone-else-42"
    r = post_hook(client, req)
    assert r.status_code == 400 and "someone-else-42" in r.get_data(as_text=True)
    row = query(store_url, "SELECT * FROM hook_calls")[0]
    assert row["status"] == 400
    for value in row.values():
        assert "someone-else-42" not in str(value)
        assert "bone-01" not in str(value)  # the prefetched Patient's id, quoted in the message
    assert "hmac-sha256:" in row["outcome"]


def test_schema_errors_do_not_copy_the_value_sent_into_the_audit(store_url, scenario_request):
    """A request that fails its schema is audited with what is wrong, not with the value sent,
    which can be a patient's data (here free text where an id belongs)."""
    client = make_app(store_url).test_client()
    req = scenario_request(1)
    req["context"]["encounterId"] = "Jane Doe, DOB 1950-02-03, admitted for hip fracture"
    r = post_hook(client, req)
    assert r.status_code == 400
    assert "context.encounterId" in r.get_data(as_text=True)
    row = query(store_url, "SELECT * FROM hook_calls")[0]
    assert row["status"] == 400 and "context.encounterId" in row["outcome"]
    assert "Jane Doe" not in row["outcome"] and "1950" not in row["outcome"]


def test_a_fault_of_the_service_is_a_500_outcome_and_still_audited(store_url, scenario_request, monkeypatch):
    app = make_app(store_url)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.extensions["cds_engine"].facts, "build", broken)
    r = post_hook(app.test_client(), scenario_request(1))
    assert r.status_code == 500 and r.get_json()["resourceType"] == "OperationOutcome"
    assert "a bug" not in r.get_data(as_text=True)
    row = query(store_url, "SELECT * FROM hook_calls")[0]
    assert (row["status"], row["outcome"], row["service_id"]) == (500, "internal error", "bone-health-patient-view")
