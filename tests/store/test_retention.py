"""Audit records older than CDS_AUDIT_RETENTION_DAYS go, with their cards, suggestions and feedback."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from cds_service.cli import main
from cds_service.store import Store
from cds_service.store.models import cards as cards_t, hook_calls

from .conftest import accepted, count, issue_cards, make_app, overridden, post_feedback, query


def _setup(url, scenario_request):
    client = make_app(url).test_client()
    old_cards = issue_cards(client, scenario_request, 1)
    old_call = query(url, "SELECT id FROM hook_calls")[0]["id"]
    new_cards = issue_cards(client, scenario_request, 2)
    items = [accepted(c, i) if c.get("suggestions") else overridden(c, i) for i, c in enumerate(old_cards + new_cards)]
    assert post_feedback(client, {"feedback": items}).status_code == 200
    store = Store(url)
    try:
        with store.engine.begin() as conn:
            then = datetime.now(timezone.utc) - timedelta(days=40)
            conn.execute(update(hook_calls).where(hook_calls.c.id == old_call).values(called_at=then))
            conn.execute(update(cards_t).where(cards_t.c.hook_call_id == old_call).values(issued_at=then))
            # one newer call, 20 days old: inside the retention period
            conn.execute(update(hook_calls).where(hook_calls.c.id != old_call)
                         .values(called_at=datetime.now(timezone.utc) - timedelta(days=20)))
    finally:
        store.dispose()
    return old_cards, new_cards


def _check_purged(url, old_cards, new_cards):
    assert count(url, "hook_calls") == 1
    assert {r["uuid"] for r in query(url, "SELECT uuid FROM cards")} == {c["uuid"] for c in new_cards}
    assert {r["card_uuid"] for r in query(url, "SELECT card_uuid FROM feedback")} == {c["uuid"] for c in new_cards}
    assert count(url, "feedback") == len(new_cards)
    assert {r["uuid"] for r in query(url, "SELECT uuid FROM suggestions")} == \
        {s["uuid"] for c in new_cards for s in c.get("suggestions", [])}


def test_purge(store_url, scenario_request):
    old_cards, new_cards = _setup(store_url, scenario_request)
    assert count(store_url, "hook_calls") == 2
    keep_all = Store(store_url, retention_days=0)
    try:
        assert keep_all.purge() == 0  # 0 keeps everything
    finally:
        keep_all.dispose()
    assert count(store_url, "hook_calls") == 2
    store = Store(store_url, retention_days=30)
    try:
        assert store.purge() == 1
        _check_purged(store_url, old_cards, new_cards)
        assert store.purge() == 0
    finally:
        store.dispose()
    _check_purged(store_url, old_cards, new_cards)


def test_cli_db_purge(store_url, scenario_request, monkeypatch, capsys):
    old_cards, new_cards = _setup(store_url, scenario_request)
    monkeypatch.setenv("CDS_DATABASE_URL", store_url)
    monkeypatch.setenv("CDS_AUDIT_RETENTION_DAYS", "30")
    assert main(["db", "purge"]) == 0
    assert "purged 1 " in capsys.readouterr().out
    _check_purged(store_url, old_cards, new_cards)


def test_app_start_purges(store_url, scenario_request):
    old_cards, new_cards = _setup(store_url, scenario_request)
    make_app(store_url, audit_retention_days=30)
    _check_purged(store_url, old_cards, new_cards)
