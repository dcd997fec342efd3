"""Acceptance and override rates per topic and per suggestion, from known feedback; the report CLI."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from cds_service.cli import main
from cds_service.store import Store, report

from .conftest import accepted, count, issue_cards, make_app, overridden, post_feedback, query, ts, utc_today


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


# -- a card with several outcomes counts once, by its last (item 9) ---------------------------------

def _report(url, **kw):
    store = Store(url)
    try:
        return report.build(store, utc_today() - timedelta(days=1), utc_today() + timedelta(days=1), **kw)
    finally:
        store.dispose()


def test_the_last_outcome_of_a_card_wins(store_url, scenario_request):
    """Accepted then overridden counts as overridden only; overridden then accepted as accepted only;
    "then" by outcomeTimestamp, not by arrival; on equal timestamps the later-received row wins.
    Every feedback row stays stored."""
    client = make_app(store_url).test_client()
    first = _by_topic(issue_cards(client, scenario_request, 1))
    second = _by_topic(issue_cards(client, scenario_request, 1))
    treatment, monitoring, tie = first["treatment"], first["monitoring"], second["treatment"]
    # treatment: accepted (t1), then overridden (t2)
    assert post_feedback(client, {"feedback": [accepted(treatment, 1)]}).status_code == 200
    assert post_feedback(client, {"feedback": [overridden(treatment, 2, code="changed-mind")]}).status_code == 200
    # monitoring: the acceptance (t4) arrives first, the earlier override (t3) after it: accepted wins
    assert post_feedback(client, {"feedback": [accepted(monitoring, 4)]}).status_code == 200
    assert post_feedback(client, {"feedback": [overridden(monitoring, 3, code="too-early")]}).status_code == 200
    # the second call's treatment card: overridden and accepted at the same instant, the acceptance received last
    assert post_feedback(client, {"feedback": [overridden(tie, 7, code="same-time")]}).status_code == 200
    assert post_feedback(client, {"feedback": [accepted(tie, 7)]}).status_code == 200
    assert count(store_url, "feedback") == 6  # both outcomes of every card are kept

    rep = _report(store_url)
    topics = {t["topic"]: t for t in rep["topics"]}
    assert (topics["treatment"]["issued"], topics["treatment"]["accepted"], topics["treatment"]["overridden"]) \
        == (2, 1, 1)
    assert (topics["monitoring"]["issued"], topics["monitoring"]["accepted"], topics["monitoring"]["overridden"]) \
        == (2, 1, 0)
    assert topics["treatment"]["acceptance_rate"] == 0.5 and topics["treatment"]["override_rate"] == 0.5
    assert topics["monitoring"]["override_rate"] == 0.0
    # only the override that stands is a reason
    assert [(r["topic"], r["code"], r["count"]) for r in rep["override_reasons"]] == [("treatment", "changed-mind", 1)]
    # the first treatment card's suggestion was accepted and then overridden: only the second's counts
    sugg = {s["suggestion"]: (s["offered"], s["accepted"]) for s in rep["suggestions"]}
    assert sugg[treatment["suggestions"][0]["label"]] == (2, 1)
    assert sugg[monitoring["suggestions"][0]["label"]] == (2, 1)
    daily = {d["topic"]: d for d in rep["daily"]}
    assert (daily["treatment"]["accepted"], daily["treatment"]["overridden"]) == (1, 1)
    assert (daily["monitoring"]["accepted"], daily["monitoring"]["overridden"]) == (1, 0)


def test_overridden_then_accepted_counts_as_accepted(store_url, scenario_request):
    client = make_app(store_url).test_client()
    card = _by_topic(issue_cards(client, scenario_request, 1))["treatment"]
    items = [overridden(card, 1, code="first-thought"), accepted(card, 2)]
    assert post_feedback(client, {"feedback": items}).status_code == 200
    rep = _report(store_url)
    t = {t["topic"]: t for t in rep["topics"]}["treatment"]
    assert (t["accepted"], t["overridden"]) == (1, 0)
    assert rep["override_reasons"] == []
    assert {s["suggestion"]: s["accepted"] for s in rep["suggestions"]}[card["suggestions"][0]["label"]] == 1


def test_outcome_timestamps_with_offsets_are_ordered_as_instants(store_url, scenario_request):
    """10:30+02:00 is before 09:00Z: the acceptance at 09:00Z is the card's last outcome."""
    client = make_app(store_url).test_client()
    card = _by_topic(issue_cards(client, scenario_request, 1))["treatment"]
    acc = {**accepted(card), "outcomeTimestamp": "2025-03-01T09:00:00Z"}
    ovr = {**overridden(card), "outcomeTimestamp": "2025-03-01T10:30:00+02:00"}
    assert post_feedback(client, {"feedback": [acc, ovr]}).status_code == 200
    t = {t["topic"]: t for t in _report(store_url)["topics"]}["treatment"]
    assert (t["accepted"], t["overridden"]) == (1, 0)


# -- the card console's calls (item 8) --------------------------------------------------------------

CONSOLE_HEADER = {"X-CDS-Console": "1"}


def _console_and_ehr(store_url, scenario_request, console_on=True):
    """One EHR call and two console-marked calls of scenario 1, feedback on each call's treatment card."""
    client = make_app(store_url, console=console_on).test_client()
    ehr = _by_topic(issue_cards(client, scenario_request, 1))
    marked = []
    for _ in range(2):
        r = post_feedback(client, scenario_request(1), url="/cds-services/bone-health-patient-view",
                          headers=CONSOLE_HEADER)
        assert r.status_code == 200
        marked.append(_by_topic(r.get_json()["cards"]))
    items = [accepted(ehr["treatment"], 1), overridden(marked[0]["treatment"], 2, code="console-try"),
             overridden(marked[1]["treatment"], 3, code="console-try")]
    # the console posts its feedback with the header too; feedback needs no mark: it follows its card
    assert post_feedback(client, {"feedback": items}, headers=CONSOLE_HEADER).status_code == 200
    return ehr, marked


def test_console_calls_are_marked_in_the_audit_and_left_out_of_the_report(store_url, scenario_request):
    ehr, marked = _console_and_ehr(store_url, scenario_request)
    origins = sorted((r["origin"] or "") for r in query(store_url, "SELECT origin FROM hook_calls"))
    assert origins == ["", "console", "console"]
    n_cards = len(ehr)

    rep = _report(store_url)
    topics = {t["topic"]: t for t in rep["topics"]}
    assert topics["treatment"]["issued"] == 1
    assert (topics["treatment"]["accepted"], topics["treatment"]["overridden"]) == (1, 0)
    assert sum(t["issued"] for t in rep["topics"]) == n_cards
    assert rep["override_reasons"] == []
    assert all(s["offered"] == 1 for s in rep["suggestions"])
    assert rep["console"] == {"included": False, "calls": 2, "cards": 2 * n_cards}
    assert "left out, 2 console calls" in report.as_table(rep)

    rep = _report(store_url, include_console=True)
    topics = {t["topic"]: t for t in rep["topics"]}
    assert topics["treatment"]["issued"] == 3
    assert (topics["treatment"]["accepted"], topics["treatment"]["overridden"]) == (1, 2)
    assert rep["override_reasons"] == [{"topic": "treatment", "code": "console-try", "display": "console try",
                                        "count": 2}]
    assert rep["console"] == {"included": True, "calls": 2, "cards": 2 * n_cards}
    assert "console calls: included, 2 console calls" in report.as_table(rep)


def test_the_console_header_is_ignored_when_the_console_is_off(store_url, scenario_request):
    """With CDS_CONSOLE off (production) a caller cannot hide its calls from the report."""
    ehr, _ = _console_and_ehr(store_url, scenario_request, console_on=False)
    assert [r["origin"] for r in query(store_url, "SELECT origin FROM hook_calls")] == [None, None, None]
    rep = _report(store_url)
    t = {t["topic"]: t for t in rep["topics"]}["treatment"]
    assert (t["issued"], t["accepted"], t["overridden"]) == (3, 1, 2)
    assert rep["console"] == {"included": False, "calls": 0, "cards": 0}
    assert "console calls: none in this period" in report.as_table(rep)


def test_cli_include_console(store_url, scenario_request, monkeypatch, capsys):
    _console_and_ehr(store_url, scenario_request)
    code, out, _ = _cli(monkeypatch, capsys, store_url)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("treatment "))
    assert line.split()[1:4] == ["1", "1", "0"]
    assert "console calls: left out, 2 console calls" in out and "--include-console" in out
    code, out, _ = _cli(monkeypatch, capsys, store_url, "--include-console")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("treatment "))
    assert line.split()[1:4] == ["3", "1", "2"]
    assert "console calls: included, 2 console calls" in out
    code, out, err = _cli(monkeypatch, capsys, store_url, "--format", "csv")
    assert code == 0 and "console calls: left out, 2 console calls" in err
    assert {r[1]: r for r in csv.reader(io.StringIO(out)) if r[0] == "topic"}["treatment"][2:5] == ["1", "1", "0"]
    code, out, _ = _cli(monkeypatch, capsys, store_url, "--format", "json", "--include-console")
    assert json.loads(out)["console"] == {"included": True, "calls": 2, "cards": json.loads(out)["console"]["cards"]}


# -- which database --------------------------------------------------------------------------------

def test_the_report_names_its_database_without_the_password(store_url, monkeypatch, capsys):
    from sqlalchemy.engine import make_url

    url = store_url
    if url.startswith("postgresql"):  # the test server trusts local connections: any password works
        url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
        assert ":s3cret-pw@" in url
        shown = url.replace(":s3cret-pw@", ":***@")
    else:
        shown = url
    code, out, err = _cli(monkeypatch, capsys, url)
    assert code == 0, err
    assert out.splitlines()[1] == f"database: {shown}"
    code, out, err = _cli(monkeypatch, capsys, url, "--format", "json")
    assert code == 0 and json.loads(out)["database"] == shown
    code, out, err = _cli(monkeypatch, capsys, url, "--format", "csv")
    assert code == 0 and f"cds-service report: database: {shown}" in err.splitlines()
    assert "s3cret-pw" not in out + err


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://cds:p%40ss@db.example:5432/cds", "postgresql+psycopg://cds:***@db.example:5432/cds"),
    ("postgresql+psycopg://cds@db/cds", "postgresql+psycopg://cds@db/cds"),
    ("sqlite:///var/cds.db", "sqlite:///var/cds.db"),
    ("sqlite:////srv/cds/cds.db", "sqlite:////srv/cds/cds.db"),
])
def test_database_name(url, shown):
    assert report.database_name(url) == shown


# -- the chart ---------------------------------------------------------------------------------------

def _synthetic(start, end, daily):
    topics = sorted({d["topic"] for d in daily})
    return {"from": start.isoformat(), "to": end.isoformat(), "database": "sqlite:///x.db",
            "console": {"included": False, "calls": 0, "cards": 0},
            "topics": [{"topic": t, "issued": sum(d["issued"] for d in daily if d["topic"] == t)} for t in topics],
            "suggestions": [], "override_reasons": [], "daily": daily}


def _day(day, topic, issued, acc, ovr):
    return {"day": day.isoformat(), "topic": topic, "issued": issued, "accepted": acc, "overridden": ovr,
            "acceptance_rate": round(acc / issued, 4), "override_rate": round(ovr / issued, 4)}


@pytest.mark.parametrize("days, ticks", [(1, 1), (7, 7), (30, 5), (365, None)])
def test_the_chart_spans_the_period(days, ticks):
    """The x-axis is the report's period, from the start of --from to the end of --to, whatever the data."""
    from datetime import date, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    end = date(2025, 3, 31)
    start = end - timedelta(days=days - 1)
    rep = _synthetic(start, end, [_day(end, "treatment", 4, 2, 1)])  # data on the last day only
    fig = report.figure(rep)
    try:
        lo, hi = mdates.date2num(datetime(start.year, start.month, start.day)), mdates.date2num(datetime(2025, 4, 1))
        assert report.x_limits(rep) == (datetime.combine(start, datetime.min.time()), datetime(2025, 4, 1))
        for ax in fig.axes:
            assert ax.get_xlim() == pytest.approx((lo, hi))
        ax = fig.axes[-1]
        positions = [p for p in ax.get_xticks() if lo <= p <= hi]
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        if ticks is not None:
            assert len(positions) == ticks and len(labels) == ticks
        else:
            assert 4 <= len(positions) <= 13
        if days == 1:
            assert labels == ["31 Mar 2025"]
    finally:
        plt.close(fig)


def test_the_chart_keeps_coinciding_series_visible():
    """Two topics with the same rates on the same days: their points sit side by side within each day,
    with different markers and line styles, open, each marker smaller than the one before it and drawn
    over it."""
    from datetime import date, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    end = date(2025, 3, 31)
    daily = [_day(end - timedelta(days=i), t, 4, 2, 1) for i in range(5) for t in ("monitoring", "treatment")]
    fig = report.figure(_synthetic(end - timedelta(days=29), end, daily))
    try:
        for ax in fig.axes:
            lines = [line for line in ax.get_lines() if len(line.get_xdata())]
            assert len(lines) == 2
            a, b = lines
            assert list(a.get_ydata()) == list(b.get_ydata())  # they do coincide
            assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
            assert a.get_markersize() > b.get_markersize() and a.get_zorder() < b.get_zorder()
            assert a.get_markerfacecolor() == "none" and b.get_markerfacecolor() == "none"
            assert len(a.get_xdata()) == 5
            for xa, xb in zip(a.get_xdata(), b.get_xdata()):
                day = mdates.num2date(xa).date()
                lo, hi = (mdates.date2num(datetime.combine(d, datetime.min.time())) for d in (day, day + timedelta(1)))
                assert lo < xa < xb < hi  # side by side, within their day
    finally:
        plt.close(fig)
