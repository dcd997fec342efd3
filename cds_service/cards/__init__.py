"""CDS Hooks 2.0 cards: one builder that every card goes through.

It enforces the spec and the project's rules: a uuid on every card and suggestion, a summary
under 140 characters, an indicator, a source with label, url and topic, selectionBehavior
whenever there are suggestions, and no null or empty fields.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import orjson

from ..ids import new_id
from ..knowledge import Knowledge

INDICATORS = ("info", "warning", "critical")
SUMMARY_MAX = 139  # CDS Hooks: "<140 characters"


def _prune(value: Any) -> Any:
    """Drop None, empty strings, empty lists and empty objects, recursively. FHIR resources in
    actions are left as they are: they come from the models' own dump, which has no empties."""
    if isinstance(value, dict):
        out = {k: (v if k == "resource" else _prune(v)) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in (_prune(x) for x in value) if v not in (None, "", [], {})]
    return value


def shorten(text: str, limit: int = SUMMARY_MAX) -> str:
    """The text within ``limit`` characters: whole, else cut at the last word boundary (never mid-word),
    without a dangling separator, and an ellipsis."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    cut = max(head.rfind(" "), head.rfind("("))
    if cut > limit // 2:
        head = head[:cut]
    return head.rstrip(" ,;:(-–—") + "…"


def citations(k: Knowledge, keys: Iterable[str]) -> str:
    lines = []
    for key in keys:
        g = k.guideline(key)
        lines.append(f"- **{g['label']}**: {g['citation']}. <{g['url']}>")
    return "\n".join(lines)


def _filled(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != "" and v != [] and v != {}}


def suggestion(label: str, actions: list[dict[str, Any]], recommended: bool | None = None) -> dict[str, Any]:
    """A suggestion with a uuid; empty fields, and empty actions, are left out (the action's FHIR
    resource comes validated from resources.py and is kept as it is)."""
    s: dict[str, Any] = {"label": shorten(label, 200), "uuid": new_id(),
                         "actions": [a for a in (_filled(x) for x in actions) if a]}
    if recommended is not None:
        s["isRecommended"] = recommended
    return _filled(s)


@lru_cache(maxsize=512)
def _static_parts(k: Knowledge, topic: str, guidelines: tuple[str, ...]) -> tuple[str, bytes]:
    """What a card of this topic and these guidelines always carries: the sources paragraph of its
    detail, and its source, overrideReasons and guideline links (pruned, as JSON). Built once,
    so that a card costs only its own text and suggestions."""
    vocab = k.cards
    primary = k.guideline(guidelines[0])
    labels = " · ".join(k.guideline(g)["label"] for g in guidelines)
    sources = "\n\n**Sources**\n\n" + citations(k, guidelines)
    parts = _prune({
        "source": {
            "label": shorten(f"Bone-health CDS ({labels})", 200),
            "url": primary["url"],
            "topic": {"system": vocab["topic_system"], "code": topic, "display": vocab["topics"][topic]},
        },
        "overrideReasons": [
            {"system": vocab["override_system"], "code": r["code"], "display": r["display"]}
            for r in vocab["override_reasons"].get(topic, [])
        ],
        "links": [
            {"label": k.guideline(g)["label"] + " guideline", "url": k.guideline(g)["url"], "type": "absolute"}
            for g in guidelines
        ],
    })
    return sources, orjson.dumps(parts)


def card(k: Knowledge, *, topic: str, indicator: str, summary: str, detail: str,
         guidelines: list[str], suggestions: list[dict[str, Any]] | None = None,
         selection_behavior: str | None = None, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build one card. ``guidelines`` are keys of guidelines.yaml; the first is the card's source."""
    if indicator not in INDICATORS:
        raise ValueError(f"indicator {indicator!r}")
    if topic not in k.cards["topics"]:
        raise ValueError(f"topic {topic!r} is not in cards.yaml")
    if not guidelines:
        raise ValueError("every card names its guideline source")
    if suggestions and selection_behavior not in ("at-most-one", "any"):
        raise ValueError("suggestions require selectionBehavior")
    sources, static = _static_parts(k, topic, tuple(guidelines))
    parts = orjson.loads(static)  # a fresh copy for every card
    c: dict[str, Any] = {"uuid": new_id(), "summary": shorten(summary), "indicator": indicator,
                         "detail": detail.rstrip() + sources, "source": parts["source"]}
    sugg = [x for x in (_filled(x) for x in suggestions or []) if x]
    if sugg:
        c["suggestions"] = sugg
        c["selectionBehavior"] = selection_behavior
    if "overrideReasons" in parts:
        c["overrideReasons"] = parts["overrideReasons"]
    c["links"] = parts["links"] + _prune(links or [])
    return {k_: v for k_, v in c.items() if v not in (None, "", [], {})}
