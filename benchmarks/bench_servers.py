"""HTTP servers side by side: `cds-service serve --server granian|gthread|gevent`, one after the
other in one run, each on 127.0.0.1 with the same workers x threads.

For each: benchmark 3's throughput (16 keep-alive clients; GET /healthz, then the patient-view hook
on the typical chart; a shorter bounded run than benchmark 3's 30 s), the ratio hook / healthz, and
the slow-client outcome: while 4 slowloris connections (a request line, then one header byte
every 2 s), 200 idle connections or 4 slow bodies (complete headers, then one body byte every 2 s)
are held, does a normal GET /healthz and a hook call each
answer within 2 s? Also what the server itself answers to a malformed request line (its status
and whether it carries the security headers the application adds).

Absolute figures depend on the machine's load; compare the rows of one run."""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time

import requests

from common import HOOK_PATH, THREADS, WORKERS, Server, hook_body, percentile, rss_kib, typical_chart
from loadgen import run

SECURITY_HEADERS = ("x-content-type-options", "cache-control", "referrer-policy", "x-frame-options",
                    "content-security-policy")


def normal_calls(url: str, body: bytes, bound: float = 2.0) -> str:
    out = []
    for name, call in (("healthz", lambda: requests.get(url + "/healthz", timeout=bound)),
                       ("hook", lambda: requests.post(url + HOOK_PATH, data=body, timeout=bound,
                                                      headers={"Content-Type": "application/json"}))):
        t = time.monotonic()
        try:
            r = call()
            out.append(f"{name} {r.status_code} {time.monotonic() - t:.2f}s")
        except requests.RequestException:
            out.append(f"{name} TIMEOUT>{bound:g}s")
    return ", ".join(out)


def attack(port: int, url: str, body: bytes, kind: str, hold: float) -> str:
    socks: list[socket.socket] = []
    done = threading.Event()
    try:
        n = 200 if kind == "idle" else 4
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if kind == "slowloris":
                s.sendall(b"POST " + HOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            elif kind == "slowbody":  # complete headers, then the body a byte at a time
                s.sendall(b"POST " + HOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          b"\r\nContent-Length: 100000\r\n\r\n{")
            socks.append(s)

        def drip() -> None:
            while not done.wait(2.0):
                for s in socks:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass

        t = threading.Thread(target=drip, daemon=True)
        if kind != "idle":
            t.start()
        time.sleep(2.5)
        result = normal_calls(url, body)
        time.sleep(max(0.0, hold - 2.5))
        return result
    finally:
        done.set()
        for s in socks:
            s.close()


def malformed(port: int) -> str:
    """The server's own answer to a malformed request line: status and security headers present."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    if not data:
        return "connection closed, no answer"
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    names = {line.split(":", 1)[0].strip().lower() for line in head[1:]}
    have = [h for h in SECURITY_HEADERS if h in names]
    return f"{head[0]}; security headers: {', '.join(have) or 'none'}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0, help="load per endpoint and server")
    ap.add_argument("--hold", type=float, default=6.0, help="seconds each attack is held")
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--servers", default="gthread,gevent,granian")
    a = ap.parse_args()
    body = json.dumps(hook_body(typical_chart())).encode()
    rows = []
    for name in a.servers.split(","):
        srv = Server(workers=a.workers, threads=a.threads, server=name)
        try:
            run(srv.port, "GET", "/healthz", seconds=2)  # warm-up
            run(srv.port, "POST", HOOK_PATH, body, {"Content-Type": "application/json"}, seconds=2)
            base = run(srv.port, "GET", "/healthz", seconds=a.seconds)
            hook = run(srv.port, "POST", HOOK_PATH, body, {"Content-Type": "application/json"}, seconds=a.seconds)
            rss = sum(rss_kib(p) for p in srv.worker_pids()) // 1024
            slow = attack(srv.port, srv.url, body, "slowloris", a.hold)
            idle = attack(srv.port, srv.url, body, "idle", a.hold)
            slowbody = attack(srv.port, srv.url, body, "slowbody", a.hold)
            bad = malformed(srv.port)
        finally:
            srv.stop()
        rows.append((name, base, hook, rss, slow, idle, slowbody, bad))
        p50, p99 = statistics.median(hook.latencies_ms), percentile(hook.latencies_ms, 99)
        print(f"{name}: healthz {base.throughput:.1f} req/s (errors {base.errors}), hook {hook.throughput:.1f} req/s "
              f"(errors {hook.errors}, p50 {p50:.1f} ms, p99 {p99:.1f} ms), ratio "
              f"{hook.throughput / max(base.throughput, 1e-9):.2f}, workers' RSS {rss} MiB", flush=True)
        print(f"  4 slowloris: {slow}\n  200 idle: {idle}\n  4 slow bodies: {slowbody}\n"
              f"  malformed request line: {bad}", flush=True)
    print(f"\n| server ({a.workers} workers x {a.threads} threads) | hook req/s | /healthz req/s | ratio | "
          "4 slowloris | 200 idle | 4 slow bodies |")
    print("|---|---|---|---|---|---|---|")
    for name, base, hook, rss, slow, idle, slowbody, bad in rows:
        def ok(s: str) -> str:
            return "answers < 2 s" if "healthz 200" in s and "hook 200" in s and "TIMEOUT" not in s \
                else f"**blocked** ({s})"
        print(f"| {name} | {hook.throughput:.1f} | {base.throughput:.1f} | "
              f"{hook.throughput / max(base.throughput, 1e-9):.2f} | {ok(slow)} | {ok(idle)} | {ok(slowbody)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
