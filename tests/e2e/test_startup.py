"""A broken knowledge file stops start-up with a clear message (no FHIR server needed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_broken_knowledge_file_stops_serve(tmp_path):
    src = Path(str(resources.files("cds_service.knowledge")))
    for f in src.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "thresholds.yaml").write_text((tmp_path / "thresholds.yaml").read_text()
                                              .replace("exam_window_days: {value: 30, source:", "exam_window_days: {value: 30, sauce:"))
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    env = {**os.environ, "CDS_KNOWLEDGE_DIR": str(tmp_path), "CDS_PORT": "1"}
    out = subprocess.run([exe, "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert "thresholds.yaml" in out.stderr and "exam_window_days" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_setting_stops_serve():
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "serve"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CDS_HOOK_DEADLINE": "soon"})
    assert out.returncode == 2
    assert "CDS_HOOK_DEADLINE" in out.stderr


def test_production_defaults_start_and_refuse_unauthenticated_calls(tmp_path):
    """Authentication on and no issuer configured: the service starts, says so, and answers 401."""
    import requests

    from tests.e2e.conftest import start_service, stop

    svc = start_service(tmp_path, {})
    try:
        assert requests.get(svc.url + "/cds-services", timeout=10).status_code == 401
        assert requests.get(svc.url + "/healthz", timeout=10).status_code == 200
    finally:
        stop(svc.proc)
    log = svc.log.read_text()
    assert "no issuer is trusted" in log
    assert "AUTHENTICATION IS OFF" not in log
