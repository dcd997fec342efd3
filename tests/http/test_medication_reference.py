"""A medication record that names its drug by ``medicationReference`` (clinical rules §6.1).

The Medication is taken from the record's ``contained``, from the request, or read as
``Medication/{id}`` from the fhirServer with the hook's token and deadline. A Medication that
cannot be read is not an error of the hook: the call answers 200 in time, and the reason is kept
(ids and outcome only) in the log and the audit. Nothing is read for a contained or a
``urn:uuid`` reference, and nothing is ever sent to another server.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from typing import Any

import pytest
from werkzeug import Response

from cds_service import create_app
from cds_service.fhir import medications as plan
from cds_service.services.patient_view import SERVICE_ID
from tests.http.fake_fhir import MINUS_4_1, SERVICE_URL, TOKEN, FakeFhir, fhir_json, oo, serve, with_server
from tests.http.test_prefetch import capture_facts_resources

HOOK_DEADLINE = 2.0
READ_TIMEOUT = 0.5
MARGIN = 1.0
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

KEY_OF = {"MedicationRequest": "medicationRequests", "MedicationStatement": "medicationStatements",
          "MedicationAdministration": "medicationAdministrations", "MedicationDispense": "medicationDispenses"}


@pytest.fixture(scope="module")
def make_httpserver():
    yield from serve()


@pytest.fixture(scope="module")
def other_server():
    """Another origin (same address, other port): nothing may be sent here."""
    yield from serve()


@pytest.fixture()
def other(other_server):
    other_server.clear()
    other_server.expect_request(re.compile(".*")).respond_with_json(medication("elsewhere"))
    yield other_server
    other_server.clear()


def make_client(**settings: Any):
    app = create_app({"hook_deadline": HOOK_DEADLINE, "fhir_read_timeout": READ_TIMEOUT, **settings})
    return app, app.test_client()


@pytest.fixture()
def app_client():
    app, client = make_client()
    yield app, client
    app.extensions["cds_engine"].close()


@pytest.fixture()
def client(app_client):
    return app_client[1]


@pytest.fixture()
def received(app_client, monkeypatch) -> list[list[dict[str, Any]]]:
    """The resources the facts layer receives, one list per hook call."""
    return capture_facts_resources(app_client[0].extensions["cds_engine"], monkeypatch)


def medication(mid: str, code: str = "904421") -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid,
            "code": {"coding": [{"system": RXNORM, "code": code, "display": "alendronate 70 MG Oral Tablet"}]}}


def record(ref: str, rtype: str = "MedicationRequest", pid: str = "bone-01", rid: str = "rec-1",
           contained: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": rid, "status": "completed" if rtype != "MedicationRequest"
                         else "active", "subject": {"reference": f"Patient/{pid}"},
                         "medicationReference": {"reference": ref}}
    if rtype == "MedicationRequest":
        r.update(intent="order", authoredOn="2026-06-01")
    elif rtype == "MedicationDispense":
        r["whenHandedOver"] = "2026-06-01"
    else:
        r["effectiveDateTime"] = "2026-06-01"
    if contained:
        r["contained"] = contained
    return r


def with_records(body: dict[str, Any], *records: dict[str, Any], extra: tuple[dict[str, Any], ...] = ()):
    """``body`` with the records added to their keys' Bundles; ``extra`` entries go in as included."""
    for r in records:
        bundle = body["prefetch"][KEY_OF[r["resourceType"]]]
        bundle["entry"].append({"resource": r, "search": {"mode": "match"}})
        bundle["total"] = bundle.get("total", 0) + 1
    for r in extra:
        body["prefetch"]["medicationRequests"]["entry"].append({"resource": r, "search": {"mode": "include"}})
    return body


def post(client, body: Any, deadline: float = HOOK_DEADLINE):
    start = time.monotonic()
    resp = client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json")
    elapsed = time.monotonic() - start
    assert elapsed < deadline + MARGIN, f"answered after {elapsed:.2f} s"
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200, text
    assert TOKEN not in text
    [card] = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "bmd-interpretation"]
    assert MINUS_4_1 in card["summary"]  # the interpretation does not depend on the medications
    return resp


def medication_ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r.get("id") for r in resources if r["resourceType"] == "Medication"}


def medication_reads(fhir: FakeFhir) -> list[str]:
    return [p.removesuffix("?") for k, p, _ in fhir.seen if k == "Medication"]  # werkzeug: "path?" when no query


def call(app, body: dict[str, Any]):
    """The engine's answer itself, for what it kept about each reference."""
    return app.extensions["cds_engine"].call(SERVICE_ID, body)


# ---- read from the fhirServer ----

@pytest.mark.parametrize("rtype", list(KEY_OF))
def test_medication_is_read_with_the_token_and_given_to_the_facts(client, fhir, httpserver, received, rtype):
    fhir.medications["m1"] = medication("m1")
    post(client, with_records(with_server(fhir), record("Medication/m1", rtype)))
    [(request, response)] = httpserver.log
    assert request.path == "/fhir/Medication/m1" and response.status_code == 200
    assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert request.headers.get("Accept") == "application/fhir+json"
    [resources] = received
    assert medication("m1") in resources
    assert any(r["resourceType"] == rtype and r["id"] == "rec-1" for r in resources)


def test_absolute_reference_on_the_fhir_server_is_read(client, fhir, httpserver, received):
    fhir.medications["m1"] = medication("m1")
    post(client, with_records(with_server(fhir), record(fhir.base + "/Medication/m1")))
    assert medication_reads(fhir) == ["/fhir/Medication/m1"]
    assert httpserver.log[0][0].headers.get("Authorization") == f"Bearer {TOKEN}"
    assert "m1" in medication_ids(received[0])


def test_each_medication_is_read_once_however_often_it_is_referenced(client, fhir, received):
    fhir.medications["m1"] = medication("m1")
    body = with_records(with_server(fhir), record("Medication/m1", rid="a"),
                        record("Medication/m1", "MedicationDispense", rid="b"),
                        record(fhir.base + "/Medication/m1", "MedicationAdministration", rid="c"))
    post(client, body)
    assert medication_reads(fhir) == ["/fhir/Medication/m1"]
    assert [r.get("id") for r in received[0] if r["resourceType"] == "Medication"] == ["m1"]


def test_medications_are_read_in_parallel(client, fhir, received):
    def slow(mid: str):
        def handler(request):
            time.sleep(0.3)
            return fhir_json(medication(mid))
        return handler

    ids = [f"m{i}" for i in range(5)]
    for mid in ids:
        fhir.medications[mid] = slow(mid)
    start = time.monotonic()
    post(client, with_records(with_server(fhir), *(record(f"Medication/{m}", rid=m) for m in ids)))
    elapsed = time.monotonic() - start
    assert sorted(medication_reads(fhir)) == sorted(f"/fhir/Medication/{m}" for m in ids)
    assert medication_ids(received[0]) >= set(ids)
    assert elapsed < 1.2, f"5 reads of 0.3 s took {elapsed:.2f} s: not in parallel"


def test_the_outcome_of_each_read_is_kept(app_client, fhir):
    app, _ = app_client
    fhir.medications["m1"] = medication("m1")
    result = call(app, with_records(with_server(fhir), record("Medication/m1", rid="a"),
                                    record("Medication/m404", rid="b")))
    assert result.medications == {"Medication/m1": "fetched", "Medication/m404": "failed: HTTP 404"}


# ---- a read that fails: still 200, in time ----

def f_status(status: int):
    return lambda fhir: (lambda request: fhir_json(oo("exception", "secret server words"), status))


def f_timeout(fhir):
    def h(request):
        fhir.sleep(READ_TIMEOUT * 3)
        return fhir_json(medication("m1"))
    return h


def f_malformed(fhir):
    return lambda request: Response('{"resourceType": "Medication", "id": ', status=200,
                                    content_type="application/fhir+json")


def f_not_fhir(fhir):
    return lambda request: fhir_json({"results": []})


def f_other_type(fhir):
    return lambda request: fhir_json({"resourceType": "Patient", "id": "m1"})


def f_other_id(fhir):
    return lambda request: fhir_json(medication("m2"))


def f_redirect(fhir):
    return lambda request: Response("", status=302, headers={"Location": fhir.base + "/Medication/m2"})


FAULTS = {
    "404": (f_status(404), "failed: HTTP 404"),
    "500": (f_status(500), "failed: HTTP 500"),
    "401": (f_status(401), "failed: HTTP 401"),
    "timeout": (f_timeout, "failed: timed out"),
    "malformed JSON": (f_malformed, "failed: response is not valid JSON"),
    "not FHIR": (f_not_fhir, "failed: response is not a FHIR resource"),
    "another resource type": (f_other_type, "failed: the fhirServer answered with another resource type"),
    "another Medication": (f_other_id, "failed: the fhirServer answered with another Medication"),
    "redirect": (f_redirect, "failed: HTTP 302 redirect; redirects are not followed"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_read_still_answers_in_time(app_client, fhir, received, fault):
    app, client = app_client
    make, outcome = FAULTS[fault]
    fhir.medications["m1"] = make(fhir)
    body = with_records(with_server(fhir), record("Medication/m1"))
    resp = post(client, body)
    assert "secret server words" not in resp.get_data(as_text=True)
    assert medication_reads(fhir) == ["/fhir/Medication/m1"]
    assert not medication_ids(received[0]), "nothing that is not the Medication asked for reaches the facts"
    assert any(r["resourceType"] == "MedicationRequest" and r["id"] == "rec-1" for r in received[0])
    assert call(app, body).medications == {"Medication/m1": outcome}


def test_a_read_past_the_hook_deadline_is_cut_off(fhir):
    app, client = make_client(hook_deadline=1.0, fhir_read_timeout=5.0)
    try:
        def h(request):
            fhir.sleep(4)
            return fhir_json(medication("m1"))
        fhir.medications["m1"] = h
        body = with_records(with_server(fhir), record("Medication/m1"))
        post(client, body, deadline=1.0)
        outcome = call(app, body).medications["Medication/m1"]
        assert outcome.startswith("failed: ") and ("deadline" in outcome or "timed out" in outcome), outcome
    finally:
        app.extensions["cds_engine"].close()


def test_one_failed_read_does_not_lose_the_others(client, fhir, received):
    fhir.medications["ok"] = medication("ok")
    fhir.medications["bad"] = f_status(500)(fhir)
    post(client, with_records(with_server(fhir), record("Medication/ok", rid="a"), record("Medication/bad", rid="b")))
    assert medication_ids(received[0]) == {"ok"}


# ---- the cap ----

def test_no_more_reads_than_the_cap(fhir):
    app, client = make_client(fhir_max_medication_reads=3)
    try:
        ids = [f"m{i}" for i in range(6)]
        for mid in ids:
            fhir.medications[mid] = medication(mid)
        body = with_records(with_server(fhir), *(record(f"Medication/{m}", rid=m) for m in ids))
        post(client, body)
        assert sorted(medication_reads(fhir)) == [f"/fhir/Medication/{m}" for m in ids[:3]]  # the first three
        result = call(app, body)
        assert {k: v for k, v in result.medications.items() if v == "fetched"} == {
            f"Medication/{m}": "fetched" for m in ids[:3]}
        assert {k: v for k, v in result.medications.items() if v != "fetched"} == {
            f"Medication/{m}": plan.OVER_THE_CAP for m in ids[3:]}
    finally:
        app.extensions["cds_engine"].close()


def test_cap_of_zero_reads_nothing(fhir, httpserver):
    app, client = make_client(fhir_max_medication_reads=0)
    try:
        fhir.medications["m1"] = medication("m1")
        post(client, with_records(with_server(fhir), record("Medication/m1")))
        assert httpserver.log == []
    finally:
        app.extensions["cds_engine"].close()


def test_the_cap_is_a_setting(monkeypatch):
    from cds_service.config import ConfigError, Settings

    assert Settings.from_env({}).fhir_max_medication_reads == 50
    assert Settings.from_env({"CDS_FHIR_MAX_MEDICATION_READS": "7"}).fhir_max_medication_reads == 7
    with pytest.raises(ConfigError, match="CDS_FHIR_MAX_MEDICATION_READS"):
        Settings.from_env({"CDS_FHIR_MAX_MEDICATION_READS": "-1"})


# ---- what is never read ----

def test_absolute_reference_to_another_server_is_never_requested(app_client, fhir, httpserver, other, received):
    app, client = app_client
    ref = other.url_for("/fhir/Medication/m1")
    body = with_records(with_server(fhir), record(ref))
    post(client, body)
    assert other.log == [], "nothing may be sent to another server"
    assert httpserver.log == []
    assert not medication_ids(received[0])
    assert call(app, body).medications == {"Medication/m1": plan.ANOTHER_SERVER}  # by its id: never the URL
    assert other.log == []


def test_same_host_outside_the_fhir_server_base_is_not_read(client, fhir, httpserver):
    """Same origin, another path: not under the fhirServer's base, so not the fhirServer."""
    post(client, with_records(with_server(fhir), record(httpserver.url_for("/other/Medication/m1"))))
    assert httpserver.log == []


def test_contained_medication_is_not_read(client, fhir, httpserver, received):
    contained = [{**medication("c1")}]
    post(client, with_records(with_server(fhir), record("#c1", contained=contained)))
    assert httpserver.log == []
    [mr] = [r for r in received[0] if r["resourceType"] == "MedicationRequest" and r["id"] == "rec-1"]
    assert mr["contained"] == contained, "left to the facts layer, as it came"


def test_urn_uuid_reference_is_not_read(app_client, fhir, httpserver):
    app, client = app_client
    ref = "urn:uuid:1b2c3d4e-0000-4000-8000-000000000001"
    body = with_records(with_server(fhir), record(ref))
    post(client, body)
    assert httpserver.log == []
    assert call(app, body).medications == {"Medication/1b2c3d4e-0000-4000-8000-000000000001": plan.URN_NOT_IN_REQUEST}


@pytest.mark.parametrize("ref", ["Medication/m1", "https://ehr.example.org/fhir/Medication/m1",
                                 "Medication/m1/_history/3", "urn:uuid:m1"])
def test_medication_in_the_request_is_not_read(app_client, fhir, httpserver, received, ref):
    app, client = app_client
    body = with_records(with_server(fhir), record(ref), extra=(medication("m1"),))
    post(client, body)
    assert httpserver.log == []
    assert "m1" in medication_ids(received[0])
    assert call(app, body).medications == {}


def test_a_reference_that_is_not_a_medication_is_not_read(app_client, fhir, httpserver):
    app, client = app_client
    body = with_records(with_server(fhir), record("Substance/s1", rid="a"), record("Medication/../Patient/x", rid="b"),
                        record("Medication/m1?_format=xml", rid="c"))
    post(client, body)
    assert httpserver.log == []
    assert set(call(app, body).medications.values()) == {plan.NOT_A_MEDICATION}


def test_without_a_fhir_server_the_call_still_answers(app_client, fhir, httpserver, received):
    app, client = app_client
    body = with_records(json.loads(json.dumps(fhir.request)), record("Medication/m1"))
    post(client, body)
    assert httpserver.log == []
    assert not medication_ids(received[0])
    assert call(app, body).medications == {"Medication/m1": plan.NO_SERVER}


def test_an_untrusted_fhir_server_is_not_called_for_medications(fhir, httpserver):
    app, client = make_client(fhir_server_allowlist="https://ehr.example.org/fhir")
    try:
        post(client, with_records(with_server(fhir), record("Medication/m1")))
        assert httpserver.log == []
    finally:
        app.extensions["cds_engine"].close()


# ---- the log and the audit: ids and outcomes only ----

def test_the_log_names_each_reference_and_its_outcome(client, fhir, caplog):
    fhir.medications["m1"] = medication("m1")
    fhir.medications["m2"] = f_status(404)(fhir)
    with caplog.at_level(logging.INFO, logger="cds_service.request"):
        post(client, with_records(with_server(fhir), record("Medication/m1", rid="a"), record("Medication/m2", rid="b"),
                                  record("urn:uuid:0f0f", rid="c")))
    [line] = [r for r in caplog.records if r.name == "cds_service.request" and getattr(r, "path", "") == SERVICE_URL]
    assert line.medications == {"Medication/m1": "fetched", "Medication/m2": "failed: HTTP 404",
                                "Medication/0f0f": plan.URN_NOT_IN_REQUEST}
    text = line.getMessage()
    assert TOKEN not in text and "secret server words" not in text and "alendronate" not in text


def test_the_audit_records_each_reference_and_its_outcome(fhir, tmp_path):
    db = tmp_path / "audit.db"
    app, client = make_client(database_url=f"sqlite:///{db}")
    try:
        fhir.medications["m1"] = medication("m1")
        body = with_records(with_server(fhir), record("Medication/m1", rid="a"), record("Medication/m2", rid="b"))
        post(client, body)
    finally:
        app.extensions["cds_engine"].close()
    with sqlite3.connect(db) as conn:
        [(keys,)] = conn.execute("SELECT prefetch_keys FROM hook_calls").fetchall()
    keys = json.loads(keys)
    assert keys["Medication/m1"] == "fetched" and keys["Medication/m2"] == "failed: HTTP 404"
    assert keys["medicationRequests"] == "prefetch"


def test_a_reference_with_a_token_or_free_text_never_reaches_the_log(client, fhir, caplog):
    """Review: the reference as the record wrote it reached the log line and the audit record."""
    secret = "https://other.example/Medication/xaccess_tokeneyJhbGciOiJIUzI1NiJ9.SECRETPAYLOAD"
    with caplog.at_level(logging.INFO, logger="cds_service.request"):
        post(client, with_records(with_server(fhir), record(secret, rid="a"), record("JaneDoeDOB1950MRN4471", rid="b")))
    [line] = [r for r in caplog.records if r.name == "cds_service.request" and getattr(r, "path", "") == SERVICE_URL]
    text = line.getMessage() + json.dumps(line.medications)
    assert "SECRETPAYLOAD" not in text and "access_token" not in text and "JaneDoe" not in text
    assert "other.example" not in text
