"""The card for DXA records that exist but none of which can be used (rules §6.4: silence is never
an answer to unreadable data)."""
from __future__ import annotations

from typing import Any

from ..clinical.facts import Facts
from ..knowledge import Knowledge
from . import card


def unreadable_dxa_card(facts: Facts, k: Knowledge) -> dict[str, Any] | None:
    """One info card listing the DXA records that were not used and why; None when there are none."""
    unread = [ig for ig in facts.ignored if ig.group == "dxa"]
    if not unread:
        return None
    text = k.raw["cards"]["unreadable_dxa"]
    lines = [f"**{text['head']}**", ""] + [f"- {ig.resource}: {ig.reason}." for ig in unread]
    lines += ["", text["action"]]
    others = [ig for ig in facts.ignored if ig.group != "dxa"]
    if others:
        lines += ["", "**Other data not used**", ""] + [f"- {ig.resource}: {ig.reason}." for ig in others]
    return card(k, topic="bmd-interpretation", indicator="info",
                summary=text["summary"].format(count=len(unread)), detail="\n".join(lines),
                guidelines=["WHO-ISCD"])
