"""`cds-service report` in a real process whose output pipe is closed early (`report | head -1`)."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from cds_service.store import HookRecord, Store

from .conftest import utc_today

ROOT = Path(__file__).resolve().parents[2]
SUGGESTIONS = 3000  # a report of some 250 kB in every format: far more than a pipe holds


@pytest.fixture(scope="module")
def big_report_db(tmp_path_factory):
    """An SQLite database whose report is long: one card today with thousands of suggestions."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report-pipe') / 'audit.db'}"
    store = Store(url)
    try:
        store.migrate()
        card = {"uuid": str(uuid.uuid4()), "source": {"topic": {"code": "treatment"}}, "indicator": "info",
                "summary": "s", "suggestions": [{"uuid": str(uuid.uuid4()), "label": f"suggestion {i:05d} " + "x" * 40}
                                                for i in range(SUGGESTIONS)]}
        store.record_hook(HookRecord("svc", None, None, None, 200, "ok", [card], {}, 1, 1, 2))
    finally:
        store.dispose()
    return url


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "CDS_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}


def _args(fmt: str) -> list[str]:
    return [sys.executable, "-m", "cds_service", "report", "--format", fmt,
            "--from", (utc_today() - timedelta(days=1)).isoformat(), "--to", (utc_today() + timedelta(days=1)).isoformat()]


def _quiet_stderr(fmt: str, err: str) -> None:
    # the csv names its database and the console calls on stderr; nothing else may be there
    lines = [line for line in err.splitlines() if not (fmt == "csv" and line.startswith(("cds-service report: database: ",
                                                                                          "cds-service report: console")))]
    assert lines == [], err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_report_into_head_ends_quietly(big_report_db, fmt):
    """`cds-service report | head -1` through a shell pipeline: the first line, exit 0, nothing on stderr
    (no BrokenPipeError traceback, no "Exception ignored")."""
    cmd = " ".join(f"'{a}'" for a in _args(fmt)) + " | head -1"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=_env(big_report_db),
                       cwd=ROOT, timeout=120)
    first = {"table": "Cards issued ", "csv": "section,name,", "json": "{"}[fmt]
    assert r.stdout.startswith(first) and r.stdout.count("\n") == 1, r.stdout[:200]
    _quiet_stderr(fmt, r.stderr)
    assert r.returncode == 0, r.stderr  # pipefail: the report's own exit status


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_report_into_a_pipe_closed_before_it_writes(big_report_db, fmt):
    """The reader has gone before the first byte: still a quiet exit 0."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(_args(fmt), stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(big_report_db),
                            cwd=ROOT)
    os.close(write_end)
    os.close(read_end)  # nobody will read: the report's first write meets a closed pipe
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    _quiet_stderr(fmt, err)
    assert proc.returncode == 0, err
