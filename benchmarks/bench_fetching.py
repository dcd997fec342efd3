"""Benchmark 4, fetching: no prefetch; every key is fetched from a local FHIR test server that delays
each response by 100 ms. Baseline: one delayed response, fetched directly in this run.
Target: hook latency at most 1.5 x one delayed response (keys fetched in parallel, connections reused)."""
from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from common import HOOK_PATH, Server, free_port, typical_chart, verdict
from cds_service.knowledge import load_knowledge
from cds_service.services.patient_view import prefetch_templates

DELAY = 0.100
TOKEN = "bench-token"


class Fhir(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the service can reuse its connections
    resources: list[dict] = []
    connections: set[int] = set()

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, delayed ACKs add 40 ms to each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        Fhir.connections.add(self.client_address[1])
        time.sleep(DELAY)
        parts = urlsplit(self.path)
        path = parts.path.removeprefix("/fhir/")
        query = parse_qs(parts.query)
        if path.startswith("Patient/"):
            body = next((r for r in self.resources if r["resourceType"] == "Patient"), None)
        else:
            codes = {t.rpartition("|")[2] for t in query.get("code", [""])[0].split(",") if t}
            found = [r for r in self.resources if r["resourceType"] == path
                     and (not codes or any(c.get("code") in codes for c in r.get("code", {}).get("coding", [])))]
            body = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                    "entry": [{"resource": r} for r in found]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    Fhir.resources = [e["resource"] for e in typical_chart()["entry"]]
    pid = next(r["id"] for r in Fhir.resources if r["resourceType"] == "Patient")
    port = free_port()
    fhir = ThreadingHTTPServer(("127.0.0.1", port), Fhir)
    fhir.daemon_threads = True
    threading.Thread(target=fhir.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}/fhir"
    try:
        s = requests.Session()
        baseline = []
        for _ in range(10):
            t = time.perf_counter()
            s.get(f"{base_url}/Patient/{pid}").raise_for_status()
            baseline.append((time.perf_counter() - t) * 1000)
        env = {"CDS_FHIR_SERVER_ALLOWLIST": base_url, "CDS_ALLOW_HTTP_FHIR": "true"}
        with Server(env) as srv:
            hook = []
            for i in range(25):
                body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": base_url,
                        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                              "scope": "patient/*.read", "subject": "bench"},
                        "context": {"userId": "Practitioner/bench", "patientId": pid}}
                t = time.perf_counter()
                r = s.post(srv.url + HOOK_PATH, json=body)
                ms = (time.perf_counter() - t) * 1000
                if r.status_code != 200 or not r.json()["cards"]:
                    raise SystemExit(f"hook failed: {r.status_code} {r.text[:300]}")
                if i >= 5:  # the first calls open the connections
                    hook.append(ms)
            conns = len(Fhir.connections)
    finally:
        fhir.shutdown()
    b, h = statistics.median(baseline), statistics.median(hook)
    keys = len(prefetch_templates(load_knowledge()))
    print(f"4. fetching: no prefetch, {keys} keys from a local FHIR server delaying every response by "
          f"{DELAY * 1000:.0f} ms")
    print(f"  baseline: one delayed response  p50 {b:.1f} ms")
    print(f"  patient-view hook               p50 {h:.1f} ms  max {max(hook):.1f} ms over {len(hook)} calls; "
          f"{conns} connections opened to the FHIR server in all (2 workers)")
    print(verdict("hook p50 / one delayed response", h / b, 1.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
