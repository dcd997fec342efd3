"""Acceptance and override rates of the cards, per topic and per suggestion, with override reasons."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from . import Store
from .models import cards, feedback, suggestions


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def build(store: Store, start: date, end: date) -> dict[str, Any]:
    """Cards issued from ``start`` to ``end`` (inclusive) and the feedback given on them."""
    lo = datetime.combine(start, time.min, tzinfo=timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=timezone.utc)
    in_range = (cards.c.issued_at >= lo) & (cards.c.issued_at < hi)
    with store.engine.connect() as conn:
        issued = dict(conn.execute(select(cards.c.topic, func.count()).where(in_range).group_by(cards.c.topic)).all())
        outcomes = conn.execute(
            select(cards.c.topic, feedback.c.outcome, func.count(func.distinct(feedback.c.card_uuid)))
            .join(cards, cards.c.uuid == feedback.c.card_uuid).where(in_range)
            .group_by(cards.c.topic, feedback.c.outcome)).all()
        offered = conn.execute(
            select(suggestions.c.label, suggestions.c.uuid).join(cards, cards.c.uuid == suggestions.c.card_uuid)
            .where(in_range)).all()
        accepted_rows = conn.execute(
            select(feedback.c.accepted_suggestions).join(cards, cards.c.uuid == feedback.c.card_uuid)
            .where(in_range & (feedback.c.outcome == "accepted"))).all()
        reasons = conn.execute(
            select(cards.c.topic, feedback.c.override_code, feedback.c.override_display, func.count())
            .join(cards, cards.c.uuid == feedback.c.card_uuid)
            .where(in_range & (feedback.c.outcome == "overridden"))
            .group_by(cards.c.topic, feedback.c.override_code, feedback.c.override_display)).all()
        daily_issued = conn.execute(select(cards.c.issued_at, cards.c.topic, cards.c.uuid).where(in_range)).all()
        daily_fb = conn.execute(
            select(cards.c.issued_at, cards.c.topic, feedback.c.outcome, feedback.c.card_uuid)
            .join(cards, cards.c.uuid == feedback.c.card_uuid).where(in_range)).all()

    per_outcome: dict[str, dict[str, int]] = defaultdict(dict)
    for topic, outcome, n in outcomes:
        per_outcome[topic][outcome] = n
    topics = []
    for topic in sorted(set(issued) | set(per_outcome)):
        n = issued.get(topic, 0)
        acc, ovr = per_outcome[topic].get("accepted", 0), per_outcome[topic].get("overridden", 0)
        topics.append({"topic": topic, "issued": n, "accepted": acc, "overridden": ovr,
                       "acceptance_rate": _rate(acc, n), "override_rate": _rate(ovr, n)})

    accepted_ids: set[str] = set()
    for (ids,) in accepted_rows:
        accepted_ids.update(json.loads(ids or "[]"))
    by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for label, uuid_ in offered:
        by_label[label][0] += 1
        by_label[label][1] += uuid_ in accepted_ids
    sugg = [{"suggestion": label, "offered": o, "accepted": a, "acceptance_rate": _rate(a, o)}
            for label, (o, a) in sorted(by_label.items())]

    reason_rows = [{"topic": t, "code": c or "", "display": d or "", "count": n}
                   for t, c, d, n in sorted(reasons, key=lambda r: (r[0], -r[3]))]

    days: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"issued": 0, "accepted": 0, "overridden": 0})
    for issued_at, topic, _ in daily_issued:
        days[(issued_at.date().isoformat(), topic)]["issued"] += 1
    seen: set[tuple[str, str]] = set()
    for issued_at, topic, outcome, card in daily_fb:
        if (card, outcome) in seen:
            continue
        seen.add((card, outcome))
        days[(issued_at.date().isoformat(), topic)][outcome] += 1
    daily = [{"day": d, "topic": t, **v, "acceptance_rate": _rate(v["accepted"], v["issued"]),
              "override_rate": _rate(v["overridden"], v["issued"])} for (d, t), v in sorted(days.items())]
    return {"from": start.isoformat(), "to": end.isoformat(), "topics": topics, "suggestions": sugg,
            "override_reasons": reason_rows, "daily": daily}


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
    lines = [f"Cards issued {rep['from']} to {rep['to']}", ""]
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


def plot(rep: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    topics = sorted({d["topic"] for d in rep["daily"]})
    for topic in topics:
        rows = [d for d in rep["daily"] if d["topic"] == topic]
        days = [date.fromisoformat(d["day"]) for d in rows]
        ax.plot(days, [100 * d["acceptance_rate"] for d in rows], marker="o", label=f"{topic} accepted")
        ax.plot(days, [100 * d["override_rate"] for d in rows], marker="x", linestyle="--", label=f"{topic} overridden")
    ax.set_title(f"Card acceptance and override rates, {rep['from']} to {rep['to']}")
    ax.set_ylabel("% of cards issued that day")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    if topics:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, "no cards in this period", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
