"""Schema migrations from an empty database, idempotent, from the CLI, and from several processes at once."""
from __future__ import annotations

from sqlalchemy import inspect

from cds_service.cli import main
from cds_service.store import Store

from .conftest import query, run_processes

TABLES = {"hook_calls", "cards", "suggestions", "feedback"}


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
        assert store.migrate() == "0001"
    finally:
        store.dispose()
    assert TABLES | {"alembic_version"} <= _tables(store_url)
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == ["0001"]


def test_migrate_twice_is_a_noop(store_url):
    store = Store(store_url)
    try:
        assert store.migrate() == "0001"
        with store.engine.begin() as conn:  # a row that a second migration must not disturb
            conn.exec_driver_sql("INSERT INTO hook_calls (id, called_at, service_id, status, outcome, card_count, "
                                 "total_ms) VALUES ('keep', '2025-01-01 00:00:00', 's', 200, 'ok', 0, 1)")
        assert store.migrate() == "0001"
        assert Store(store_url).migrate() == "0001"
    finally:
        store.dispose()
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == ["0001"]
    assert [r["id"] for r in query(store_url, "SELECT id FROM hook_calls")] == ["keep"]


def test_cli_db_upgrade(store_url, monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", store_url)
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert "0001" in out
    assert TABLES <= _tables(store_url)
    assert main(["db", "upgrade"]) == 0  # again: nothing to do, still fine
    assert "0001" in capsys.readouterr().out


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
    assert results == ["0001"] * 4
    assert TABLES | {"alembic_version"} <= _tables(store_url)
    assert [r["version_num"] for r in query(store_url, "SELECT version_num FROM alembic_version")] == ["0001"]
