"""Feedback that got a 200 survives the whole server being killed (SIGKILL) mid-traffic."""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timezone

import requests
from sqlalchemy import create_engine, select

from cds_service.store.models import feedback

from tests.conftest import SERVICE_URL
from tests.e2e.conftest import start_service, stop



def test_acknowledged_feedback_survives_sigkill(store_url, scenario_request, tmp_path):
    svc = start_service(tmp_path, {"CDS_AUTH_DISABLED": "true", "CDS_DATABASE_URL": store_url,
                                   "CDS_DATA_DIR": str(tmp_path / "data")}, workers=2)
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop_flag = threading.Event()
    try:
        cards = []
        for n in (1, 2, 3):
            r = requests.post(svc.url + SERVICE_URL, json=scenario_request(n), timeout=10)
            assert r.status_code == 200, r.text
            cards += r.json()["cards"]
        assert cards

        def client(worker: int) -> None:
            session = requests.Session()
            n = 0
            while not stop_flag.is_set():
                card = cards[(worker + n) % len(cards)]
                # distinct per worker and item: never a duplicate
                stamp = f"2025-01-01T00:{worker:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}Z"
                item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": stamp,
                        "overrideReason": {"reason": {"code": "durability"}}}
                n += 1
                try:
                    resp = session.post(svc.url + SERVICE_URL + "/feedback", json={"feedback": [item]}, timeout=3)
                except requests.RequestException:
                    continue  # the server is gone: this one was never acknowledged
                if resp.status_code == 200:
                    with lock:
                        acked.append((card["uuid"], stamp))

        threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        before_kill = len(acked)
        os.killpg(svc.proc.pid, signal.SIGKILL)  # while they are posting
        svc.proc.wait(timeout=10)
        time.sleep(0.3)
        stop_flag.set()
        for t in threads:
            t.join(timeout=5)
        assert not any(t.is_alive() for t in threads)
    finally:
        stop_flag.set()
        stop(svc.proc)
    assert before_kill > 20, f"only {before_kill} feedback items were acknowledged before the kill"
    assert len(set(acked)) == len(acked)
    eng = create_engine(store_url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(select(feedback.c.card_uuid, feedback.c.outcome_at)
                                .where(feedback.c.override_code == "durability")).all()
    finally:
        eng.dispose()
    stored = set()
    for card_uuid, at in rows:
        at = at.astimezone(timezone.utc) if at.tzinfo else at
        stored.add((card_uuid, at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"))
    assert len(stored) >= len(acked) > 0
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged feedback items are not in the database"
