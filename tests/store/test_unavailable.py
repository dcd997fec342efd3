"""The database is down: the service starts, hooks still answer with cards, feedback is a 503 to retry."""
from __future__ import annotations

import logging
import uuid

from cds_service import metrics
from tests.conftest import post_hook

from .conftest import make_app, post_feedback, ts

DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/none"


def test_database_down(caplog, scenario_request):
    caplog.set_level(logging.INFO)
    app = make_app(DOWN)
    assert any("database not ready at start-up" in r.getMessage() for r in caplog.records)
    client = app.test_client()

    caplog.clear()
    failures_before = metrics.AUDIT_FAILURES._value.get()
    r = post_hook(client, scenario_request(1))
    assert r.status_code == 200
    cards = r.get_json()["cards"]
    assert cards
    assert any("audit write failed" in r.getMessage() for r in caplog.records)
    assert metrics.AUDIT_FAILURES._value.get() == failures_before + 1  # counted for /metrics

    # a second call inside the retry interval still answers, still logged
    caplog.clear()
    r = post_hook(client, scenario_request(2))
    assert r.status_code == 200 and r.get_json()["cards"]
    assert any("audit write failed" in r.getMessage() for r in caplog.records)

    for card in (cards[0], {"uuid": str(uuid.uuid4())}):
        r = post_feedback(client, {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                                  "outcomeTimestamp": ts()}]})
        assert r.status_code == 503, r.get_data(as_text=True)
        assert int(r.headers["Retry-After"]) > 0
        body = r.get_json(force=True)
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "transient"

    # validation still comes first: a bad body is a 400, not a 503
    assert post_feedback(client, {"feedback": []}).status_code == 400
    assert not any(r.levelno >= logging.ERROR and "unexpected error" in r.getMessage() for r in caplog.records)


def test_database_down_after_retry_interval(monkeypatch, caplog, scenario_request):
    """Past the 10 s retry interval the store tries again (and fails again): still a 200 and a 503."""
    import cds_service.store as store_mod

    app = make_app(DOWN)
    client = app.test_client()
    clock = [1_000_000.0]
    monkeypatch.setattr(store_mod.time, "monotonic", lambda: clock[0])
    for _ in range(2):
        clock[0] += 11
        caplog.clear()
        r = post_hook(client, scenario_request(1))
        assert r.status_code == 200
        assert any("audit write failed" in r.getMessage() for r in caplog.records)
        clock[0] += 11
        r = post_feedback(client, {"feedback": [{"card": r.get_json()["cards"][0]["uuid"], "outcome": "overridden",
                                                  "outcomeTimestamp": ts()}]})
        assert r.status_code == 503 and r.headers.get("Retry-After")
