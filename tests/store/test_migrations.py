"""Schema migrations from an empty database, idempotent, from the CLI, and from several processes at once."""
from __future__ import annotations

from importlib import resources

from sqlalchemy import create_engine, inspect

from cds_service.cli import main
from cds_service.store import HookRecord, Store

from .conftest import query, run_processes

TABLES = {"hook_calls", "cards", "suggestions", "feedback", "jti_seen"}
HEAD = "0003"


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine

    eng = create_engine(url)
    try:
        return set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_migrate_empty_database(store_url):
    assert not (_tables(store_url) & (TABLES | {"alembic_version"}))
    store = Store(store_url)
    try:
        assert store.migrate() == HEAD
    finally:
        store.dispose()
    assert TABLES | {"alembic_version"} <= _tables(store_url)
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == [HEAD]


def test_migrate_twice_is_a_noop(store_url):
    store = Store(store_url)
    try:
        assert store.migrate() == HEAD
        with store.engine.begin() as conn:  # a row that a second migration must not disturb
            conn.exec_driver_sql("INSERT INTO hook_calls (id, called_at, service_id, status, outcome, card_count, "
                                 "total_ms) VALUES ('keep', '2025-01-01 00:00:00', 's', 200, 'ok', 0, 1)")
        assert store.migrate() == HEAD
        assert Store(store_url).migrate() == HEAD
    finally:
        store.dispose()
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == [HEAD]
    assert [r["id"] for r in query(store_url, "SELECT id FROM hook_calls")] == ["keep"]


def test_cli_db_upgrade(store_url, monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", store_url)
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert HEAD in out
    assert TABLES <= _tables(store_url)
    assert main(["db", "upgrade"]) == 0  # again: nothing to do, still fine
    assert HEAD in capsys.readouterr().out


def test_cli_db_upgrade_unreachable_database_exits_1(monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert main(["db", "upgrade"]) == 1
    assert "database error" in capsys.readouterr().err


def _migrate_worker(url: str) -> str:
    store = Store(url)
    try:
        return store.migrate()
    finally:
        store.dispose()


def test_concurrent_migration_from_four_processes(store_url):
    results = run_processes(_migrate_worker, [(store_url,)] * 4)
    assert results == [HEAD] * 4
    assert TABLES | {"alembic_version"} <= _tables(store_url)
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == [HEAD]


def _alembic(url: str, action: str, revision: str) -> None:
    """Move the schema to a given revision, as Store.migrate() does for the head."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("cds_service.store").joinpath("migrations")))
    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    finally:
        eng.dispose()


def _columns(url: str, table: str) -> set[str]:
    eng = create_engine(url)
    try:
        return {c["name"] for c in inspect(eng).get_columns(table)}
    finally:
        eng.dispose()


def test_upgrade_from_0001_adds_the_origin_of_hook_calls(store_url):
    """A database of the previous revision, with records in it, upgraded at start-up: hook_calls gets
    origin, the records stay (read as EHR calls) and new ones carry their origin; and back down."""
    _alembic(store_url, "upgrade", "0001")
    assert "origin" not in _columns(store_url, "hook_calls")
    eng = create_engine(store_url)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql("INSERT INTO hook_calls (id, called_at, service_id, status, outcome, card_count, "
                                 "total_ms) VALUES ('old', '2025-01-01 00:00:00', 's', 200, 'ok', 1, 1)")
            conn.exec_driver_sql("INSERT INTO cards (uuid, hook_call_id, service_id, issued_at, topic, indicator, "
                                 "summary) VALUES ('c-old', 'old', 's', '2025-01-01 00:00:00', 'treatment', 'info', 'x')")
    finally:
        eng.dispose()
    store = Store(store_url)
    try:
        assert store.migrate() == HEAD
        assert "origin" in _columns(store_url, "hook_calls")
        card = {"uuid": "c-new", "source": {"topic": {"code": "treatment"}}, "indicator": "info", "summary": "y"}
        store.record_hook(HookRecord("s", None, None, None, 200, "ok", [card], {}, 1, 1, 2, origin="console"))
        store.record_hook(HookRecord("s", None, None, None, 200, "ok", [], {}, 1, 1, 2))
    finally:
        store.dispose()
    rows = query(store_url, "SELECT id, origin FROM hook_calls")
    assert sorted((r["origin"] or "-") for r in rows) == ["-", "-", "console"]
    assert [r["origin"] for r in rows if r["id"] == "old"] == [None]
    assert {r["uuid"] for r in query(store_url, "SELECT uuid FROM cards")} == {"c-old", "c-new"}

    _alembic(store_url, "downgrade", "0001")
    assert "origin" not in _columns(store_url, "hook_calls")
    assert len(query(store_url, "SELECT id FROM hook_calls")) == 3
    assert {r["uuid"] for r in query(store_url, "SELECT uuid FROM cards")} == {"c-old", "c-new"}


def test_upgrade_from_0002_adds_jti_seen_and_the_issuer_of_hook_calls(store_url):
    """0003: the jti replay table and hook_calls.issuer; records already stored read as calls made with
    authentication off (issuer null); and back down."""
    _alembic(store_url, "upgrade", "0002")
    eng = create_engine(store_url)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql("INSERT INTO hook_calls (id, called_at, service_id, status, outcome, card_count, "
                                 "total_ms) VALUES ('old', '2025-01-01 00:00:00', 's', 200, 'ok', 0, 1)")
    finally:
        eng.dispose()
    store = Store(store_url)
    try:
        assert store.migrate() == HEAD == "0003"
        assert "issuer" in _columns(store_url, "hook_calls") and "jti_seen" in _tables(store_url)
        store.record_hook(HookRecord("s", None, None, None, 200, "ok", [], {}, 1, 1, 2, issuer="https://ehr.example"))
    finally:
        store.dispose()
    assert {r["id"]: r["issuer"] for r in query(store_url, "SELECT id, issuer FROM hook_calls")}.get("old") is None
    assert len(query(store_url, "SELECT id FROM hook_calls WHERE issuer = 'https://ehr.example'")) == 1
    _alembic(store_url, "downgrade", "0002")
    assert "issuer" not in _columns(store_url, "hook_calls") and "jti_seen" not in _tables(store_url)
    assert len(query(store_url, "SELECT id FROM hook_calls")) == 2
