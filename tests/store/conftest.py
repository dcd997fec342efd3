"""Database fixtures for the feedback and audit store: every test runs against SQLite (a file in
tmp_path) and PostgreSQL (a fresh database per test module, emptied before each test).

PostgreSQL: CDS_TEST_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
When it is not reachable its tests are skipped, unless CDS_TEST_REQUIRE_SERVICES=1 (then they fail).
The database is never mocked.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cds_service import create_app
from tests.conftest import SERVICE_URL, post_hook

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_admin_url() -> str:
    url = os.environ.get("CDS_TEST_DATABASE_URL") or DEFAULT_PG
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    elif url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    return url


def _pg_unreachable(reason: str) -> None:
    msg = f"PostgreSQL is not reachable at {make_url(pg_admin_url()).render_as_string(hide_password=True)} " \
          f"({reason}); its tests are skipped"
    if os.environ.get("CDS_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(msg.replace("its tests are skipped", "and CDS_TEST_REQUIRE_SERVICES=1"), pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def pg_module_url(request):
    """A fresh, uniquely named PostgreSQL database for this test module, dropped at its end."""
    admin_url = pg_admin_url()
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not reachable"
        _pg_unreachable(type(exc).__name__)
    name = f"cds_test_{request.module.__name__.rsplit('.', 1)[-1]}_{uuid.uuid4().hex[:10]}".lower()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_pg(url: str) -> None:
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            # terminate the idle connections of earlier tests' engines so that nothing holds a lock
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty database (no tables at all) of either kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url = request.getfixturevalue("pg_module_url")
    _empty_pg(url)
    return url


# -- helpers ---------------------------------------------------------------------------------------

def query(url: str, sql: str, **params: Any) -> list[Any]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(text(sql), params).mappings())
    finally:
        eng.dispose()


def count(url: str, table: str, where: str = "", **params: Any) -> int:
    return query(url, f"SELECT count(*) AS n FROM {table}" + (f" WHERE {where}" if where else ""), **params)[0]["n"]


def make_app(url: str, **extra: Any):
    return create_app({"database_url": url, "hook_deadline": 5.0, **extra})


def issue_cards(client, scenario_request, *numbers: int) -> list[dict[str, Any]]:
    """Hook calls for the given scenarios; the cards they returned."""
    out: list[dict[str, Any]] = []
    for n in numbers:
        r = post_hook(client, scenario_request(n))
        assert r.status_code == 200, r.get_data(as_text=True)
        out += r.get_json()["cards"]
    return out


def ts(n: int = 0) -> str:
    """A distinct, valid outcomeTimestamp."""
    return f"2025-03-01T10:{(n // 60) % 60:02d}:{n % 60:02d}.{n // 3600:03d}Z"


def accepted(card: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": ts(n),
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}


def overridden(card: dict[str, Any], n: int = 0, code: str = "patient-declined", comment: str | None = None):
    reason: dict[str, Any] = {"reason": {"system": "http://example.org/override", "code": code,
                                         "display": code.replace("-", " ")}}
    if comment is not None:
        reason["userComment"] = comment
    return {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": ts(n), "overrideReason": reason}


def post_feedback(client, body: Any, url: str = SERVICE_URL + "/feedback", **kw):
    return post_hook(client, body, url, **kw)


def utc_today():
    return datetime.now(timezone.utc).date()


def loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _run_one(target, args, barrier, results, index):
    try:
        barrier.wait(timeout=60)  # all start their work at the same moment
        results.put((index, "ok", target(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        results.put((index, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_processes(target, arg_lists: list[tuple], timeout: float = 90) -> list[Any]:
    """Run ``target(*args)`` in one spawned process per args, released together by a barrier;
    returns the results in order, or fails with every process's error."""
    import multiprocessing
    import queue as queue_mod

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(arg_lists))
    results = ctx.Queue()
    procs = [ctx.Process(target=_run_one, args=(target, args, barrier, results, i)) for i, args in enumerate(arg_lists)]
    for p in procs:
        p.start()
    got: dict[int, tuple[str, Any]] = {}
    try:
        for _ in procs:
            i, status, value = results.get(timeout=timeout)
            got[i] = (status, value)
    except queue_mod.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [f"process {i}: {v}" for i, (s, v) in sorted(got.items()) if s == "error"]
    assert not errors, "\n".join(errors)
    assert len(got) == len(procs), f"only {len(got)} of {len(procs)} processes reported within {timeout}s"
    return [got[i][1] for i in range(len(procs))]
