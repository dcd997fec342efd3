"""What a new user meets first: `make run` and `make run-sandbox` as processes, and the README's quick
start run line by line in a fresh clone of the repository.

Each test starts make in its own session and, whatever happens, kills that whole process group at the
end, so no server outlives a test.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, free_port, wait_http

pytestmark = pytest.mark.e2e

MAKE = shutil.which("make")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATA_DIR"] = str(tmp / "var")
    return env


def _closed(port: int, within: float = 20.0) -> bool:
    """True once nothing accepts connections on the port (the server is gone, not just make)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.2)
    return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"make and the server did not stop within {timeout} s:\n{log.read_text()[-3000:]}") from None


def _make(target: str, tmp: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    if not MAKE:
        pytest.skip("make is not installed")
    log = tmp / f"make-{target}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([MAKE, "--no-print-directory", target, *args], cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, env=_env(tmp))
    return proc, log


def test_kill_of_make_run_stops_the_server(tmp_path):
    """`make run &` then `kill $!`: make passes SIGTERM to the server it exec'd, and both end."""
    port = free_port()
    proc, log = _make("run", tmp_path, f"PORT={port}")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 120, log)
        os.kill(proc.pid, signal.SIGTERM)  # make's own pid only, as `kill $!` does
        _wait(proc, log)
        assert _closed(port), f"the server still answers after make was killed:\n{log.read_text()[-2000:]}"
    finally:
        _kill_group(proc)


def test_run_sandbox_answers_a_locally_served_sandbox_and_stops_on_ctrl_c(tmp_path):
    """The sandbox profile: its own port (8090 by default, so a sandbox served locally keeps 8080),
    CORS for the hosted sandbox and for one served on localhost:8080, nobody else; Ctrl-C stops it."""
    port = free_port()
    proc, log = _make("run-sandbox", tmp_path, f"SANDBOX_PORT={port}")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 120, log)
        url = f"http://127.0.0.1:{port}/cds-services/bone-health-patient-view"
        for origin, allowed in (("http://localhost:8080", True), ("http://127.0.0.1:8080", True),
                                ("https://sandbox.cds-hooks.org", True), ("http://evil.example", False)):
            r = requests.options(url, timeout=5, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
                "Access-Control-Request-Private-Network": "true"})
            assert (r.headers.get("Access-Control-Allow-Origin") == origin) is allowed, (origin, dict(r.headers))
            if allowed:
                assert "authorization" in r.headers.get("Access-Control-Allow-Headers", "").lower()
                assert r.headers.get("Access-Control-Allow-Private-Network") == "true"
        # authentication stays on in this profile
        assert requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=5).status_code == 401
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        _wait(proc, log)
        assert _closed(port), log.read_text()[-2000:]
    finally:
        _kill_group(proc)


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- quick-start[^>]*-->\s*```bash\n(.*?)```\s*<!-- /quick-start -->", text, re.S)
    assert m, "README.md has no quick-start block between its markers"
    return m.group(1)


def test_readme_quick_start_runs_in_a_fresh_clone(tmp_path):
    """Every command of the README's quick start, in a fresh clone: make run installs and serves,
    discovery, one hook call, evaluate, and `kill %1` stops the server. Only the port is changed."""
    if not (shutil.which("git") and shutil.which("curl")):
        pytest.skip("the quick start needs git (to clone) and curl")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    port = free_port()
    script = _quick_start()
    assert "make run &" in script and "127.0.0.1:8080" in script
    script = script.replace("make run &", f"make run PORT={port} &").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = _env(tmp_path)
    env.pop("CDS_DATA_DIR")  # as a user runs it: the database goes to the clone's var/
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=clone, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"the quick start did not finish within 9 minutes:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    for service in ("bone-health-patient-view", "bone-health-order-select", "bone-health-order-sign"):
        assert f'"id": "{service}"' in out
    assert '"indicator": "critical"' in out
    assert re.search(r'"summary": "[^"]*(-|\\u2212|\u2212)4\.1', out), "example patient 1's card names her T-score -4.1"
    assert out.count('"cards"') >= 2, "the hook call and evaluate each print a CDS Hooks response"
    assert "Traceback" not in err
    assert _closed(port, within=5), "the server still answers after `kill %1; wait`"


def test_a_stop_while_the_workers_start_ends_at_once(tmp_path):
    """SIGTERM while a worker is still loading the application: the worker had the main process's
    signal handler then, took the signal as a flag in its own copy and went on to serve, and the
    main process waited 30 s before killing it. Now the stop takes about as long as a normal one."""
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    assert exe
    env = _env(tmp_path)
    env.update(CDS_AUTH_DISABLED="true", CDS_LOG_FORMAT="text")
    proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        seen = []
        for line in proc.stdout:  # the workers are forked, not yet serving
            seen.append(line)
            if "Spawning worker-2" in line:
                break
        time.sleep(0.2)  # inside the ~1 s in which the workers load the application
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server took more than 10 s to stop:\n" + "".join(seen)) from None
    finally:
        _kill_group(proc)
