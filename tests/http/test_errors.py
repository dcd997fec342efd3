"""Every error answer is a FHIR OperationOutcome with the right status, and never a traceback."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cds_service import create_app
from cds_service.services.patient_view import SERVICE_ID

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
MAX_BODY = 20_000
AUTH = {"access_token": "tok-123", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
        "subject": "cds-service"}


@pytest.fixture()
def client():
    app = create_app({"max_body_bytes": MAX_BODY, "hook_deadline": 2.0, "fhir_read_timeout": 0.5,
                      "cors_origins": "https://sandbox.cds-hooks.org"})
    return app.test_client()


@pytest.fixture()
def body(scenario_request) -> dict[str, Any]:
    b = scenario_request(1)
    assert len(json.dumps(b)) < MAX_BODY, "the valid request must fit in max_body_bytes"
    return b


def post(client, data: Any, url: str = SERVICE_URL, content_type: str = "application/json"):
    raw = data if isinstance(data, (str, bytes)) else json.dumps(data)
    return client.post(url, data=raw, content_type=content_type)


def outcome(resp, status: int) -> dict[str, Any]:
    """Check the common shape of an error answer and return its first issue."""
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert resp.mimetype == "application/fhir+json", resp.headers.get("Content-Type")
    assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
    body = json.loads(text)
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    assert isinstance(issue.get("code"), str) and issue["code"]
    assert isinstance(issue.get("diagnostics"), str) and issue["diagnostics"].strip()
    return issue


def mentions(issue: dict[str, Any], text: str) -> bool:
    return text in issue["diagnostics"] or any(text in e for e in issue.get("expression", []))


def test_valid_request_is_200(client, body):
    # the baseline every error case below is a variation of
    resp = post(client, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["cards"]


def test_malformed_json_is_400_with_line_and_column(client):
    resp = post(client, '{\n  "hook": "patient-view",\n  "hookInstance": \n}')
    issue = outcome(resp, 400)
    assert "line 4" in issue["diagnostics"] and "column" in issue["diagnostics"], issue


def test_body_that_is_a_json_array_is_400(client, body):
    issue = outcome(post(client, [body]), 400)
    assert "object" in issue["diagnostics"]


@pytest.mark.parametrize("value", ["null", '"text"', "42"])
def test_body_that_is_not_an_object_is_400(client, value):
    outcome(post(client, value), 400)


def test_missing_hook_instance_is_400(client, body):
    del body["hookInstance"]
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "hookInstance")


def test_missing_patient_id_is_400(client, body):
    del body["context"]["patientId"]
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "patientId")


@pytest.mark.parametrize("pid", ["bone-01/../Patient/x", "bone-01&_include=*", "../bone-01", "bone 01", ""])
def test_patient_id_that_could_change_a_query_is_400(client, body, pid):
    body["context"]["patientId"] = pid
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "context.patientId"), issue


def test_fhir_authorization_without_fhir_server_is_400(client, body):
    body.pop("fhirServer", None)
    body["fhirAuthorization"] = dict(AUTH)
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "fhirServer"), issue


def test_token_type_other_than_bearer_is_400(client, body):
    body["fhirServer"] = "https://fhir.example.org/r4"
    body["fhirAuthorization"] = dict(AUTH, token_type="MAC")
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "token_type"), issue


def test_hook_mismatch_is_400(client, body):
    body["hook"] = "order-select"
    issue = outcome(post(client, body), 400)
    assert "order-select" in issue["diagnostics"] and "patient-view" in issue["diagnostics"]
    assert mentions(issue, "hook")


def test_unknown_service_is_404(client, body):
    issue = outcome(post(client, body, url="/cds-services/no-such-service"), 404)
    assert issue["code"] == "not-found"


def test_unknown_path_is_404(client):
    outcome(client.get("/no-such-path"), 404)


def test_get_on_a_service_url_is_405(client):
    resp = client.get(SERVICE_URL)
    outcome(resp, 405)
    assert "POST" in resp.headers.get("Allow", "")


def test_put_on_discovery_is_405(client):
    resp = client.put("/cds-services", data="{}", content_type="application/json")
    outcome(resp, 405)
    assert "GET" in resp.headers.get("Allow", "")


def test_text_plain_is_415(client, body):
    issue = outcome(post(client, body, content_type="text/plain"), 415)
    assert "application/json" in issue["diagnostics"]


def test_no_content_type_is_415(client, body):
    resp = client.post(SERVICE_URL, data=json.dumps(body).encode())
    outcome(resp, 415)


def test_fhir_json_content_type_is_accepted(client, body):
    resp = post(client, body, content_type="application/fhir+json; charset=utf-8")
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_body_over_max_body_bytes_is_413(client, body):
    body["context"]["padding"] = "x" * (MAX_BODY + 1)
    outcome(post(client, body), 413)


def test_body_over_max_body_bytes_on_unknown_service_is_still_an_outcome(client):
    resp = post(client, "x" * (MAX_BODY + 10), url="/cds-services/no-such-service")
    assert resp.status_code in (404, 413)
    outcome(resp, resp.status_code)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(client, body, constant):
    raw = json.dumps(body)
    raw = raw.replace('"hookInstance": ', f'"x": {constant}, "hookInstance": ', 1)
    assert constant in raw
    issue = outcome(post(client, raw), 400)
    assert constant in issue["diagnostics"]


@pytest.mark.parametrize("raw", ["[" * 19_000, '{"a":' * 3_000 + "1" + "}" * 3_000])
def test_json_nested_too_deeply_is_400(client, raw):
    # the parser's recursion limit must give a 400 like any other unreadable body, not a 500
    issue = outcome(post(client, raw), 400)
    assert "JSON" in issue["diagnostics"]


def test_body_not_utf8_is_400(client):
    outcome(post(client, b'{"hook": "patient-view", "x": "\xff\xfe"}'), 400)


def test_prefetch_patient_that_is_an_observation_is_400(client, body):
    obs = body["prefetch"]["dxa"]["entry"][0]["resource"]
    body["prefetch"]["patient"] = copy.deepcopy(obs)
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "prefetch.patient") and "Observation" in issue["diagnostics"], issue


def test_prefetch_bundle_entry_not_a_list_is_400(client, body):
    body["prefetch"]["labs"]["entry"] = {"resource": body["prefetch"]["labs"]["entry"][0]["resource"]}
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "prefetch.labs.entry"), issue


def test_prefetch_entry_without_resource_is_400(client, body):
    body["prefetch"]["dxa"]["entry"].append({"fullUrl": "urn:uuid:x"})
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "prefetch.dxa.entry["), issue


def test_prefetch_value_that_is_not_a_resource_is_400(client, body):
    body["prefetch"]["conditions"] = {"entry": []}
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "prefetch.conditions"), issue


def test_prefetch_value_that_is_a_list_is_400(client, body):
    body["prefetch"]["conditions"] = []
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "conditions"), issue


def test_patient_id_different_from_prefetched_patient_is_400(client, body):
    body["context"]["patientId"] = "someone-else"
    issue = outcome(post(client, body), 400)
    assert "someone-else" in issue["diagnostics"] and mentions(issue, "prefetch.patient"), issue


def test_missing_keys_without_fhir_server_is_412(client, body):
    del body["prefetch"]["labs"]
    del body["prefetch"]["conditions"]
    issue = outcome(post(client, body), 412)
    assert "labs" in issue["diagnostics"] and "conditions" in issue["diagnostics"]
    assert set(issue.get("expression", [])) >= {"prefetch.labs", "prefetch.conditions"}


def test_context_that_is_not_an_object_is_400(client, body):
    body["context"] = "bone-01"
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "context")


def test_fhir_server_that_is_not_http_is_400(client, body):
    body["fhirServer"] = "file:///etc/passwd"
    issue = outcome(post(client, body), 400)
    assert mentions(issue, "fhirServer")


@pytest.mark.parametrize("url", ["http://[::1/fhir", "http://127.0.0.1:notaport/fhir"])
def test_unparsable_fhir_server_is_a_400(client, scenario_request, url):
    body = scenario_request(1)
    body["fhirServer"] = url
    r = client.post("/cds-services/bone-health-patient-view", json=body)
    assert r.status_code == 400
    assert r.get_json(force=True)["issue"][0]["expression"] == ["fhirServer"]


def post_chunked(client, raw: bytes, url: str = SERVICE_URL):
    """A body sent with Transfer-Encoding: chunked and no Content-Length, as a WSGI server that
    de-chunks it hands it over (wsgi.input_terminated)."""
    import io

    return client.post(url, input_stream=io.BytesIO(raw), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})


@pytest.mark.parametrize("url", [SERVICE_URL, SERVICE_URL + "/feedback"])
def test_chunked_body_over_max_body_bytes_is_413(client, body, url):
    body["context"]["padding"] = "x" * (MAX_BODY + 1)
    issue = outcome(post_chunked(client, json.dumps(body).encode(), url), 413)
    assert issue["code"] == "too-long" and "too large" in issue["diagnostics"]


def test_chunked_body_within_max_body_bytes_is_read_whole(client, body):
    resp = post_chunked(client, json.dumps(body).encode())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    raw = json.dumps(body).encode()
    exact = raw[:-1] + b" " * (MAX_BODY - len(raw)) + raw[-1:]  # exactly the limit: accepted
    assert len(exact) == MAX_BODY
    assert post_chunked(client, exact).status_code == 200


def test_content_length_over_max_body_bytes_is_413_on_feedback(client):
    outcome(post(client, "x" * (MAX_BODY + 1), url=SERVICE_URL + "/feedback"), 413)


def test_chunked_body_over_max_body_bytes_is_413_over_a_real_socket(body):
    """Through a real HTTP server (werkzeug's, which de-chunks the body as gunicorn does)."""
    import socket
    import threading

    from werkzeug.serving import make_server

    app = create_app({"max_body_bytes": MAX_BODY, "hook_deadline": 2.0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body["context"]["padding"] = "x" * (MAX_BODY + 1)
        raw = json.dumps(body).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + 4096]), raw[i:i + 4096]) for i in range(0, len(raw), 4096))
        request = (f"POST {SERVICE_URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
                chunk = sock.recv(65536)  # the response is read by its Content-Length: the server
                if not chunk:             # may keep the connection open after a refused body
                    break
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert json.loads(payload)["resourceType"] == "OperationOutcome"
    finally:
        server.shutdown()
        thread.join(5)


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 1 << 30
