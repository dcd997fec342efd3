"""Worker CPU per call of this checkout against another git revision, measured side by side.

    python compare_revisions.py REV [--rounds 8]

The development machine is a shared VM whose speed drifts by 10-20% from one minute to the next,
which hides a 5% change between two runs made minutes apart. This script starts two servers
(1 worker x 1 thread each: one from a temporary git worktree of REV, one from this checkout), sends
them the same requests in alternating rounds of /healthz and the patient-view hook from one
keep-alive client each, and adds up each worker's CPU time (/proc) per request. Drift then hits
both sides alike. Prints CPU per call and hook/healthz for each side and the change.
Servers bind 127.0.0.1 only; every loop is bounded in count.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import tempfile

from common import HOOK_PATH, ROOT, Server, cpu_seconds, hook_body, typical_chart


def _calls(conn: http.client.HTTPConnection, what: str, body: bytes, n: int) -> None:
    method, path, data = ("GET", "/healthz", None) if what == "healthz" else ("POST", HOOK_PATH, body)
    for _ in range(n):
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"{what} answered {resp.status}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rev", help="git revision to compare with, e.g. HEAD~3 or a commit id")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    tree = tempfile.mkdtemp(prefix="bench-rev-")
    servers: dict[str, Server] = {}
    try:
        added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tree, a.rev],
                               capture_output=True, text=True)
        if added.returncode:
            raise SystemExit(f"git worktree add {a.rev}: {added.stderr.strip()}")
        body = json.dumps(hook_body(typical_chart())).encode()
        # PYTHONPATH puts the other revision's cds_service ahead of this checkout's editable install
        servers[a.rev] = Server(env={"PYTHONPATH": tree}, workers=1, threads=1)
        servers["this checkout"] = Server(workers=1, threads=1)
        conns = {k: http.client.HTTPConnection("127.0.0.1", s.port, timeout=30) for k, s in servers.items()}
        for k in servers:  # warm-up
            _calls(conns[k], "healthz", body, 200)
            _calls(conns[k], "hook", body, 200)
        used = {(k, w): [0.0, 0] for k in servers for w in ("healthz", "hook")}
        for n in range(a.rounds):
            order = list(servers.items()) if n % 2 == 0 else list(servers.items())[::-1]  # no side always first
            for k, srv in order:
                for what, n in (("healthz", 300), ("hook", 150)):
                    pids = srv.worker_pids()
                    before = cpu_seconds(pids)
                    _calls(conns[k], what, body, n)
                    used[(k, what)][0] += cpu_seconds(pids) - before
                    used[(k, what)][1] += n
        per = {key: 1000 * cpu / n for key, (cpu, n) in used.items()}
        print(f"worker CPU per call, 1 worker x 1 thread, {a.rounds} alternating rounds, one client each")
        for k in servers:
            print(f"  {k:14s} /healthz {per[(k, 'healthz')]:.2f} ms   hook {per[(k, 'hook')]:.2f} ms   "
                  f"hook / healthz {per[(k, 'hook')] / per[(k, 'healthz')]:.2f}")
        change = per[("this checkout", "hook")] / per[(a.rev, "hook")] - 1
        print(f"  hook CPU per call, this checkout against {a.rev}: {change:+.0%}")
    finally:
        for s in servers.values():
            s.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
