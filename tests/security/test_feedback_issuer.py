"""Feedback is taken only from the client (token iss) whose hook call produced the card."""
from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from cds_service import create_app
from tests.conftest import SERVICE_URL
from tests.jwt_helpers import ISS, ec_key, issuers_file, token

from .conftest import BASE, bearer, secure_config

OTHER_ISS = "https://other-ehr.test.example"
FEEDBACK_URL = SERVICE_URL + "/feedback"


def _count(url: str, sql: str) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        eng.dispose()


def test_feedback_from_another_issuer_is_refused(tmp_path, scenario_request):
    a, b = ec_key("iss-a"), ec_key("iss-b")
    trusted = issuers_file(tmp_path / "two.json", [{"iss": ISS, "jwks": {"keys": [a.public_jwk()]}},
                                                   {"iss": OTHER_ISS, "jwks": {"keys": [b.public_jwk()]}}])
    db = f"sqlite:///{tmp_path / 'cds.db'}"
    app = create_app(secure_config(trusted, database_url=db))
    client = app.test_client()

    def post(key, iss, url, body):
        return client.post(url, data=json.dumps(body), content_type="application/json",
                           headers=bearer(token(key, BASE + url, iss=iss)))

    r = post(a, ISS, SERVICE_URL, scenario_request(1))
    assert r.status_code == 200, r.get_data(as_text=True)
    card = next(c for c in r.get_json()["cards"] if not c.get("suggestions"))
    assert _count(db, f"SELECT count(*) FROM hook_calls WHERE issuer = '{ISS}'") == 1
    r = post(b, OTHER_ISS, SERVICE_URL, scenario_request(2))
    other_card = r.get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2025-03-01T10:00:00Z"}
    mine = {"card": other_card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2025-03-01T10:00:00Z"}

    # B sends feedback on A's card (with one of its own): 422 naming it, nothing of the batch stored
    r = post(b, OTHER_ISS, FEEDBACK_URL, {"feedback": [mine, item]})
    assert r.status_code == 422, r.get_data(as_text=True)
    outcome = r.get_json(force=True)
    assert outcome["issue"][0]["expression"] == ["feedback[1].card"]
    assert card["uuid"] in outcome["issue"][0]["diagnostics"]
    assert _count(db, "SELECT count(*) FROM feedback") == 0

    # A's feedback on its own card is stored
    r = post(a, ISS, FEEDBACK_URL, {"feedback": [item]})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert _count(db, "SELECT count(*) FROM feedback") == 1
    app.extensions["cds_store"].dispose()
