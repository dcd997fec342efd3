"""Acceptance and override rates of the cards, per topic and per suggestion, with override reasons.

Each card counts once, by its last outcome: a card accepted and then overridden (an EHR, or the CDS
Hooks sandbox, may send both) is overridden; overridden and then accepted, accepted. The last is the
latest ``outcomeTimestamp``, then the later-received row; every feedback row stays stored. A card's
accepted suggestions are those of its acceptances since its last override.

The card console's calls (``hook_calls.origin`` = ``console``) are left out unless asked for: they
are developers and reviewers trying the service, not clinicians."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import make_url

from . import Store
from .models import cards, feedback, hook_calls, suggestions

CONSOLE = "console"


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def database_name(url: str) -> str:
    """The database URL with any password masked, e.g. postgresql+psycopg://cds:***@db/cds."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never print a URL that could not be parsed (it may hold a secret)
        return "(a database URL that cannot be parsed)"


def build(store: Store, start: date, end: date, include_console: bool = False) -> dict[str, Any]:
    """Cards issued from ``start`` to ``end`` (inclusive) and the feedback given on them."""
    lo = datetime.combine(start, time.min, tzinfo=timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=timezone.utc)
    in_range = (cards.c.issued_at >= lo) & (cards.c.issued_at < hi)
    from_console = hook_calls.c.origin == CONSOLE
    kept = in_range if include_console else in_range & or_(hook_calls.c.origin.is_(None), ~from_console)
    with_call = cards.join(hook_calls, hook_calls.c.id == cards.c.hook_call_id)
    with store.engine.connect() as conn:
        console_calls = conn.execute(select(func.count()).select_from(hook_calls).where(
            (hook_calls.c.called_at >= lo) & (hook_calls.c.called_at < hi) & from_console)).scalar_one()
        console_cards = conn.execute(select(func.count()).select_from(with_call)
                                     .where(in_range & from_console)).scalar_one()
        issued_rows = conn.execute(select(cards.c.issued_at, cards.c.topic).select_from(with_call).where(kept)).all()
        offered = conn.execute(
            select(suggestions.c.label, suggestions.c.uuid)
            .select_from(with_call.join(suggestions, suggestions.c.card_uuid == cards.c.uuid)).where(kept)).all()
        fb_rows = conn.execute(
            select(feedback.c.card_uuid, cards.c.topic, cards.c.issued_at, feedback.c.outcome,
                   feedback.c.accepted_suggestions, feedback.c.override_code, feedback.c.override_display)
            .select_from(with_call.join(feedback, feedback.c.card_uuid == cards.c.uuid)).where(kept)
            .order_by(feedback.c.outcome_at, feedback.c.id)).all()

    # each card's last outcome (rows come oldest first)
    last: dict[str, dict[str, Any]] = {}
    for card, topic, issued_at, outcome, accepted_json, code, display in fb_rows:
        accepted: set[str] = set()
        if outcome == "accepted":
            accepted = set(json.loads(accepted_json or "[]"))
            prev = last.get(card)
            if prev is not None and prev["outcome"] == "accepted":
                accepted |= prev["accepted"]  # a second acceptance (another suggestion) adds to the first
        last[card] = {"topic": topic, "day": issued_at.date().isoformat(), "outcome": outcome,
                      "accepted": accepted, "code": code or "", "display": display or ""}

    issued = Counter(topic for _, topic in issued_rows)
    per_outcome: dict[str, Counter[str]] = defaultdict(Counter)
    for f in last.values():
        per_outcome[f["topic"]][f["outcome"]] += 1
    topics = []
    for topic in sorted(set(issued) | set(per_outcome)):
        n = issued.get(topic, 0)
        acc, ovr = per_outcome[topic]["accepted"], per_outcome[topic]["overridden"]
        topics.append({"topic": topic, "issued": n, "accepted": acc, "overridden": ovr,
                       "acceptance_rate": _rate(acc, n), "override_rate": _rate(ovr, n)})

    accepted_ids = set().union(*(f["accepted"] for f in last.values())) if last else set()
    by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for label, uuid_ in offered:
        by_label[label][0] += 1
        by_label[label][1] += uuid_ in accepted_ids
    sugg = [{"suggestion": label, "offered": o, "accepted": a, "acceptance_rate": _rate(a, o)}
            for label, (o, a) in sorted(by_label.items())]

    reasons = Counter((f["topic"], f["code"], f["display"]) for f in last.values() if f["outcome"] == "overridden")
    reason_rows = [{"topic": t, "code": c, "display": d, "count": n}
                   for (t, c, d), n in sorted(reasons.items(), key=lambda r: (r[0][0], -r[1], r[0][1], r[0][2]))]

    days: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"issued": 0, "accepted": 0, "overridden": 0})
    for issued_at, topic in issued_rows:
        days[(issued_at.date().isoformat(), topic)]["issued"] += 1
    for f in last.values():
        if f["outcome"] in ("accepted", "overridden"):
            days[(f["day"], f["topic"])][f["outcome"]] += 1
    daily = [{"day": d, "topic": t, **v, "acceptance_rate": _rate(v["accepted"], v["issued"]),
              "override_rate": _rate(v["overridden"], v["issued"])} for (d, t), v in sorted(days.items())]
    return {"from": start.isoformat(), "to": end.isoformat(), "database": database_name(store.url),
            "console": {"included": include_console, "calls": console_calls, "cards": console_cards},
            "topics": topics, "suggestions": sugg, "override_reasons": reason_rows, "daily": daily}


def console_note(rep: dict[str, Any]) -> str:
    """Whether the card console's calls are in the report, and how many there were."""
    c = rep["console"]
    if not c["calls"]:
        return "console calls: none in this period"
    calls = f"{c['calls']} console call{'s' if c['calls'] != 1 else ''} ({c['cards']} cards)"
    if c["included"]:
        return f"console calls: included, {calls}"
    return f"console calls: left out, {calls}; --include-console counts them"


def as_csv(rep: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "name", "issued_or_offered", "accepted", "overridden", "acceptance_rate", "override_rate",
                "reason_code", "reason", "count"])
    for t in rep["topics"]:
        w.writerow(["topic", t["topic"], t["issued"], t["accepted"], t["overridden"], t["acceptance_rate"],
                    t["override_rate"], "", "", ""])
    for s in rep["suggestions"]:
        w.writerow(["suggestion", s["suggestion"], s["offered"], s["accepted"], "", s["acceptance_rate"], "", "", "", ""])
    for r in rep["override_reasons"]:
        w.writerow(["override_reason", r["topic"], "", "", "", "", "", r["code"], r["display"], r["count"]])
    return out.getvalue()


def as_table(rep: dict[str, Any]) -> str:
    lines = [f"Cards issued {rep['from']} to {rep['to']}", f"database: {rep['database']}", console_note(rep), ""]
    lines.append(f"{'topic':<20} {'issued':>7} {'accepted':>9} {'overridden':>11} {'accept %':>9} {'override %':>11}")
    for t in rep["topics"]:
        lines.append(f"{t['topic']:<20} {t['issued']:>7} {t['accepted']:>9} {t['overridden']:>11} "
                     f"{100 * t['acceptance_rate']:>8.1f}% {100 * t['override_rate']:>10.1f}%")
    lines += ["", f"{'suggestion':<60} {'offered':>8} {'accepted':>9} {'accept %':>9}"]
    for s in rep["suggestions"]:
        lines.append(f"{s['suggestion'][:60]:<60} {s['offered']:>8} {s['accepted']:>9} {100 * s['acceptance_rate']:>8.1f}%")
    lines += ["", "override reasons"]
    for r in rep["override_reasons"]:
        lines.append(f"  {r['topic']:<20} {r['count']:>5}  {r['code']} {r['display']}")
    return "\n".join(lines) + "\n"


# -- the chart ---------------------------------------------------------------------------------

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
LINESTYLES = ("-", "--", "-.", ":")


def x_limits(rep: dict[str, Any]) -> tuple[datetime, datetime]:
    """The period on the x-axis: from the start of --from to the end of --to (each day is the span
    from its midnight to the next; its point sits at noon)."""
    start, end = date.fromisoformat(rep["from"]), date.fromisoformat(rep["to"])
    return datetime.combine(start, time.min), datetime.combine(end + timedelta(days=1), time.min)


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12))


def _date_ticks(ax: Any, start: date, end: date) -> None:
    """Ticks for the period: each day (at its noon) up to ten days, every 2 or 7 or 14 days up to four
    months, else months or years as matplotlib chooses, labelled concisely."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FixedLocator

    n = (end - start).days + 1
    if n > 120:
        loc = mdates.AutoDateLocator(minticks=4, maxticks=13)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        return
    stride = 1 if n <= 10 else 2 if n <= 20 else 7 if n <= 62 else 14
    days = [start + timedelta(days=i) for i in range(0, n, stride)]
    ax.set_xticks([mdates.date2num(_noon(d)) for d in days],
                  [d.strftime("%d %b %Y" if n == 1 else "%d %b") for d in days])
    if stride > 1:
        ax.xaxis.set_minor_locator(FixedLocator([mdates.date2num(_noon(start + timedelta(days=i))) for i in range(n)]))
    if n > 1:
        years = sorted({start.year, end.year})
        ax.set_xlabel("–".join(str(y) for y in years), fontsize=9)


def figure(rep: dict[str, Any]) -> Any:
    """The chart as a matplotlib Figure: acceptance (top) and override (bottom) rates per day, one
    colour, marker and line style per topic. Series that coincide stay visible: the topics' points
    of a day sit side by side within that day, and are open shapes, each smaller than the one before
    it and drawn over it, so equal points show as nested outlines where the days are narrow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, (acc_ax, ovr_ax) = plt.subplots(2, 1, sharex=True, figsize=(9.5, 6), dpi=100)
    topics = sorted({d["topic"] for d in rep["daily"]})
    issued = {t["topic"]: t["issued"] for t in rep["topics"]}
    colours = plt.get_cmap("tab10").colors
    step = min(0.2, 0.6 / max(1, len(topics) - 1))  # days between the topics' points of one day
    for i, topic in enumerate(topics):
        rows = [d for d in rep["daily"] if d["topic"] == topic]
        shift = (i - (len(topics) - 1) / 2) * step
        x = [mdates.date2num(_noon(date.fromisoformat(d["day"]))) + shift for d in rows]
        style = {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)],
                 "linestyle": LINESTYLES[i % len(LINESTYLES)], "linewidth": 1.3, "alpha": 0.9,
                 "markersize": 12 * 0.82 ** i, "markerfacecolor": "none", "markeredgewidth": 1.8,
                 "zorder": 3 + i}
        acc_ax.plot(x, [100 * d["acceptance_rate"] for d in rows], label=f"{topic} ({issued.get(topic, 0)} cards)",
                    **style)
        ovr_ax.plot(x, [100 * d["override_rate"] for d in rows], **style)
    start, end = date.fromisoformat(rep["from"]), date.fromisoformat(rep["to"])
    lo, hi = x_limits(rep)
    for ax, what in ((acc_ax, "accepted"), (ovr_ax, "overridden")):
        ax.set_xlim(mdates.date2num(lo), mdates.date2num(hi))
        ax.set_ylim(-5, 105)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.set_ylabel(f"% {what}", fontsize=9)
        ax.grid(True, alpha=0.3)
        if not topics:
            ax.text(0.5, 0.5, "no cards in this period", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
    _date_ticks(ovr_ax, start, end)
    acc_ax.set_title(f"Cards accepted and overridden, % of the cards issued that day, {rep['from']} to {rep['to']}",
                     fontsize=10)
    fig.text(0.01, 0.01, console_note(rep), fontsize=7, color="0.4")
    if topics:
        acc_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="topic", title_fontsize=8,
                      frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot(rep: dict[str, Any], path: str) -> None:
    fig = figure(rep)
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
