"""Several processes write audit records and feedback to one database at once: nothing lost, no errors."""
from __future__ import annotations

import uuid

from cds_service.store import HookRecord, Store

from .conftest import count, query, run_processes, ts

PER_PROCESS = 25


def _writer(url: str, worker: int) -> tuple[int, int]:
    store = Store(url)
    stored = 0
    try:
        for n in range(PER_PROCESS):
            card_list = []
            for k in range(2):
                card_list.append({"uuid": str(uuid.uuid4()), "source": {"topic": {"code": f"topic-{k}"}},
                                  "indicator": "info", "summary": f"card {k}",
                                  "suggestions": [{"uuid": str(uuid.uuid4()), "label": f"do {k}"}]})
            store.record_hook(HookRecord("svc", str(uuid.uuid4()), f"p{worker}", "u", 200, "ok", card_list,
                                         {"patient": "prefetch"}, 1, 1, 2))
            items = [{"card": card_list[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": ts(n),
                      "acceptedSuggestions": [{"id": card_list[0]["suggestions"][0]["uuid"]}]},
                     {"card": card_list[1]["uuid"], "outcome": "overridden", "outcomeTimestamp": ts(n),
                      "overrideReason": {"reason": {"code": "other"}}}]
            s, dup = store.save_feedback("svc", items)
            assert dup == 0
            stored += s
        return PER_PROCESS, stored
    finally:
        store.dispose()


def test_four_processes_write_together(store_url):
    s = Store(store_url)
    try:
        s.migrate()
    finally:
        s.dispose()
    results = run_processes(_writer, [(store_url, w) for w in range(4)], timeout=100)
    assert results == [(PER_PROCESS, 2 * PER_PROCESS)] * 4
    assert count(store_url, "hook_calls") == 4 * PER_PROCESS
    assert count(store_url, "cards") == 8 * PER_PROCESS
    assert count(store_url, "suggestions") == 8 * PER_PROCESS
    assert count(store_url, "feedback") == 8 * PER_PROCESS
    per_patient = {r["patient_ref"]: r["n"] for r in query(
        store_url, "SELECT patient_ref, count(*) AS n FROM hook_calls GROUP BY patient_ref")}
    assert per_patient == {f"p{w}": PER_PROCESS for w in range(4)}


def test_four_processes_migrate_and_write_on_empty_database(store_url):
    """No prior migration: every process's first write migrates (under the lock) and then writes."""
    results = run_processes(_writer, [(store_url, w) for w in range(4)], timeout=100)
    assert results == [(PER_PROCESS, 2 * PER_PROCESS)] * 4
    assert count(store_url, "hook_calls") == 4 * PER_PROCESS
    assert count(store_url, "feedback") == 8 * PER_PROCESS
