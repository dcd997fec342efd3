"""A misbehaving FHIR server: the hook still answers, in time, and never with a 500.

A failed non-required key (labs, conditions, ...) gives 200 with a card whose detail names the
key; a failed required key (patient, dxa) gives 412 naming the key. The token never leaves the
fhirServer's origin.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from werkzeug import Response

from cds_service import create_app
from tests.http.fake_fhir import (
    MINUS_4_1,
    SERVICE_URL,
    TOKEN,
    FakeFhir,
    fhir_json,
    oo,
    serve,
    with_server,
)

HOOK_DEADLINE = 2.0
READ_TIMEOUT = 0.5
MARGIN = 1.0
OPTIONAL = ["labs", "conditions", "medicationRequests"]
REQUIRED = ["patient", "dxa"]


@pytest.fixture(scope="module")
def make_httpserver():
    """This module's FHIR server: threaded, so that a slow answer does not hold up the others."""
    yield from serve()


@pytest.fixture(scope="module")
def other_server():
    """Another origin (same address, other port): nothing may be sent here."""
    yield from serve()


@pytest.fixture()
def other(other_server):
    other_server.clear()
    other_server.expect_request(re.compile(".*")).respond_with_json(
        {"resourceType": "Bundle", "type": "searchset", "entry": []})
    yield other_server
    other_server.clear()


@pytest.fixture()
def client():
    app = create_app({"max_body_bytes": 200_000, "hook_deadline": HOOK_DEADLINE, "fhir_read_timeout": READ_TIMEOUT,
                      "cors_origins": "https://sandbox.cds-hooks.org"})
    yield app.test_client()
    app.extensions["cds_engine"].close()


def timed_post(client, body: Any, deadline: float = HOOK_DEADLINE):
    start = time.monotonic()
    resp = client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json")
    elapsed = time.monotonic() - start
    text = resp.get_data(as_text=True)
    assert resp.status_code != 500, text
    assert elapsed < deadline + MARGIN, f"answered after {elapsed:.2f} s"
    assert TOKEN not in text, "the access token must never be echoed"
    assert "Traceback" not in text
    return resp


def expect_card_naming(resp, key: str) -> dict[str, Any]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [card] = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "bmd-interpretation"]
    # the interpretation itself does not depend on the failed key
    assert card["indicator"] == "critical" and MINUS_4_1 in card["summary"]
    assert re.search(rf"\b{key}\b[^\n]*could not be read", card["detail"]), card["detail"]
    return card


def expect_412_naming(resp, key: str) -> dict[str, Any]:
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert key in issue["diagnostics"], issue
    assert f"prefetch.{key}" in issue.get("expression", []), issue
    return issue


# ---- the faults: each is (fhir, other server) → a handler for one key ----

def f_timeout(fhir, other):
    def h(request):
        fhir.sleep(READ_TIMEOUT * 3)
        return fhir_json(fhir.data[fhir.key_for(request)])
    return h


def f_status(status):
    def make(fhir, other):
        return lambda request: fhir_json(oo("exception", f"status {status}"), status)
    return make


def f_malformed_json(fhir, other):
    return lambda request: Response('{"resourceType": "Bundle", "entry": [', status=200,
                                    content_type="application/fhir+json")


def f_html(fhir, other):
    return lambda request: Response("<html><body>Sign in</body></html>", status=200, content_type="text/html")


def f_not_fhir(fhir, other):
    return lambda request: fhir_json({"results": [], "count": 0})


def f_json_array(fhir, other):
    return lambda request: fhir_json([{"resourceType": "Patient", "id": fhir.pid}])


def f_outcome_200(fhir, other):
    return lambda request: fhir_json(oo("too-costly", "search too costly"))


def f_bad_bundle(fhir, other):
    return lambda request: fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {}}})


def f_redirect(fhir, other):
    def h(request):
        return Response("", status=302, headers={"Location": other.url_for(request.full_path)})
    return h


def f_next_loop(fhir, other):
    def h(request):
        key = fhir.key_for(request)
        page = dict(fhir.data[key]) if key != "patient" else {"resourceType": "Bundle", "type": "searchset"}
        page["link"] = [{"relation": "next", "url": request.url}]
        return fhir_json(page)
    return h


def f_next_abab(fhir, other):
    """page 1 → page 2 → page 1 → ..."""
    def page2(request):
        return fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [],
                          "link": [{"relation": "next", "url": fhir.base + "/_loop/1"}]})

    def page1(request):
        return fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [],
                          "link": [{"relation": "next", "url": fhir.base + "/_loop/2"}]})

    fhir.pages["/fhir/_loop/1"] = page1
    fhir.pages["/fhir/_loop/2"] = page2
    return page1


def f_next_other_host(fhir, other):
    def h(request):
        key = fhir.key_for(request)
        page = dict(fhir.data[key]) if key != "patient" else {"resourceType": "Bundle", "type": "searchset"}
        page["link"] = [{"relation": "next", "url": other.url_for("/fhir" + request.full_path[len("/fhir"):])}]
        return fhir_json(page)
    return h


def f_endless_pages(fhir, other):
    """Every page links to a new one."""
    counter = {"n": 0}

    def h(request):
        counter["n"] += 1
        return fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [],
                          "link": [{"relation": "next", "url": f"{fhir.base}/_endless?page={counter['n']}"}]})

    fhir.pages["/fhir/_endless"] = h
    return h


def f_trickle(fhir, other):
    """Answers byte by byte, each within the read timeout, the whole far beyond the deadline."""
    def h(request):
        def body():
            yield b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
            for _ in range(int(HOOK_DEADLINE * 10)):
                if fhir.release.wait(READ_TIMEOUT / 3):
                    return
                yield b" "
            yield b"]}"
        return Response(body(), status=200, content_type="application/fhir+json", direct_passthrough=True)
    return h


FAULTS = {
    "timeout": f_timeout,
    "http-401": f_status(401),
    "http-403": f_status(403),
    "http-404": f_status(404),
    "http-500": f_status(500),
    "http-503": f_status(503),
    "malformed-json": f_malformed_json,
    "html": f_html,
    "json-not-fhir": f_not_fhir,
    "json-array": f_json_array,
    "outcome-200": f_outcome_200,
    "bundle-entry-not-list": f_bad_bundle,
    "redirect-302": f_redirect,
    "next-loop-same-page": f_next_loop,
    "next-loop-two-pages": f_next_abab,
    "next-other-host": f_next_other_host,
    "next-endless": f_endless_pages,
    "trickle": f_trickle,
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("key", OPTIONAL)
def test_optional_key_failure_gives_a_card_naming_it(client, fhir, other, fault, key):
    fhir.faults[key] = FAULTS[fault](fhir, other)
    resp = timed_post(client, with_server(fhir, drop=(key,)))
    expect_card_naming(resp, key)
    assert key in fhir.keys_requested(), "the key was not fetched"
    assert other.log == [], "a request went to another origin"


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("key", REQUIRED)
def test_required_key_failure_is_412_naming_it(client, fhir, other, fault, key):
    fhir.faults[key] = FAULTS[fault](fhir, other)
    resp = timed_post(client, with_server(fhir, drop=(key,)))
    expect_412_naming(resp, key)
    assert key in fhir.keys_requested(), "the key was not fetched"
    assert other.log == [], "a request went to another origin"


def test_failures_of_several_keys_are_all_named(client, fhir, other):
    fhir.faults["labs"] = f_status(500)(fhir, other)
    fhir.faults["conditions"] = f_timeout(fhir, other)
    fhir.faults["medicationStatements"] = f_malformed_json(fhir, other)
    resp = timed_post(client, with_server(fhir, drop=("labs", "conditions", "medicationStatements")))
    for key in ("labs", "conditions", "medicationStatements"):
        expect_card_naming(resp, key)


# ---- a prefetched Bundle whose next page misbehaves ----

def prefetched_with_next(fhir: FakeFhir, key: str, url: str) -> dict[str, Any]:
    bundle = json.loads(json.dumps(fhir.data[key]))
    bundle["link"] = [{"relation": "next", "url": url}]
    return bundle


@pytest.mark.parametrize("key", ["labs", "dxa"])
def test_prefetched_next_link_to_another_host_is_not_followed(client, fhir, other, key):
    url = other.url_for("/fhir/Observation?page=2")
    resp = timed_post(client, with_server(fhir, **{key: prefetched_with_next(fhir, key, url)}))
    if key == "dxa":
        expect_412_naming(resp, key)
    else:
        expect_card_naming(resp, key)
    assert other.log == [], "the next link to another origin was followed"
    assert fhir.seen == []


def test_prefetched_next_link_with_userinfo_trick_is_not_followed(client, fhir, other):
    # the netloc names the fhirServer as user info; the host is the other server
    host = fhir.base.split("//", 1)[1].split("/", 1)[0]
    url = f"http://{host}@127.0.0.1:{other.port}/fhir/page2"
    resp = timed_post(client, with_server(fhir, labs=prefetched_with_next(fhir, "labs", url)))
    expect_card_naming(resp, "labs")
    assert other.log == []


@pytest.mark.parametrize("fault", ["http-401", "http-500", "timeout", "malformed-json", "redirect-302",
                                   "next-loop-same-page", "next-other-host"])
def test_prefetched_next_page_failure(client, fhir, other, fault):
    handler = FAULTS[fault](fhir, other)
    fhir.pages["/fhir/_page/labs-2"] = lambda request: (
        handler(request) if fault not in ("next-loop-same-page", "next-other-host")
        else _page_with_next(request, fhir, other, fault))
    body = with_server(fhir, labs=prefetched_with_next(fhir, "labs", fhir.base + "/_page/labs-2"))
    resp = timed_post(client, body)
    expect_card_naming(resp, "labs")
    assert other.log == []
    assert fhir.paths_requested()[0].startswith("/fhir/_page/labs-2")


def _page_with_next(request, fhir, other, fault):
    url = request.url if fault == "next-loop-same-page" else other.url_for("/fhir/_page/labs-3")
    return fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [],
                      "link": [{"relation": "next", "url": url}]})


def test_deadline_bounds_the_hook_when_read_timeout_is_longer(fhir, other):
    # a read timeout beyond the hook deadline: the deadline wins
    app = create_app({"hook_deadline": 1.0, "fhir_read_timeout": 10.0})
    client = app.test_client()
    fhir.faults["labs"] = lambda request: (fhir.sleep(5), fhir_json(fhir.data["labs"]))[1]
    fhir.faults["dxa"] = lambda request: (fhir.sleep(5), fhir_json(fhir.data["dxa"]))[1]
    try:
        resp = timed_post(client, with_server(fhir, drop=("labs",)), deadline=1.0)
        expect_card_naming(resp, "labs")
        resp = timed_post(client, with_server(fhir, drop=("dxa",)), deadline=1.0)
        expect_412_naming(resp, "dxa")
    finally:
        fhir.release.set()
        app.extensions["cds_engine"].close()


def test_unreachable_fhir_server(client, fhir, other):
    # a port with nothing listening: connection refused, answered at once
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    body = with_server(fhir, drop=("labs",))
    body["fhirServer"] = f"http://127.0.0.1:{port}/fhir"
    expect_card_naming(timed_post(client, body), "labs")
    body = with_server(fhir, drop=("dxa",))
    body["fhirServer"] = f"http://127.0.0.1:{port}/fhir"
    expect_412_naming(timed_post(client, body), "dxa")


def test_patient_read_returning_another_resource_type_is_412(client, fhir, other):
    fhir.faults["patient"] = lambda request: fhir_json(fhir.data["dxa"]["entry"][0]["resource"])
    expect_412_naming(timed_post(client, with_server(fhir, drop=("patient",))), "patient")


@pytest.mark.parametrize("pid", ["..", "."])
def test_patient_id_that_is_a_dot_segment_never_reads_another_path(client, fhir, other, httpserver, pid):
    # the id pattern allows "." and ".."; "Patient/.." would read the server's base URL instead
    body = with_server(fhir, drop=("patient", "labs"))
    body["context"]["patientId"] = pid
    resp = timed_post(client, body)
    assert resp.status_code in (400, 412), resp.get_data(as_text=True)
    assert "patient" in resp.get_json()["issue"][0]["diagnostics"].lower()
    for r, _ in httpserver.log:
        assert r.path.rstrip("/") not in ("/fhir", "", "/fhir/Patient"), r.path
        assert re.fullmatch(r"/fhir/(Observation|Condition|MedicationRequest|MedicationStatement)", r.path), r.path
