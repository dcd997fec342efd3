"""CORS for browser-based CDS clients (e.g. the CDS Hooks sandbox)."""
from __future__ import annotations

import pytest

from cds_service import create_app
from cds_service.services.patient_view import SERVICE_ID

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
ALLOWED = "https://sandbox.cds-hooks.org"
OTHER = "https://evil.example.com"


@pytest.fixture()
def client():
    return create_app({"hook_deadline": 2.0, "cors_origins": ALLOWED}).test_client()


def preflight(client, origin: str, url: str = SERVICE_URL, method: str = "POST",
              headers: str = "Authorization, Content-Type"):
    return client.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                        "Access-Control-Request-Headers": headers})


def header_set(value: str | None) -> set[str]:
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


def test_preflight_from_allowed_origin(client):
    resp = preflight(client, ALLOWED)
    assert resp.status_code in (200, 204), resp.get_data(as_text=True)
    assert resp.headers.get("Access-Control-Allow-Origin") == ALLOWED
    assert "post" in header_set(resp.headers.get("Access-Control-Allow-Methods"))
    assert {"authorization", "content-type"} <= header_set(resp.headers.get("Access-Control-Allow-Headers"))


def test_preflight_needs_no_token_and_runs_no_hook(client):
    # no Authorization header, no body: a preflight is answered before any hook logic
    resp = preflight(client, ALLOWED)
    assert resp.status_code in (200, 204)
    assert "OperationOutcome" not in resp.get_data(as_text=True)


def test_preflight_for_discovery(client):
    resp = preflight(client, ALLOWED, url="/cds-services", method="GET", headers="Content-Type")
    assert resp.status_code in (200, 204)
    assert resp.headers.get("Access-Control-Allow-Origin") == ALLOWED


def test_preflight_from_disallowed_origin_gets_no_allow_origin(client):
    resp = preflight(client, OTHER)
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.status_code < 500


def test_actual_get_from_allowed_origin_carries_allow_origin(client):
    resp = client.get("/cds-services", headers={"Origin": ALLOWED})
    assert resp.status_code == 200
    assert resp.headers.get("Access-Control-Allow-Origin") == ALLOWED


def test_actual_get_from_disallowed_origin_has_no_allow_origin(client):
    resp = client.get("/cds-services", headers={"Origin": OTHER})
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_error_answers_carry_allow_origin_too(client):
    # a browser can read the OperationOutcome only if the error answer has the CORS header
    resp = client.post(SERVICE_URL, data="{", content_type="application/json", headers={"Origin": ALLOWED})
    assert resp.status_code == 400
    assert resp.headers.get("Access-Control-Allow-Origin") == ALLOWED


def test_origin_lookalikes_are_not_allowed(client):
    for origin in ("https://sandbox.cds-hooks.org.evil.example.com", "http://sandbox.cds-hooks.org",
                   "https://evilsandbox.cds-hooks.org"):
        resp = preflight(client, origin)
        assert "Access-Control-Allow-Origin" not in resp.headers, origin


def test_several_configured_origins():
    client = create_app({"cors_origins": f"{ALLOWED}, https://ehr.example.org"}).test_client()
    for origin in (ALLOWED, "https://ehr.example.org"):
        assert preflight(client, origin).headers.get("Access-Control-Allow-Origin") == origin
    assert "Access-Control-Allow-Origin" not in preflight(client, OTHER).headers


def test_wildcard_allows_any_origin():
    client = create_app({"cors_origins": "*"}).test_client()
    resp = preflight(client, OTHER)
    assert resp.status_code in (200, 204)
    assert resp.headers.get("Access-Control-Allow-Origin") in ("*", OTHER)
    assert "post" in header_set(resp.headers.get("Access-Control-Allow-Methods"))
    assert "authorization" in header_set(resp.headers.get("Access-Control-Allow-Headers"))
    resp = client.get("/cds-services", headers={"Origin": "https://anything.example.net"})
    assert resp.headers.get("Access-Control-Allow-Origin") in ("*", "https://anything.example.net")


def _pna_preflight(client):
    return client.options("/cds-services/bone-health-patient-view", headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Private-Network": "true"})


def test_private_network_preflight_answered_when_configured():
    from cds_service import create_app

    on = _pna_preflight(create_app({"cors_origins": "https://sandbox.cds-hooks.org",
                                    "cors_private_network": True}).test_client())
    assert on.headers.get("Access-Control-Allow-Private-Network") == "true"
    off = _pna_preflight(create_app({"cors_origins": "https://sandbox.cds-hooks.org"}).test_client())
    assert off.headers.get("Access-Control-Allow-Private-Network", "false") == "false"
