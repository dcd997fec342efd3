"""The card console's page and JSON API, through the Flask test client."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from cds_service import create_app
from cds_service.services.patient_view import SERVICE_ID
from fhir_samples import scenarios


@pytest.fixture()
def console():
    return create_app({"console": True}).test_client()


def test_console_is_off_unless_turned_on():
    client = create_app({"console": False}).test_client()
    assert client.get("/console/").status_code == 404
    assert client.get("/console/api/samples").status_code == 404
    assert client.post("/console/api/markdown", json={"texts": ["x"]}).status_code == 404


def test_page_and_its_own_files(console):
    r = console.get("/console/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert 'src="static/console.js"' in page and 'href="static/console.css"' in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing from the internet
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    js = console.get("/console/static/console.js")
    assert js.status_code == 200 and "textContent" in js.get_data(as_text=True)
    assert console.get("/console/static/console.css").status_code == 200


def test_samples_lists_every_example_patient(console):
    r = console.get("/console/api/samples")
    assert r.status_code == 200
    samples = r.get_json()["samples"]
    assert [s["number"] for s in samples] == [s.number for s in scenarios.SCENARIOS]
    assert samples[0]["patient"] == "bone-01" and "−4.1" in samples[0]["title"]


def test_request_for_a_sample_is_a_full_patient_view_request(console):
    r = console.post("/console/api/request", json={"sample": 1})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    req = data["request"]
    assert req["hook"] == "patient-view" and req["context"]["patientId"] == "bone-01"
    service = create_app({"console": True}).extensions["cds_engine"].services[SERVICE_ID]
    assert set(req["prefetch"]) == set(service.prefetch)
    assert req["prefetch"]["patient"]["resourceType"] == "Patient"
    assert all(v is not None for v in req["prefetch"].values())
    dxa = [e["resource"]["id"] for e in req["prefetch"]["dxa"]["entry"]]
    assert "bone-01-dxa-1" in dxa
    # built for today: the DXA exam of scenario 1 is two weeks old
    exam = (date.today() - timedelta(days=14)).isoformat()
    assert sorted((t["site_label"], t["date"], t["value"]) for t in data["tscores"]) == [
        ("lumbar spine (L1-L4)", exam, -4.1), ("total hip", exam, -2.9)]
    # and the service takes it as an EHR's request
    cards = console.post(f"/cds-services/{SERVICE_ID}", json=req)
    assert cards.status_code == 200
    assert any(c["indicator"] == "critical" and "−4.1" in c["summary"] for c in cards.get_json()["cards"])


def test_request_for_a_pasted_bundle_gives_the_t_scores_over_time(console):
    bundle = scenarios.build(6, date.today())
    r = console.post("/console/api/request", json={"bundle": bundle, "patient": "bone-06"})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["request"]["context"]["patientId"] == "bone-06"
    spine = [(t["date"], t["value"]) for t in data["tscores"] if t["site"] == "lumbar_spine"]
    assert [v for _, v in spine] == [-2.6, -2.0]  # oldest first
    assert spine[0][0] < spine[1][0]
    assert {t["site_label"] for t in data["tscores"]} == {"lumbar spine (L1-L4)", "total hip"}
    # the patient id is optional when the Bundle has one Patient
    r2 = console.post("/console/api/request", json={"bundle": bundle})
    assert r2.status_code == 200 and r2.get_json()["request"]["context"]["patientId"] == "bone-06"


def _obs_with_bad_code():
    b = scenarios.build(1, date.today())
    for e in b["entry"]:
        if e["resource"]["resourceType"] == "Observation":
            e["resource"]["code"] = {"coding": 5}
    return b


def _patient_without_id():
    b = scenarios.build(1, date.today())
    for e in b["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["id"] = 5
    return b


@pytest.mark.parametrize("body, words", [
    ({"bundle": {"resourceType": "Patient", "id": "x"}}, "not a FHIR Bundle"),
    ({"bundle": {"resourceType": "Bundle"}}, "no entry"),
    ({"bundle": {"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}}, "entry[0] has no resource"),
    ({"bundle": {"resourceType": "Bundle", "entry": []}}, "no Patient"),
    ({"bundle": "text"}, "not a FHIR Bundle"),
    ({"bundle": scenarios.build(1), "patient": "someone-else"}, "no Patient with id"),
    ({"bundle": scenarios.build(1), "patient": 7}, "patient must be"),
    ({"bundle": _obs_with_bad_code()}, "invalid Bundle"),
    ({"bundle": _patient_without_id()}, "the Patient has no id"),
    ({"sample": 99}, "sample must be"),
    ({"sample": True}, "sample must be"),
    ({}, "send"),
    ([1, 2], "JSON object"),
])
def test_a_bad_bundle_is_a_400_with_a_clear_message(console, body, words):
    r = console.post("/console/api/request", json=body)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert words in r.get_json()["error"]


def test_a_body_that_is_not_json_is_a_400(console):
    r = console.post("/console/api/request", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["error"]
    r = console.post("/console/api/request", data="sample=1", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 400 and "application/json" in r.get_json()["error"]


def test_markdown_renders_details_and_never_passes_html(console):
    texts = ["**Osteoporosis** — very high risk.\n\n- lumbar spine\n- total hip\n",
             "<script>alert('x')</script> <img src=x onerror=alert(1)> [a](javascript:alert(1))",
             "| site | T |\n|---|---|\n| spine | −4.1 |\n"]
    r = console.post("/console/api/markdown", json={"texts": texts})
    assert r.status_code == 200
    html = r.get_json()["html"]
    assert len(html) == 3
    assert "<strong>Osteoporosis</strong>" in html[0]
    assert "<ul>" in html[0] and "<li>lumbar spine</li>" in html[0]
    assert "<script" not in html[1] and "&lt;script&gt;" in html[1]
    assert "<img" not in html[1] and "&lt;img" in html[1]
    assert 'href="javascript' not in html[1]
    assert "<table>" in html[2] and "<td>−4.1</td>" in html[2]


@pytest.mark.parametrize("body", [{}, {"texts": "x"}, {"texts": [1]}, {"texts": ["x"] * 201}])
def test_markdown_rejects_bad_input(console, body):
    r = console.post("/console/api/markdown", json=body)
    assert r.status_code == 400 and r.get_json()["error"]


# -- medication histories and the therapy timeline (rules §6.1) ----------------------------------------
def therapy_case(case_id: str) -> dict:
    from fhir_samples import therapy

    return therapy.build(case_id, date.today())


def test_samples_list_the_medication_histories(console):
    from fhir_samples import therapy

    histories = console.get("/console/api/samples").get_json()["histories"]
    assert [h["id"] for h in histories] == [c.id for c in therapy.CASES]
    assert all(h["title"] for h in histories)


def test_request_for_a_history_shows_the_timeline_the_rules_read(console):
    r = console.post("/console/api/request", json={"history": "therapy-01-denosumab-on-schedule"})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["request"]["prefetch"]["medicationAdministrations"]["entry"]
    [dmab] = [d for d in data["therapies"]["drugs"] if d["drug"] == "denosumab"]
    assert dmab["state"] == "on therapy" and dmab["mode"] == "dose"
    bundle = therapy_case("therapy-01-denosumab-on-schedule")
    given = sorted(e["resource"]["effectiveDateTime"][:10] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "MedicationAdministration")
    assert dmab["doses"] == len(given) == 6 and dmab["last_dose"] == given[-1] and dmab["first"] == given[0]
    assert all(e["dose"] for e in dmab["exposures"]) and len(dmab["exposures"]) == 6


def test_request_for_a_history_lists_medication_records_not_used(console):
    data = console.post("/console/api/request", json={"history": "therapy-50-unreadable-medication-records"}).get_json()
    reasons = " ".join(n["reason"] for n in data["therapies"]["not_used"])
    assert "not a FHIR R4 MedicationRequest status" in reasons and "without a date" in reasons


@pytest.mark.parametrize("history", ["therapy-99-none", 3, None, ""])
def test_an_unknown_history_is_a_400(console, history):
    r = console.post("/console/api/request", json={"history": history})
    assert r.status_code == 400 and "history" in r.get_json()["error"]


def test_the_console_marks_its_hook_calls_in_the_audit(tmp_path):
    """The page sends X-CDS-Console: 1 with its calls; with the console on, the audit records the call
    as the console's (the feedback report leaves it out); an EHR's call, without it, is not marked."""
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    client = create_app({"console": True, "database_url": url}).test_client()
    js = client.get("/console/static/console.js").get_data(as_text=True)
    assert '"X-CDS-Console": "1"' in js
    req = client.post("/console/api/request", json={"sample": 1}).get_json()["request"]
    assert client.post(f"/cds-services/{SERVICE_ID}", json=req, headers={"X-CDS-Console": "1"}).status_code == 200
    assert client.post(f"/cds-services/{SERVICE_ID}", json=req).status_code == 200
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            origins = sorted(r[0] or "ehr" for r in conn.execute(text("SELECT origin FROM hook_calls")))
    finally:
        eng.dispose()
    assert origins == ["console", "ehr"]
