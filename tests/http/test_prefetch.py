"""Prefetch handling against a FHIR server played by pytest-httpserver.

Per CDS Hooks 2.0: keys given in the request are used as they are; a null key is "nothing
there" and not fetched; a missing key or one holding an OperationOutcome is fetched from
fhirServer with the Bearer token; a prefetched Bundle's ``next`` pages are read.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from werkzeug import Request, Response

from cds_service import create_app
from cds_service.services.patient_view import prefetch_templates
from tests.http.fake_fhir import (
    MINUS_4_1,
    SERVICE_URL,
    TOKEN,
    FakeFhir,
    fhir_json,
    serve,
    with_server,
)

KEYS = ["patient", "dxa", "labs", "medicationRequests", "medicationStatements", "medicationAdministrations",
        "medicationDispenses", "conditions", "diagnosticReports"]


@pytest.fixture(scope="module")
def make_httpserver():
    """This module's FHIR server: threaded, so that parallel fetches are not serialised by it."""
    yield from serve()


@pytest.fixture()
def fhir(httpserver, scenario_request):
    base = scenario_request(1)
    fake = FakeFhir(httpserver, base["prefetch"], base["context"]["patientId"])
    fake.request = base  # a full request for scenario 1, every key filled
    yield fake
    fake.finish()
    httpserver.clear()


@pytest.fixture()
def client():
    app = create_app({"hook_deadline": 2.0, "fhir_read_timeout": 1.0, "cors_origins": "https://sandbox.cds-hooks.org"})
    yield app.test_client()
    app.extensions["cds_engine"].close()


def post(client, body: Any):
    return client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json")


def cards_of(resp) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cards = resp.get_json()["cards"]
    assert cards
    return cards


def interpretation(resp) -> dict[str, Any]:
    [card] = [c for c in cards_of(resp) if c["source"]["topic"]["code"] == "bmd-interpretation"]
    return card


def test_all_keys_present_makes_no_outbound_request(client, fhir, httpserver):
    resp = post(client, with_server(fhir))
    card = interpretation(resp)
    assert card["indicator"] == "critical" and MINUS_4_1 in card["summary"]
    assert httpserver.log == []


def test_null_key_is_not_fetched(client, fhir, httpserver):
    body = with_server(fhir, drop=("labs",), conditions=None, medicationStatements=None)
    resp = post(client, body)
    assert interpretation(resp)["indicator"] == "critical"
    assert fhir.keys_requested() == ["labs"]
    assert len(httpserver.log) == 1


def test_null_data_keys_need_no_fhir_server(client, fhir, httpserver):
    body = json.loads(json.dumps(fhir.request))
    for key in ("labs", "medicationRequests", "medicationStatements", "medicationAdministrations",
                "medicationDispenses", "conditions"):
        body["prefetch"][key] = None
    resp = post(client, body)
    assert MINUS_4_1 in interpretation(resp)["summary"]
    assert httpserver.log == []


@pytest.mark.parametrize("key", KEYS)
def test_missing_key_is_fetched_with_token_at_the_template_url(client, fhir, httpserver, knowledge, key):
    resp = post(client, with_server(fhir, drop=(key,)))
    card = interpretation(resp)
    assert card["indicator"] == "critical" and MINUS_4_1 in card["summary"]
    assert "could not be read" not in card["detail"]

    assert len(httpserver.log) == 1
    request, response = httpserver.log[0]
    assert response.status_code == 200
    assert request.method == "GET"
    assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert request.headers.get("Accept") == "application/fhir+json"

    expected = urlsplit(prefetch_templates(knowledge)[key].replace("{{context.patientId}}", fhir.pid))
    assert request.path == "/fhir/" + expected.path
    assert sorted(request.args.items(multi=True)) == sorted(parse_qsl(expected.query, keep_blank_values=True))


def test_several_missing_keys_are_each_fetched_once(client, fhir, httpserver):
    resp = post(client, with_server(fhir, drop=tuple(KEYS)))
    assert MINUS_4_1 in interpretation(resp)["summary"]
    assert sorted(fhir.keys_requested()) == sorted(KEYS)


def test_no_token_is_sent_without_fhir_authorization(client, fhir, httpserver):
    body = with_server(fhir, drop=("labs",))
    del body["fhirAuthorization"]
    assert interpretation(post(client, body))
    [(request, _)] = httpserver.log
    assert "Authorization" not in request.headers


def test_key_holding_an_operation_outcome_is_fetched(client, fhir, httpserver):
    oo = {"resourceType": "OperationOutcome",
          "issue": [{"severity": "information", "code": "too-costly", "diagnostics": "prefetch skipped"}]}
    resp = post(client, with_server(fhir, dxa=oo))
    card = interpretation(resp)
    assert card["indicator"] == "critical" and MINUS_4_1 in card["summary"]
    assert fhir.keys_requested() == ["dxa"]


def test_patient_key_holding_an_operation_outcome_is_fetched(client, fhir, httpserver):
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    resp = post(client, with_server(fhir, patient=oo))
    assert MINUS_4_1 in interpretation(resp)["summary"]
    assert fhir.keys_requested() == ["patient"]


def dxa_entries(fhir: FakeFhir) -> list[dict[str, Any]]:
    return fhir.data["dxa"]["entry"]


def test_prefetched_bundle_next_page_is_read_and_used(client, fhir, httpserver):
    page2_path = "/fhir/_page/dxa-2"
    fhir.pages[page2_path] = {"resourceType": "Bundle", "type": "searchset", "entry": dxa_entries(fhir)}
    first = {"resourceType": "Bundle", "type": "searchset", "total": len(dxa_entries(fhir)), "entry": [],
             "link": [{"relation": "self", "url": fhir.base + "/Observation?patient=bone-01"},
                      {"relation": "next", "url": httpserver.url_for(page2_path) + "?_getpages=abc&_offset=0"}]}
    resp = post(client, with_server(fhir, dxa=first))
    card = interpretation(resp)
    assert card["indicator"] == "critical"
    assert MINUS_4_1 in card["summary"] and "lumbar spine" in card["summary"]
    [(request, _)] = httpserver.log
    assert request.path == page2_path and request.args["_getpages"] == "abc"
    assert request.headers.get("Authorization") == f"Bearer {TOKEN}"


def test_prefetched_bundle_pages_are_all_read(client, fhir, httpserver):
    lumbar, hip = dxa_entries(fhir)[0], dxa_entries(fhir)[1]
    assert "38267-1" in json.dumps(lumbar)
    fhir.pages["/fhir/_page/2"] = {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                   "link": [{"relation": "next", "url": httpserver.url_for("/fhir/_page/3")}]}
    fhir.pages["/fhir/_page/3"] = {"resourceType": "Bundle", "type": "searchset", "entry": [lumbar]}
    first = {"resourceType": "Bundle", "type": "searchset", "entry": [hip],
             "link": [{"relation": "next", "url": httpserver.url_for("/fhir/_page/2")}]}
    resp = post(client, with_server(fhir, dxa=first))
    card = interpretation(resp)
    assert MINUS_4_1 in card["summary"]
    assert "\u22122.9" in card["detail"]  # the first page's resource is kept
    assert [r.path for r, _ in httpserver.log] == ["/fhir/_page/2", "/fhir/_page/3"]


def test_fetched_search_next_pages_are_read(client, fhir, httpserver):
    lumbar, hip = dxa_entries(fhir)[0], dxa_entries(fhir)[1]
    fhir.pages["/fhir/_page/dxa-2"] = {"resourceType": "Bundle", "type": "searchset", "entry": [lumbar]}
    fhir.data["dxa"] = {"resourceType": "Bundle", "type": "searchset", "entry": [hip],
                        "link": [{"relation": "next", "url": httpserver.url_for("/fhir/_page/dxa-2")}]}
    resp = post(client, with_server(fhir, drop=("dxa",)))
    card = interpretation(resp)
    assert MINUS_4_1 in card["summary"] and "\u22122.9" in card["detail"]
    assert [r.path for r, _ in httpserver.log] == ["/fhir/Observation", "/fhir/_page/dxa-2"]


def test_prefetched_bundle_with_next_and_no_fhir_server_for_required_key_is_412(client, fhir, httpserver):
    body = json.loads(json.dumps(fhir.request))
    body["prefetch"]["dxa"]["link"] = [{"relation": "next", "url": "https://fhir.example.org/r4/page2"}]
    resp = post(client, body)
    assert resp.status_code == 412, resp.get_data(as_text=True)
    oo = resp.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "dxa" in oo["issue"][0]["diagnostics"] and "prefetch.dxa" in oo["issue"][0]["expression"]
    assert httpserver.log == []


def test_missing_keys_without_fhir_server_is_412_naming_them(client, fhir, httpserver):
    body = json.loads(json.dumps(fhir.request))
    del body["prefetch"]["labs"]
    del body["prefetch"]["medicationRequests"]
    resp = post(client, body)
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert resp.mimetype == "application/fhir+json"
    issue = resp.get_json()["issue"][0]
    assert "labs" in issue["diagnostics"] and "medicationRequests" in issue["diagnostics"]
    assert "dxa" not in issue["diagnostics"]
    assert set(issue["expression"]) == {"prefetch.labs", "prefetch.medicationRequests"}
    assert httpserver.log == []


@pytest.mark.parametrize("keys", [("medicationAdministrations",), ("medicationDispenses",),
                                  ("medicationAdministrations", "medicationDispenses")])
def test_missing_medication_keys_without_fhir_server_is_412_naming_them(client, fhir, httpserver, keys):
    body = json.loads(json.dumps(fhir.request))
    for key in keys:
        del body["prefetch"][key]
    resp = post(client, body)
    assert resp.status_code == 412, resp.get_data(as_text=True)
    issue = resp.get_json()["issue"][0]
    assert all(k in issue["diagnostics"] for k in keys), issue
    assert set(issue["expression"]) == {f"prefetch.{k}" for k in keys}
    assert httpserver.log == []


def test_fetched_administrations_and_dispenses_reach_the_facts(client, fhir, httpserver, monkeypatch):
    """The two keys, fetched from the fhirServer, give their records (and a Medication the search
    included) to the facts layer as the other keys do."""
    pid = fhir.pid
    given = {"resourceType": "MedicationAdministration", "id": "adm-1", "status": "completed",
             "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-06-01",
             "medicationReference": {"reference": "Medication/dmab"}}
    handed = {"resourceType": "MedicationDispense", "id": "disp-1", "status": "completed",
              "subject": {"reference": f"Patient/{pid}"}, "whenHandedOver": "2026-05-01",
              "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                        "code": "904421"}]}}
    med = {"resourceType": "Medication", "id": "dmab",
           "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "993449"}]}}
    fhir.data["medicationAdministrations"] = {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [
        {"resource": given, "search": {"mode": "match"}}, {"resource": med, "search": {"mode": "include"}}]}
    fhir.data["medicationDispenses"] = {"resourceType": "Bundle", "type": "searchset", "total": 1,
                                        "entry": [{"resource": handed}]}
    engine = client.application.extensions["cds_engine"]
    seen = capture_facts_resources(engine, monkeypatch)
    resp = post(client, with_server(fhir, drop=("medicationAdministrations", "medicationDispenses")))
    assert MINUS_4_1 in interpretation(resp)["summary"]
    assert sorted(fhir.keys_requested()) == ["medicationAdministrations", "medicationDispenses"]
    ids = {(r["resourceType"], r.get("id")) for r in seen[-1]}
    assert {("MedicationAdministration", "adm-1"), ("MedicationDispense", "disp-1"), ("Medication", "dmab")} <= ids
    assert "Medication" not in fhir.keys_requested(), "an included Medication is not read again"


def capture_facts_resources(engine, monkeypatch) -> list[list[dict[str, Any]]]:
    """Each call's resources as the facts layer receives them (the patient aside)."""
    calls: list[list[dict[str, Any]]] = []
    build = engine.facts.build

    def spy(patient, resources, *args, **kw):
        calls.append(list(resources))
        return build(patient, resources, *args, **kw)

    monkeypatch.setattr(engine.facts, "build", spy)
    return calls


def _answer_after(fhir, key: str, seconds: float) -> Callable[[Request], Response]:
    """The fake server's answer for ``key``, after ``seconds``."""
    def handler(request: Request) -> Response:
        time.sleep(seconds)
        return fhir_json(fhir.data[key])
    return handler


def test_missing_keys_are_fetched_in_parallel(fhir, httpserver):
    app = create_app({"hook_deadline": 5.0, "fhir_read_timeout": 3.0})
    client = app.test_client()
    slow = ("patient", "dxa", "labs", "medicationRequests", "medicationStatements")
    for key in slow:
        fhir.faults[key] = _answer_after(fhir, key, 0.4)
    body = with_server(fhir, drop=slow)
    start = time.monotonic()
    resp = post(client, body)
    elapsed = time.monotonic() - start
    app.extensions["cds_engine"].close()
    card = interpretation(resp)
    assert MINUS_4_1 in card["summary"] and "could not be read" not in card["detail"]
    assert sorted(fhir.keys_requested()) == sorted(slow)
    assert elapsed < 1.6, f"5 fetches of 0.4 s took {elapsed:.2f} s: not in parallel"


def test_every_key_of_a_call_is_fetched_at_once(fhir, httpserver):
    """With the default settings, all nine keys at the same time: none waits for a free fetch thread."""
    app = create_app({"hook_deadline": 5.0, "fhir_read_timeout": 3.0})
    client = app.test_client()
    for key in KEYS:
        fhir.faults[key] = _answer_after(fhir, key, 0.5)
    start = time.monotonic()
    resp = post(client, with_server(fhir, drop=tuple(KEYS)))
    elapsed = time.monotonic() - start
    app.extensions["cds_engine"].close()
    assert MINUS_4_1 in interpretation(resp)["summary"]
    assert sorted(fhir.keys_requested()) == sorted(KEYS)
    assert elapsed < 0.95, f"{len(KEYS)} fetches of 0.5 s took {elapsed:.2f} s: some waited for others"


# ---- the cards, as an EHR receives them ----

TOPICS = {"bmd-interpretation", "treatment", "therapy-management", "safety", "monitoring", "supportive-care"}


def check_cards(resp, response_validator) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in response_validator.iter_errors(body)]
    assert not errors, errors
    uuids = set()
    for c in body["cards"]:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", c["uuid"]), c["uuid"]
        uuids.add(c["uuid"])
        assert 0 < len(c["summary"]) < 140, c["summary"]
        src = c["source"]
        assert src["label"].strip() and re.match(r"https?://", src["url"]), src
        assert src["topic"]["code"] in TOPICS, src["topic"]
        assert c["indicator"] in ("info", "warning", "critical")
    assert len(uuids) == len(body["cards"]), "card uuids must be unique"
    return body["cards"]


def test_scenario_1_cards_validate_and_interpretation_is_critical(client, scenario_request, response_validator,
                                                                  httpserver):
    cards = check_cards(post(client, scenario_request(1)), response_validator)
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "bmd-interpretation"]
    assert card["indicator"] == "critical"
    assert MINUS_4_1 in card["summary"], card["summary"]
    assert "-4.1" not in card["summary"], "the minus sign must be U+2212"
    assert "lumbar spine" in card["summary"].lower()
    assert httpserver.log == []


def test_cards_get_fresh_uuids_on_every_call(client, scenario_request):
    body = scenario_request(1)
    first = {c["uuid"] for c in cards_of(post(client, body))}
    second = {c["uuid"] for c in cards_of(post(client, body))}
    assert first and second and not (first & second)


def test_scenario_4_is_within_the_expected_range_and_not_osteoporosis(client, scenario_request, response_validator):
    cards = check_cards(post(client, scenario_request(4)), response_validator)
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "bmd-interpretation"]
    assert "within the expected range for age" in card["summary"]
    assert card["indicator"] == "info"
    for c in cards:
        assert "osteoporosis" not in c["summary"].lower(), c["summary"]
        text = c.get("detail", "").split("**Sources**")[0]
        for claim in (r"\*\*Osteoporosis\*\*", r"^Osteoporosis", r"\bhas osteoporosis\b",
                      r"\bdiagnosis of osteoporosis\b(?! is not)", r"\bosteoporosis therapy is indicated\b"):
            assert not re.search(claim, text, re.IGNORECASE | re.MULTILINE), (claim, text)
        assert c["source"]["topic"]["code"] != "treatment", c["summary"]


@pytest.mark.parametrize("number", range(1, 14))
def test_every_scenario_answers_valid_cards(client, scenario_request, response_validator, number):
    check_cards(post(client, scenario_request(number)), response_validator)
