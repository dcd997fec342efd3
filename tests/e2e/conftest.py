"""End-to-end fixtures: a real FHIR server (sekmet-fhir, pinned, own venv) and the real service.

Both are started as processes on 127.0.0.1 with temporary folders and killed by their PID.
`make test` installs sekmet-fhir into .venv-fhir and sets CDS_TEST_SEKMET; without it these
tests are skipped with a message saying so.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import requests

from fhir_samples import scenarios
from tests.jwt_helpers import ISS, TestKey, ec_key, issuers_file, token

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path, headers: dict | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1, headers=headers or {}).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def sekmet_binary() -> str | None:
    explicit = os.environ.get("CDS_TEST_SEKMET")
    if explicit and Path(explicit).exists():
        return explicit
    local = ROOT / ".venv-fhir" / "bin" / "sekmet"
    return str(local) if local.exists() else None


@dataclass
class FhirServer:
    base: str
    token: str
    proc: subprocess.Popen
    log: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json"}

    def load(self, bundle: dict) -> None:
        r = requests.post(self.base, json=bundle, headers=self.headers(), timeout=30)
        r.raise_for_status()


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory) -> FhirServer:
    binary = sekmet_binary()
    if not binary:
        pytest.skip("sekmet-fhir is not installed (run `make test`, which installs it into .venv-fhir)")
    tmp = tmp_path_factory.mktemp("sekmet")
    port = free_port()
    token = "e2e-" + secrets.token_hex(16)
    (tmp / "settings.yaml").write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\n"
        f"host: 127.0.0.1\nport: {port}\n"
        f"data_dir: {tmp / 'data'}\n"
        "simulator: {enabled: false}\n"
        "log_inbound: false\n"
        f"server_auth: {{types: [bearer], tokens: [{token}]}}\n")
    log = tmp / "sekmet.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([binary, "serve", "--config", str(tmp / "settings.yaml"), "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=tmp, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "SEKMET_CONFIG": str(tmp / "settings.yaml")})
    server = FhirServer(f"http://127.0.0.1:{port}/fhir", token, proc, log)
    try:
        wait_http(f"{server.base}/metadata", proc, 90, log)
        for s in scenarios.SCENARIOS:
            server.load(scenarios.build(s.number, date.today()))
        yield server
    finally:
        stop(proc)


@dataclass
class Service:
    url: str
    proc: subprocess.Popen
    log: Path
    key: TestKey | None = None

    def auth(self, path: str) -> dict[str, str]:
        """A fresh client JWT for a call to ``path`` (each has its own jti)."""
        return {"Authorization": f"Bearer {token(self.key, self.url + path)}"} if self.key else {}

    def post(self, path: str, body: dict, **kw) -> requests.Response:
        headers = {**self.auth(path), **kw.pop("headers", {})}
        return requests.post(self.url + path, json=body, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.auth(path), timeout=kw.pop("timeout", 30), **kw)


def start_service(tmp: Path, env_extra: dict[str, str] | None = None, workers: int = 2,
                  key: TestKey | None = None) -> Service:
    port = free_port()
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    assert exe, "the cds-service console script is not installed in this environment"
    log = tmp / f"cds-service-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    # the URL the tests call: with authentication on, serve refuses to start without it (aud)
    env.setdefault("CDS_PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    env.update(env_extra or {})
    with open(log, "wb") as fh:
        proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                                cwd=tmp, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    svc = Service(f"http://127.0.0.1:{port}", proc, log, key)
    try:
        wait_http(f"{svc.url}/healthz", proc, 60, log)
    except Exception:
        stop(proc)
        raise
    return svc


@pytest.fixture(scope="session")
def service(tmp_path_factory, fhir_server) -> Service:
    """The service as a hospital runs it: authentication on (a test issuer whose key is generated
    here), and only the test FHIR server on the allowlist (plain http allowed: it is local)."""
    tmp = tmp_path_factory.mktemp("cds")
    key = ec_key()
    trusted = issuers_file(tmp / "issuers.json", [{"iss": ISS, "jwks": {"keys": [key.public_jwk()]}}])
    svc = start_service(tmp, {"CDS_TRUSTED_ISSUERS_FILE": str(trusted), "CDS_FHIR_SERVER_ALLOWLIST": fhir_server.base,
                              "CDS_ALLOW_HTTP_FHIR": "true"}, key=key)
    try:
        yield svc
    finally:
        stop(svc.proc)
