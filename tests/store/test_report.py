"""Acceptance and override rates per topic and per suggestion, from known feedback; the report CLI."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from cds_service.cli import main
from cds_service.store import Store, report

from .conftest import issue_cards, make_app, overridden, post_feedback, ts, utc_today


def _by_topic(cards):
    out = {}
    for c in cards:
        out.setdefault(c["source"]["topic"]["code"], c)
    return out


@pytest.fixture()
def known(store_url, scenario_request):
    """Two calls of scenario 1 (same topics twice) and feedback on some of their cards."""
    client = make_app(store_url).test_client()
    first = _by_topic(issue_cards(client, scenario_request, 1))
    second_cards = issue_cards(client, scenario_request, 1)
    second = _by_topic(second_cards)
    assert {"treatment", "monitoring", "bmd-interpretation", "supportive-care"} <= set(first)
    t_sugg = first["treatment"]["suggestions"][0]
    m_sugg = first["monitoring"]["suggestions"][0]
    items = [
        {"card": first["treatment"]["uuid"], "outcome": "accepted", "outcomeTimestamp": ts(1),
         "acceptedSuggestions": [{"id": t_sugg["uuid"]}]},
        # a second acceptance of the same card (another time): still one accepted card
        {"card": first["treatment"]["uuid"], "outcome": "accepted", "outcomeTimestamp": ts(2),
         "acceptedSuggestions": [{"id": t_sugg["uuid"]}]},
        {"card": first["monitoring"]["uuid"], "outcome": "accepted", "outcomeTimestamp": ts(3),
         "acceptedSuggestions": [{"id": m_sugg["uuid"]}]},
        overridden(first["bmd-interpretation"], 4, code="reason-a"),
        overridden(first["supportive-care"], 5, code="reason-a"),
        overridden(second["treatment"], 6, code="reason-b", comment="x"),
    ]
    assert post_feedback(client, {"feedback": items}).status_code == 200
    return store_url, first, second_cards, t_sugg, m_sugg


def _expected_suggestions(first, second_cards, accepted_ids):
    offered = {}
    for c in list(first.values()) + second_cards:
        for s in c.get("suggestions", []):
            o, a = offered.get(s["label"], (0, 0))
            offered[s["label"]] = (o + 1, a + (s["uuid"] in accepted_ids))
    return offered


def test_build(known):
    url, first, second_cards, t_sugg, m_sugg = known
    # the first call's cards of scenario 1 are exactly one per topic (so are the second's)
    issued = {}
    for c in second_cards:
        issued[c["source"]["topic"]["code"]] = issued.get(c["source"]["topic"]["code"], 0) + 2
    store = Store(url)
    try:
        rep = report.build(store, utc_today() - timedelta(days=1), utc_today() + timedelta(days=1))
    finally:
        store.dispose()
    topics = {t["topic"]: t for t in rep["topics"]}
    assert {k: v["issued"] for k, v in topics.items()} == issued
    want = {"treatment": (1, 1), "monitoring": (1, 0), "bmd-interpretation": (0, 1), "supportive-care": (0, 1)}
    for topic, (acc, ovr) in want.items():
        t = topics[topic]
        assert (t["accepted"], t["overridden"]) == (acc, ovr), topic
        assert t["acceptance_rate"] == round(acc / t["issued"], 4)
        assert t["override_rate"] == round(ovr / t["issued"], 4)
    for topic in set(topics) - set(want):
        assert (topics[topic]["accepted"], topics[topic]["overridden"]) == (0, 0)

    expected = _expected_suggestions(first, second_cards, {t_sugg["uuid"], m_sugg["uuid"]})
    got = {s["suggestion"]: (s["offered"], s["accepted"]) for s in rep["suggestions"]}
    assert got == expected
    assert got[t_sugg["label"]][1] >= 1 and got[m_sugg["label"]][1] >= 1
    for s in rep["suggestions"]:
        assert s["acceptance_rate"] == round(s["accepted"] / s["offered"], 4)

    reasons = {(r["topic"], r["code"]): r["count"] for r in rep["override_reasons"]}
    assert reasons == {("bmd-interpretation", "reason-a"): 1, ("supportive-care", "reason-a"): 1,
                       ("treatment", "reason-b"): 1}
    assert {r["display"] for r in rep["override_reasons"]} == {"reason a", "reason b"}

    today = {d["topic"]: d for d in rep["daily"]}
    assert today["treatment"]["accepted"] == 1 and today["treatment"]["overridden"] == 1
    assert all(d["day"] == utc_today().isoformat() for d in rep["daily"])

    # outside the period: nothing
    store = Store(url)
    try:
        empty = report.build(store, utc_today() - timedelta(days=10), utc_today() - timedelta(days=5))
    finally:
        store.dispose()
    assert empty["topics"] == [] and empty["suggestions"] == [] and empty["override_reasons"] == []


def _cli(monkeypatch, capsys, url, *args):
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    code = main(["report", "--from", (utc_today() - timedelta(days=1)).isoformat(),
                 "--to", (utc_today() + timedelta(days=1)).isoformat(), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json(known, monkeypatch, capsys):
    url = known[0]
    code, out, _ = _cli(monkeypatch, capsys, url, "--format", "json")
    assert code == 0
    rep = json.loads(out)
    store = Store(url)
    try:
        assert rep == report.build(store, utc_today() - timedelta(days=1), utc_today() + timedelta(days=1))
    finally:
        store.dispose()
    assert {t["topic"]: t["accepted"] for t in rep["topics"]}["treatment"] == 1


def test_cli_csv(known, monkeypatch, capsys):
    code, out, _ = _cli(monkeypatch, capsys, known[0], "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:3] == ["section", "name", "issued_or_offered"]
    topic_rows = {r[1]: r for r in rows if r[0] == "topic"}
    assert topic_rows["treatment"][2:7] == ["2", "1", "1", "0.5", "0.5"]
    assert topic_rows["monitoring"][2:7] == ["2", "1", "0", "0.5", "0.0"]
    reasons = [r for r in rows if r[0] == "override_reason"]
    assert ["override_reason", "treatment", "", "", "", "", "", "reason-b", "reason b", "1"] in reasons
    assert any(r[0] == "suggestion" and r[1] == known[3]["label"] for r in rows)


def test_cli_table_and_plot(known, monkeypatch, capsys, tmp_path):
    png = tmp_path / "out.png"
    code, out, err = _cli(monkeypatch, capsys, known[0], "--format", "table", "--plot", str(png))
    assert code == 0, err
    assert "treatment" in out and "override reasons" in out and "reason-b" in out
    line = next(line for line in out.splitlines() if line.startswith("treatment "))
    assert line.split()[1:4] == ["2", "1", "1"] and "50.0%" in line
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_cli_plot_empty_period(store_url, monkeypatch, capsys, tmp_path):
    png = tmp_path / "empty.png"
    code, out, err = _cli(monkeypatch, capsys, store_url, "--format", "json", "--plot", str(png))
    assert code == 0, err
    assert json.loads(out)["topics"] == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["--from", "2025-13-01"], ["--to", "yesterday"], ["--from", "2025-02-30"],
                                  ["--from", "2025-03-02", "--to", "2025-03-01"]])
def test_cli_bad_dates(args, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert "cds-service report:" in err and ("YYYY-MM-DD" in err or "after" in err)
