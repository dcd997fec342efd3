"""`cds-service --version` prints the installed version, which is the one pyproject.toml declares."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import cds_service

ROOT = Path(__file__).resolve().parents[2]


def test_version_option_prints_the_package_version():
    done = subprocess.run([sys.executable, "-m", "cds_service", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cds-service {cds_service.__version__}"


def test_package_version_is_the_declared_one():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cds_service.__version__ == declared == version("bone-health-cds")
    assert f"## [{declared}]" in (ROOT / "CHANGELOG.md").read_text()
