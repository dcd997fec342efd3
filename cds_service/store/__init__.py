"""Feedback and audit persistence: SQLite by default, PostgreSQL when CDS_DATABASE_URL says so.

- Migrations (Alembic) run at start-up and by ``cds-service db upgrade``, under a lock, so that
  several gunicorn workers or replicas starting together do not race.
- SQLite runs in WAL mode with a busy timeout and synchronous=FULL: several processes write safely
  and a committed row survives the process being killed.
- Nothing here logs clinical values, patient ids or tokens.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, delete, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..ids import new_id
from .models import cards, feedback, hook_calls, jti_seen, suggestions

log = logging.getLogger("cds_service.store")
PG_LOCK_ID = 0x0B0E_CD5  # advisory lock for migrations
REFERENCE = re.compile(r"\b(Patient|Practitioner|PractitionerRole|RelatedPerson)/(?!hmac-sha256:)([A-Za-z0-9\-.]{1,64})")


class StoreUnavailable(Exception):
    """The database cannot be reached or written now; the caller should retry later."""


class FeedbackRejected(Exception):
    def __init__(self, message: str, where: list[str]):
        super().__init__(message)
        self.message = message
        self.where = where


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_url(data_dir: str) -> str:
    path = Path(data_dir or "var").absolute() / "cds.db"
    return f"sqlite:///{path}"


@dataclass
class HookRecord:
    service_id: str
    hook_instance: str | None
    patient_id: str | None
    user_id: str | None
    status: int
    outcome: str
    cards: list[dict[str, Any]]
    prefetch_keys: dict[str, str]
    gather_ms: int | None
    rules_ms: int | None
    total_ms: int
    origin: str | None = None  # "console" for the card console's calls, None for an EHR's
    issuer: str | None = None  # the token's iss; None with authentication off


class Store:
    def __init__(self, url: str, hash_ids: bool = False, hash_key: str = "", retention_days: int = 0):
        self.url = url
        self.hash_ids = hash_ids
        self._hash_key = hash_key.encode()
        self.retention_days = retention_days
        self.migrated = False
        self._last_try = 0.0
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _private_sqlite_files(path)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 15})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # audit rows: WAL with synchronous=NORMAL survives a killed process, not a power cut, and
            # saves an fsync on every hook call; feedback (acknowledged to the EHR) keeps FULL
            self.audit_engine: Engine = create_engine(url, connect_args={"timeout": 15})
            event.listen(self.audit_engine, "connect", _sqlite_pragmas_audit)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=5,
                                        connect_args={"connect_timeout": 3})
            self.audit_engine = self.engine
        self._inserts = {t.name: _Insert(t, self.audit_engine.dialect) for t in (hook_calls, cards, suggestions)}
        self._jti_calls = 0

    # -- migrations -------------------------------------------------------------------------
    def migrate(self) -> str:
        """Bring the schema to the newest revision; returns it."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("cds_service.store").joinpath("migrations")))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self._migration_lock():
            with self.engine.begin() as conn:
                if self.is_sqlite is False:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_LOCK_ID})
                current = MigrationContext.configure(conn).get_current_revision()
                if current != head:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    log.info("database migrated from %s to %s", current or "empty", head)
        self.migrated = True
        return head or ""

    def _ensure(self) -> None:
        """Migrate on first use when the database was down at start-up (at most every 10 s)."""
        if self.migrated:
            return
        now = time.monotonic()
        if now - self._last_try < 10:
            raise StoreUnavailable("database not migrated yet")
        self._last_try = now
        try:
            self.migrate()
        except Exception as exc:  # noqa: BLE001 - any database fault means "not now"
            raise StoreUnavailable(type(exc).__name__) from None

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if not self.is_sqlite:
            yield
            return
        path = self.url.split("///", 1)[-1]
        if not path or path == ":memory:":
            yield
            return
        with os.fdopen(os.open(path + ".migrate.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ready(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(hook_calls.c.id).limit(1))  # a count would read the whole table
            return True
        except SQLAlchemyError:
            return False

    # -- ids --------------------------------------------------------------------------------
    def _ref(self, value: str | None) -> str | None:
        if value is None or not self.hash_ids:
            return value
        return "hmac-sha256:" + hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()

    def _outcome(self, rec: HookRecord) -> str:
        """The outcome text; with hashed ids, any id it quotes (error messages can) is hashed too."""
        text = rec.outcome
        if self.hash_ids:
            for raw in (rec.patient_id, rec.user_id):
                if raw:
                    text = text.replace(raw, self._ref(raw) or "")
            text = REFERENCE.sub(lambda m: f"{m.group(1)}/{self._ref(m.group(2))}", text)
        return text

    # -- audit ------------------------------------------------------------------------------
    def record_hook(self, rec: HookRecord) -> str:
        return self.record_hooks([rec])[0]

    def record_hooks(self, recs: list[HookRecord]) -> list[str]:
        """Audit records in one transaction: a hook call, its cards and their suggestions."""
        self._ensure()
        now = utcnow()
        calls, card_rows, suggestion_rows, ids = [], [], [], []
        for rec in recs:
            call_id = new_id()
            ids.append(call_id)
            calls.append({
                "id": call_id, "called_at": now, "service_id": rec.service_id,
                "hook_instance": (rec.hook_instance or "")[:200] or None,
                "patient_ref": self._ref(rec.patient_id), "user_ref": self._ref(rec.user_id), "status": rec.status,
                "outcome": self._outcome(rec)[:300], "card_count": len(rec.cards),
                "prefetch_keys": json.dumps(rec.prefetch_keys, sort_keys=True), "gather_ms": rec.gather_ms,
                "rules_ms": rec.rules_ms, "total_ms": rec.total_ms, "origin": rec.origin,
                "issuer": rec.issuer[:500] if rec.issuer else None})
            for c in rec.cards:
                card_rows.append({"uuid": c["uuid"], "hook_call_id": call_id, "service_id": rec.service_id,
                                  "issued_at": now, "topic": c["source"]["topic"]["code"],
                                  "indicator": c["indicator"], "summary": c["summary"][:200]})
                for sg in c.get("suggestions", []):
                    suggestion_rows.append({"uuid": sg["uuid"], "card_uuid": c["uuid"], "label": sg["label"][:300]})
        try:
            with self.audit_engine.begin() as conn:
                for table, rows in ((hook_calls, calls), (cards, card_rows), (suggestions, suggestion_rows)):
                    if rows:
                        self._inserts[table.name].run(conn, rows)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        return ids

    # -- feedback ---------------------------------------------------------------------------
    def save_feedback(self, service_id: str, items: list[dict[str, Any]], issuer: str | None = None) -> tuple[int, int]:
        """Check every item against the cards this service issued to ``issuer`` (the client's token
        ``iss``, None with authentication off), then store them all in one transaction. Returns
        (stored, duplicates). Raises FeedbackRejected or StoreUnavailable."""
        self._ensure()
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                uuids = {i["card"] for i in items}
                known = {r.uuid: (r.service_id, r.issuer) for r in conn.execute(
                    select(cards.c.uuid, cards.c.service_id, hook_calls.c.issuer)
                    .join(hook_calls, hook_calls.c.id == cards.c.hook_call_id).where(cards.c.uuid.in_(uuids)))}
                sugg: dict[str, set[str]] = {}
                for r in conn.execute(select(suggestions.c.uuid, suggestions.c.card_uuid)
                                      .where(suggestions.c.card_uuid.in_(uuids))):
                    sugg.setdefault(r.card_uuid, set()).add(r.uuid)
                problems, where = [], []
                for n, item in enumerate(items):
                    # a card issued to another client reads as unknown: its existence is not told
                    if known.get(item["card"]) != (service_id, (issuer or "")[:500] or None):
                        problems.append(f"feedback[{n}].card {item['card']} was not issued by service {service_id}"
                                        + (" to this client" if issuer else ""))
                        where.append(f"feedback[{n}].card")
                        continue
                    for m, acc in enumerate(item.get("acceptedSuggestions", [])):
                        if acc["id"] not in sugg.get(item["card"], set()):
                            problems.append(f"feedback[{n}].acceptedSuggestions[{m}].id {acc['id']} is not a "
                                            "suggestion of that card")
                            where.append(f"feedback[{n}].acceptedSuggestions[{m}].id")
                if problems:
                    raise FeedbackRejected("; ".join(problems[:5]), where[:5])
                rows = [self._feedback_row(service_id, item, now) for item in items]
                ins = (postgresql.insert(feedback) if not self.is_sqlite else sqlite.insert(feedback))
                stored = 0
                for row in rows:
                    # count the rows RETURNING gives back: rowcount is -1 on some drivers (psycopg 3)
                    res = conn.execute(ins.values(**row).on_conflict_do_nothing(index_elements=["dedupe_key"])
                                       .returning(feedback.c.id))
                    stored += len(res.fetchall())
                return stored, len(rows) - stored
        except FeedbackRejected:
            raise
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    @staticmethod
    def _feedback_row(service_id: str, item: dict[str, Any], now: datetime) -> dict[str, Any]:
        accepted = sorted(a["id"] for a in item.get("acceptedSuggestions", []))
        reason = (item.get("overrideReason") or {}).get("reason") or {}
        comment = (item.get("overrideReason") or {}).get("userComment")
        key = hashlib.sha256(json.dumps([item["card"], item["outcome"], item["outcomeTimestamp"], accepted,
                                         reason.get("system"), reason.get("code"), comment]).encode()).hexdigest()
        return {"dedupe_key": key, "card_uuid": item["card"], "service_id": service_id, "outcome": item["outcome"],
                "accepted_suggestions": json.dumps(accepted), "override_system": reason.get("system"),
                "override_code": reason.get("code"), "override_display": reason.get("display"),
                "override_comment": comment, "outcome_at": _parse_ts(item["outcomeTimestamp"]), "received_at": now}

    # -- jti replay cache -------------------------------------------------------------------
    JTI_PURGE_EVERY = 500  # expired jti rows are deleted on the first use and every this many uses

    def first_use(self, key: str, issuer: str, ttl: int) -> bool:
        """Record a token's key (a hash of issuer and jti) until ``ttl`` seconds from now: True the
        first time, False for a replay, in every process sharing the database (one INSERT; a
        conflicting row counts only while it has not expired). Raises StoreUnavailable."""
        self._ensure()
        now = utcnow()
        expires = now + timedelta(seconds=max(1, ttl))
        ins = postgresql.insert(jti_seen) if not self.is_sqlite else sqlite.insert(jti_seen)
        stmt = (ins.values(jti_hash=key, issuer=issuer[:500], expires_at=expires)
                .on_conflict_do_update(index_elements=["jti_hash"],
                                       set_={"issuer": ins.excluded.issuer, "expires_at": ins.excluded.expires_at},
                                       where=jti_seen.c.expires_at < now)
                .returning(jti_seen.c.jti_hash))
        try:
            self._jti_calls += 1
            if self._jti_calls % self.JTI_PURGE_EVERY == 1:
                self.purge_jti(now)
            # the audit engine (SQLite synchronous=NORMAL): a committed row survives a killed process
            with self.audit_engine.begin() as conn:
                return bool(conn.execute(stmt).fetchall())
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    def purge_jti(self, now: datetime | None = None) -> int:
        """Delete the jti rows whose tokens have expired."""
        with self.audit_engine.begin() as conn:
            res = conn.execute(delete(jti_seen).where(jti_seen.c.expires_at < (now or utcnow())))
            return res.rowcount or 0

    # -- retention --------------------------------------------------------------------------
    def purge(self, now: datetime | None = None) -> int:
        """Delete audit records, their cards and feedback older than the retention period."""
        if self.retention_days <= 0:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=self.retention_days)
        with self.engine.begin() as conn:
            old_calls = select(hook_calls.c.id).where(hook_calls.c.called_at < cutoff)
            old_cards = select(cards.c.uuid).where(cards.c.hook_call_id.in_(old_calls))
            conn.execute(delete(feedback).where(feedback.c.card_uuid.in_(old_cards)))
            conn.execute(delete(suggestions).where(suggestions.c.card_uuid.in_(old_cards)))
            conn.execute(delete(cards).where(cards.c.hook_call_id.in_(old_calls)))
            res = conn.execute(delete(hook_calls).where(hook_calls.c.called_at < cutoff))
            return res.rowcount or 0

    def dispose(self) -> None:
        self.engine.dispose()
        self.audit_engine.dispose()


def _parse_ts(value: str) -> datetime:
    """The instant in UTC: SQLite keeps no offset, and the report orders a card's outcomes by it."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class _Insert:
    """An INSERT compiled once for the audit tables, run with the driver's executemany.

    Every hook call writes about 15 audit rows (the call, its cards, their suggestions). Going
    through SQLAlchemy's statement cache and per-row parameter processing cost more than the
    database's own work, so the statement is compiled once per dialect and the rows are handed to
    the driver as they are, with the column types' own bind processors applied (on SQLite, the
    DateTime processor that writes SQLAlchemy's date format; on PostgreSQL, none)."""

    def __init__(self, table: Any, dialect: Any):
        compiled = table.insert().compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup) if compiled.positional else None
        procs = {}
        for col in table.columns:
            proc = col.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs[col.name] = proc
        self.procs = procs

    def run(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        if self.procs:
            rows = [{k: (self.procs[k](v) if k in self.procs else v) for k, v in r.items()} for r in rows]
        params = [tuple(r[n] for n in self.names) for r in rows] if self.names is not None else rows
        conn.exec_driver_sql(self.sql, params)


def _private_sqlite_files(path: str) -> None:
    """The database holds patient ids and clinical feedback: its file is created 0600 before SQLite
    opens it (SQLite gives its -wal and -shm files the database file's permissions), and files left
    readable by an earlier version are made 0600 at open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # an empty file is an empty SQLite database
    os.close(fd)
    for name in (path, path + "-wal", path + "-shm", path + "-journal", path + ".migrate.lock"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


def _sqlite_pragmas_audit(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record, synchronous="NORMAL")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, synchronous: str = "FULL") -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def from_settings(settings: Any) -> Store:
    url = settings.database_url or default_url(settings.data_dir)
    if settings.audit_hash_ids and not settings.audit_hash_key:
        raise ValueError("CDS_AUDIT_HASH_IDS=true needs CDS_AUDIT_HASH_KEY (a secret for the HMAC of the ids)")
    return Store(url, settings.audit_hash_ids, settings.audit_hash_key, settings.audit_retention_days)
