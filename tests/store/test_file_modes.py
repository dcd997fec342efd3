"""The SQLite database and its WAL and SHM files are readable by their owner only."""
from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import post_hook

from .conftest import make_app


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)  # the usual umask, under which files are world-readable by default
    yield
    os.umask(old)


def _modes(folder):
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.name.startswith("cds.db")}


def test_sqlite_files_are_0600_after_start(tmp_path, scenario_request, umask_022):
    app = make_app(f"sqlite:///{tmp_path / 'cds.db'}")
    assert post_hook(app.test_client(), scenario_request(1)).status_code == 200  # a write: WAL and SHM exist
    modes = _modes(tmp_path)
    assert {"cds.db", "cds.db-wal", "cds.db-shm"} <= set(modes), modes
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
    app.extensions["cds_store"].dispose()


def test_default_data_dir_database_is_0600(tmp_path, umask_022):
    from cds_service import create_app

    app = create_app({"data_dir": str(tmp_path), "hook_deadline": 5.0})
    modes = _modes(tmp_path)
    assert modes.get("cds.db") == 0o600, modes
    app.extensions["cds_store"].dispose()


def test_existing_readable_files_are_made_0600_at_open(tmp_path, scenario_request, umask_022):
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    app = make_app(url)
    assert post_hook(app.test_client(), scenario_request(1)).status_code == 200
    app.extensions["cds_store"].dispose()
    for name in ("cds.db", "cds.db-wal", "cds.db-shm"):
        if (tmp_path / name).exists():
            os.chmod(tmp_path / name, 0o644)  # as an earlier version left them
    app = make_app(url)
    modes = _modes(tmp_path)
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
    app.extensions["cds_store"].dispose()
