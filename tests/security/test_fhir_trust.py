"""Which fhirServer the service may call with the access token."""
from __future__ import annotations

import json

import pytest
from werkzeug import Response

from cds_service import create_app
from cds_service.fhir.trust import prefix_matches, untrusted_reason
from cds_service.services.patient_view import SERVICE_ID
from tests.jwt_helpers import ISS, ec_key, issuers_file, token

from .conftest import BASE, bearer, secure_config

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
AUD = BASE + SERVICE_URL
ACCESS = "fhir-access-token-7c1e"


@pytest.fixture()
def fhir(httpserver, scenario_request):
    body = scenario_request(1)
    pid = body["context"]["patientId"]
    patient = body["prefetch"]["patient"]
    httpserver.expect_request(f"/fhir/Patient/{pid}").respond_with_handler(
        lambda r: Response(json.dumps(patient), content_type="application/fhir+json"))
    body = json.loads(json.dumps(body))
    del body["prefetch"]["patient"]
    body["fhirServer"] = httpserver.url_for("/fhir")
    body["fhirAuthorization"] = {"access_token": ACCESS, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    yield body
    httpserver.clear()


def call(tmp_path, body, issuers=None, **cfg):
    key = ec_key("f-1")
    path = issuers_file(tmp_path / "i.json", issuers or [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}]
                        if issuers is None else [dict(i, jwks={"keys": [key.public_jwk()]}) for i in issuers])
    app = create_app(secure_config(path, **cfg))
    try:
        return app.test_client().post(SERVICE_URL, data=json.dumps(body), content_type="application/json",
                                      headers=bearer(token(key, AUD)))
    finally:
        app.extensions["cds_engine"].close()


def diagnostics(resp):
    assert resp.status_code == 412, resp.get_data(as_text=True)
    issue = resp.get_json()["issue"][0]
    return issue["diagnostics"], issue.get("expression", [])


def test_off_the_allowlist_is_412_and_not_called(tmp_path, fhir, httpserver):
    resp = call(tmp_path, fhir, fhir_server_allowlist="https://ehr.example.org/fhir", allow_http_fhir=True)
    diag, where = diagnostics(resp)
    assert "not on the allowlist of trusted FHIR servers" in diag and "patient" in diag
    assert "fhirServer" in where
    assert httpserver.log == []


def test_no_allowlist_at_all_is_412(tmp_path, fhir, httpserver):
    diag, _ = diagnostics(call(tmp_path, fhir, allow_http_fhir=True))
    assert "not on the allowlist" in diag
    assert httpserver.log == []


def test_allowed_but_plain_http_is_412(tmp_path, fhir, httpserver):
    resp = call(tmp_path, fhir, fhir_server_allowlist=httpserver.url_for("/fhir"), allow_http_fhir=False)
    diag, _ = diagnostics(resp)
    assert "plain http" in diag
    assert httpserver.log == []


def test_allowed_prefix_with_http_allowed_is_fetched(tmp_path, fhir, httpserver):
    resp = call(tmp_path, fhir, fhir_server_allowlist=httpserver.url_for("/"), allow_http_fhir=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["cards"]
    [(req, _)] = httpserver.log
    assert req.headers.get("Authorization") == f"Bearer {ACCESS}"


def test_issuer_fhir_servers_allow_it(tmp_path, fhir, httpserver):
    resp = call(tmp_path, fhir, issuers=[{"iss": ISS, "fhir_servers": [httpserver.url_for("/fhir")]}],
                allow_http_fhir=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(httpserver.log) == 1


def test_another_issuers_fhir_servers_do_not(tmp_path, fhir, httpserver):
    resp = call(tmp_path, fhir, issuers=[{"iss": ISS}, {"iss": "https://other.example",
                                                       "fhir_servers": [httpserver.url_for("/fhir")]}],
                allow_http_fhir=True)
    diag, _ = diagnostics(resp)
    assert "not on the allowlist" in diag
    assert httpserver.log == []


def test_fully_prefetched_untrusted_server_is_200_without_a_call(tmp_path, scenario_request, httpserver):
    body = scenario_request(1)
    body["fhirServer"] = httpserver.url_for("/fhir")
    body["fhirAuthorization"] = {"access_token": ACCESS, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-service"}
    resp = call(tmp_path, body, fhir_server_allowlist="https://ehr.example.org/fhir", allow_http_fhir=False)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert httpserver.log == []


PREFIX = "https://ehr.example.org/fhir"


@pytest.mark.parametrize("url", ["https://ehr.example.org/fhir", "https://ehr.example.org/fhir/",
                                 "https://ehr.example.org/fhir/r4", "https://EHR.example.org/fhir/r4",
                                 "https://ehr.example.org:443/fhir"])
def test_prefix_matches(url):
    assert prefix_matches(PREFIX, url)
    assert untrusted_reason(url, [PREFIX], [], False) is None


@pytest.mark.parametrize("url", ["https://ehr.example.org.evil.test/fhir", "https://ehr.example.org/fhirx",
                                 "https://ehr.example.org:8443/fhir", "http://ehr.example.org/fhir",
                                 "https://evil.test/ehr.example.org/fhir", "https://ehr.example.org/",
                                 "https://ehr.example.org/fhi", "https://xehr.example.org/fhir",
                                 "https://ehr.example.org:abc/fhir"])
def test_look_alikes_do_not_match(url):
    assert not prefix_matches(PREFIX, url)
    assert untrusted_reason(url, [PREFIX], [], True) is not None


@pytest.mark.parametrize("url", ["https://ehr.example.org@evil.test/fhir",
                                 "https://user:pw@ehr.example.org/fhir",
                                 "https://ehr.example.org%40evil.test/fhir"])
def test_userinfo_is_refused(url):
    assert untrusted_reason(url, [PREFIX], [], True) is not None
    assert untrusted_reason(url, [PREFIX], [PREFIX], True) is not None


def test_http_and_scheme_rules():
    assert "plain http" in untrusted_reason("http://ehr.example.org/fhir", ["http://ehr.example.org/fhir"], [], False)
    assert untrusted_reason("http://ehr.example.org/fhir", ["http://ehr.example.org/fhir"], [], True) is None
    assert untrusted_reason("file:///etc/passwd", ["*"], [], True) is not None
    assert untrusted_reason("ftp://ehr.example.org/fhir", ["*"], [], True) is not None
    assert untrusted_reason("https://ehr.example.org/fhir", [], [PREFIX], False) is None
    assert untrusted_reason("https://ehr.example.org/fhir", [], [], False) is not None
    assert "*" not in [] and untrusted_reason("https://x.example/fhir", ["*"], [], False) is None


# ---- dot segments and encodings (issue "Hardening at the edges"): normalised before matching ----

R4 = "https://ehr.example.org/fhir/r4"
TRICKS = [R4 + "/../../admin", R4 + "/../r5", R4 + "/../r4/../../admin", R4 + "/%2e%2e/%2e%2e/admin",
          R4 + "/%2E%2e/admin", R4 + "/.%2e/admin", R4 + "/%2e./admin", R4 + "%2f..%2f..%2fadmin",
          R4 + "/..%2F..%2Fadmin", R4 + "%5c..%5cadmin", R4 + "\\..\\admin", R4 + "/..;/admin",
          R4 + "/..%3b/admin", R4 + "#/../../admin", R4 + "/%zz/x", "https://ehr.example.org%2efhir/r4"]


@pytest.mark.parametrize("url", TRICKS)
def test_dot_segment_and_encoding_tricks_are_refused(url):
    assert not prefix_matches(R4, url)
    assert untrusted_reason(url, [R4], [], False) is not None
    assert untrusted_reason(url, [], [R4], False) is not None


@pytest.mark.parametrize("url, normal", [(R4 + "/./", R4 + "/"), (R4 + "/x/..", R4 + "/"),
                                         (R4 + "/%7Ex/../Patient", R4 + "/Patient"),
                                         ("HTTPS://EHR.example.org/fhir/r4/a/./b/../c", R4 + "/a/c"),
                                         (R4 + "/Observation?code=a%2Fb", R4 + "/Observation?code=a%2Fb")])
def test_a_url_under_the_prefix_after_normalisation_is_allowed(url, normal):
    from cds_service.fhir.trust import normalize_url

    assert normalize_url(url) == normal
    assert prefix_matches(R4, url)


@pytest.mark.parametrize("suffix", ["/fhir/r4/../../admin", "/fhir/r4/%2e%2e/%2e%2e/admin", "/fhir/r4/..;/admin",
                                    "/fhir/r4%2f..%2f..%2fadmin"])
def test_fhir_server_escaping_the_prefix_is_412_and_not_called(tmp_path, fhir, httpserver, suffix):
    fhir["fhirServer"] = httpserver.url_for(suffix)
    resp = call(tmp_path, fhir, fhir_server_allowlist=httpserver.url_for("/fhir/r4"), allow_http_fhir=True)
    diag, where = diagnostics(resp)
    assert "fhirServer" in diag and "fhirServer" in where
    assert httpserver.log == [], "a request (with the access token) left the allowlist"


def test_fhir_server_with_dot_segments_inside_the_prefix_is_called_at_its_normal_form(tmp_path, fhir, httpserver):
    fhir["fhirServer"] = httpserver.url_for("/fhir/x/../")
    resp = call(tmp_path, fhir, fhir_server_allowlist=httpserver.url_for("/fhir"), allow_http_fhir=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [(req, _)] = httpserver.log
    assert req.path.startswith("/fhir/Patient/")


def _labs_with_next(body, url):
    labs = json.loads(json.dumps(body["prefetch"]["labs"]))
    labs["link"] = [{"relation": "next", "url": url}]
    body["prefetch"]["labs"] = labs
    return body


def _labs_not_read(resp) -> bool:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return any("could not be read" in (c.get("detail") or "") and "labs" in c["detail"]
               for c in resp.get_json()["cards"])


@pytest.mark.parametrize("suffix", ["/fhir/../admin/page2", "/fhir/%2e%2e/admin/page2", "/other/page2",
                                    "/fhir/page%2f..%2f..%2fadmin", "/fhir/..;/admin/page2"])
def test_next_link_off_the_allowlist_is_not_followed(tmp_path, fhir, httpserver, suffix):
    body = _labs_with_next(fhir, httpserver.url_for(suffix))
    resp = call(tmp_path, body, fhir_server_allowlist=httpserver.url_for("/fhir"), allow_http_fhir=True)
    assert _labs_not_read(resp)
    assert [r.path for r, _ in httpserver.log] == [f"/fhir/Patient/{body['context']['patientId']}"]


@pytest.mark.parametrize("suffix", ["/fhir/_page/labs-2", "/fhir/x/../_page/labs-2"])
def test_next_link_on_the_allowed_base_is_followed(tmp_path, fhir, httpserver, suffix):
    more = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    httpserver.expect_request("/fhir/_page/labs-2").respond_with_handler(
        lambda r: Response(json.dumps(more), content_type="application/fhir+json"))
    body = _labs_with_next(fhir, httpserver.url_for(suffix))
    resp = call(tmp_path, body, fhir_server_allowlist=httpserver.url_for("/fhir"), allow_http_fhir=True)
    assert not _labs_not_read(resp)
    page = [r for r, _ in httpserver.log if r.path == "/fhir/_page/labs-2"]
    assert len(page) == 1 and page[0].headers.get("Authorization") == f"Bearer {ACCESS}"


def test_medication_reference_escaping_the_base_is_not_read():
    from cds_service.fhir.medications import ANOTHER_SERVER, plan_medication_reads

    def record(ref):
        return {"resourceType": "MedicationRequest", "medicationReference": {"reference": ref}}

    plan = plan_medication_reads([record(R4 + "/../../admin/Medication/m1"), record(R4 + "/%2e%2e/x/Medication/m2"),
                                  record(R4 + "/x/../Medication/m3")], R4, 50)
    assert plan.reads == ["Medication/m3"]
    assert set(plan.skipped.values()) == {ANOTHER_SERVER}
