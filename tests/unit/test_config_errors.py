"""Configuration mistakes name the variable: a wrong value is a ConfigError (exit status 2 and one line
from the command line, never a traceback) that says which variable and what it expects, without
repeating a password; a CDS_ variable that is no setting is warned about, with the setting meant; and
the start-up warnings appear once per `cds-service serve`, not once per gunicorn worker."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.cli import main
from cds_service.config import NOT_SETTING_PREFIXES, ConfigError, Settings, unknown_variables

PASSWORD = "s3cret-Passw0rd"


def _error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    return info.value


@pytest.mark.parametrize(("variable", "value"), [
    ("CDS_DATABASE_URL", "nonsense"),
    ("CDS_DATABASE_URL", f"mysql://cds:{PASSWORD}@db.hospital.org/cds"),
    ("CDS_DATABASE_URL", f"postgres://cds:{PASSWORD}@db.hospital.org/cds"),
    ("CDS_DATABASE_URL", f"postgresql+asyncpg://cds:{PASSWORD}@db.hospital.org/cds"),
    ("CDS_DATABASE_URL", f"postgresql+psycopg://cds:{PASSWORD}@db.hospital.org:port/cds"),
    ("CDS_DATABASE_URL", f"sqlite://cds:{PASSWORD}@db.hospital.org/cds.db"),
    ("CDS_LOG_LEVEL", "VERBOSE"),
    ("CDS_LOG_LEVEL", "10"),
    ("CDS_REDIS_URL", f"http://:{PASSWORD}@redis.hospital.org"),
    ("CDS_REDIS_URL", f"redis://:{PASSWORD}@redis.hospital.org:port/0"),
    ("CDS_PUBLIC_BASE_URL", "cds.hospital.org/bone"),
    ("CDS_FHIR_SERVER_ALLOWLIST", "https://ehr.hospital.org/fhir,ehr.example.org/fhir"),
    ("CDS_PORT", "70000"),
])
def test_a_wrong_value_names_its_variable_and_not_its_password(variable, value):
    exc = _error({variable: value})
    assert str(exc).startswith(variable), str(exc)
    assert "\n" not in str(exc)
    # neither the message nor anything chained to it repeats the password
    assert PASSWORD not in "".join(traceback.format_exception(exc))


def test_the_database_url_message_says_what_is_expected():
    msg = str(_error({"CDS_DATABASE_URL": "nonsense"}))
    assert "postgresql+psycopg://" in msg and "sqlite:///" in msg


def test_the_log_level_message_lists_the_levels():
    msg = str(_error({"CDS_LOG_LEVEL": "VERBOSE"}))
    assert "VERBOSE" in msg and "DEBUG" in msg and "WARNING" in msg


@pytest.mark.parametrize(("variable", "value"), [
    ("CDS_DATABASE_URL", "sqlite://"),
    ("CDS_DATABASE_URL", "sqlite:///var/cds.db"),
    ("CDS_DATABASE_URL", "sqlite:////tmp/cds.db"),
    ("CDS_DATABASE_URL", "sqlite+pysqlite:////tmp/cds.db"),
    ("CDS_DATABASE_URL", f"postgresql+psycopg://cds:{PASSWORD}@db.hospital.org:5432/cds"),
    ("CDS_DATABASE_URL", "postgresql+psycopg:///cds"),
    ("CDS_LOG_LEVEL", "debug"),
    ("CDS_LOG_LEVEL", "WARNING"),
    ("CDS_REDIS_URL", "redis://127.0.0.1:6379/0"),
    ("CDS_REDIS_URL", f"rediss://:{PASSWORD}@redis.hospital.org:6380/1"),
    ("CDS_REDIS_URL", "unix:///run/redis/redis.sock"),
    ("CDS_PUBLIC_BASE_URL", "https://cds.hospital.org/bone/"),
    ("CDS_FHIR_SERVER_ALLOWLIST", "https://ehr.hospital.org/fhir/r4, http://127.0.0.1:8080/fhir"),
    ("CDS_FHIR_SERVER_ALLOWLIST", "*"),
    ("CDS_PORT", "65535"),
])
def test_good_values_are_accepted(variable, value):
    Settings.from_env({variable: value})


def test_an_uncreatable_data_dir_names_its_variable(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="^CDS_DATA_DIR"):
        create_app({"data_dir": str(tmp_path / "a-file" / "data")})


def test_an_uncreatable_sqlite_folder_names_the_database_url(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="^CDS_DATABASE_URL") as info:
        create_app({"database_url": f"sqlite:///{tmp_path}/a-file/data/cds.db"})
    assert "a-file" not in str(info.value)  # the URL is not repeated


def test_a_missing_jku_ca_bundle_names_its_variable(tmp_path):
    with pytest.raises(ConfigError, match="^CDS_JKU_CA_BUNDLE"):
        create_app({"auth_disabled": False, "sandbox_issuer": True, "jku_ca_bundle": str(tmp_path / "none.pem")})


# ---- CDS_ variables that are no setting ----

def test_an_unknown_variable_is_named_with_the_setting_meant():
    warnings = unknown_variables({"CDS_AUTH_DISABLE": "value-not-logged", "CDS_PORT": "8080", "HOME": "/root"})
    assert len(warnings) == 1
    assert "CDS_AUTH_DISABLE " in warnings[0] and "did you mean CDS_AUTH_DISABLED?" in warnings[0]
    assert "value-not-logged" not in warnings[0]


def test_an_unknown_variable_without_a_close_setting_is_named_alone():
    [warning] = unknown_variables({"CDS_ZZZ": "1"})
    assert warning.startswith("CDS_ZZZ ") and "did you mean" not in warning


def test_the_variables_of_the_tests_and_tools_are_not_settings_and_not_warned_about():
    assert "CDS_TEST_" in NOT_SETTING_PREFIXES
    env = {"CDS_TEST_REDIS_URL": "redis://x", "CDS_TEST_DATABASE_URL": "x", "CDS_TEST_REQUIRE_SERVICES": "1",
           "CDS_TEST_SEKMET": "/bin/sekmet"}
    assert unknown_variables(env) == []
    # every CDS_ name the repository's own files use is a setting or of a non-setting family
    root = Path(__file__).resolve().parents[2]
    used = set()
    for pattern in ("cds_service/**/*.py", "tests/**/*.py", "benchmarks/**/*.py", "Makefile", "docker/**/*"):
        for path in root.glob(pattern):
            if path.is_file() and path != Path(__file__).resolve():
                used |= set(re.findall(r"\bCDS_[A-Z0-9]+(?:_[A-Z0-9]+)*\b", path.read_text(errors="replace")))
    used -= {"CDS_SETTINGS", "CDS_VAR"}  # a Flask config key and a test's regex name, not variables
    assert unknown_variables({name: "" for name in used}) == []


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "cds_service"]


def test_create_app_warns_once_about_unknown_variables_and_development_settings(monkeypatch, caplog):
    monkeypatch.setenv("CDS_AUTH_DISABLE", "value-not-logged")
    caplog.set_level(logging.WARNING)
    create_app({"auth_disabled": True})
    warnings = _warnings(caplog)
    assert sum("CDS_AUTH_DISABLE is not a setting" in w for w in warnings) == 1
    assert sum("AUTHENTICATION IS OFF" in w for w in warnings) == 1
    assert not any("value-not-logged" in w for w in warnings)


def test_create_app_without_startup_warnings_logs_none(monkeypatch, caplog):
    monkeypatch.setenv("CDS_AUTH_DISABLE", "true")
    caplog.set_level(logging.WARNING)
    create_app({"auth_disabled": True, "console": True}, startup_warnings=False)
    assert _warnings(caplog) == []


# ---- the command line: exit status 2 and one line, never a traceback ----

@pytest.mark.parametrize("argv", [["db", "upgrade"], ["report"], ["evaluate", "BUNDLE"]])
@pytest.mark.parametrize(("variable", "value"), [
    ("CDS_DATABASE_URL", f"mysql://cds:{PASSWORD}@db.hospital.org/cds"),
    ("CDS_LOG_LEVEL", "VERBOSE"),
    ("CDS_HOOK_DEADLINE", "soon"),
])
def test_other_commands_exit_2_naming_the_variable(argv, variable, value, monkeypatch, capsys, tmp_path):
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}))
    monkeypatch.setenv(variable, value)
    assert main([str(bundle) if a == "BUNDLE" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert variable in err and PASSWORD not in err
    assert len(err.strip().splitlines()) == 1


def _cds_service() -> str:
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    assert exe, "the cds-service console script is not installed in this environment"
    return exe


@pytest.mark.e2e
@pytest.mark.parametrize(("variable", "value"), [
    ("CDS_DATABASE_URL", "nonsense"),
    ("CDS_DATABASE_URL", f"mysql://cds:{PASSWORD}@db.hospital.org/cds"),
    ("CDS_LOG_LEVEL", "VERBOSE"),
])
def test_serve_with_a_wrong_value_exits_2_naming_the_variable(variable, value, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_DATA_DIR": str(tmp_path), variable: value})
    out = subprocess.run([_cds_service(), "serve", "--host", "127.0.0.1", "--port", "1"], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert variable in out.stderr
    assert "Traceback" not in out.stderr
    assert PASSWORD not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.e2e
def test_serve_logs_each_startup_warning_once_not_once_per_worker(tmp_path):
    from tests.e2e.conftest import start_service, stop

    svc = start_service(tmp_path, {"CDS_AUTH_DISABLED": "true", "CDS_DATA_DIR": str(tmp_path),
                                   "CDS_LOG_FORMAT": "text", "CDS_AUTH_DISABLE": "value-not-logged"}, workers=2)
    try:
        assert svc.get("/healthz").status_code == 200
    finally:
        stop(svc.proc)
    log = svc.log.read_text()  # the service's stderr (and stdout)
    assert log.count("AUTHENTICATION IS OFF") == 1, log
    assert log.count("CDS_AUTH_DISABLE is not a setting") == 1, log
    assert "did you mean CDS_AUTH_DISABLED?" in log
    assert "value-not-logged" not in log
    assert "Traceback" not in log
