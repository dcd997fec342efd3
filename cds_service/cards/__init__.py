"""CDS Hooks 2.0 cards: one builder that every card goes through.

It enforces the spec and the project's rules: a uuid on every card and suggestion, a summary
under 140 characters, an indicator, a source with label, url and topic, selectionBehavior
whenever there are suggestions, and no null or empty fields.

Summaries are composed to fit (``fit``: the fullest wording that fits, the part that matters
first); ``shorten`` is only a fallback, logged when it cuts. The guideline citations of a
response are assembled once it is complete (``cite_once``): each guideline in full on the first
card that uses it, by its label and URL on later ones.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Iterator

import orjson

from ..ids import new_id
from ..knowledge import Knowledge

INDICATORS = ("info", "warning", "critical")
SUMMARY_MAX = 139  # CDS Hooks: "<140 characters"
# a card's guideline keys, carried from card() to cite_once(), which removes them before the response goes out
GUIDELINES_FIELD = "_guidelines"

log = logging.getLogger("cds_service.cards")

# the summaries as composed, before any cut, of the cards built in a context (see composed_summaries)
_COMPOSED: ContextVar[list[tuple[str, str]] | None] = ContextVar("cds_composed_summaries", default=None)


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
    without a dangling separator, and an ellipsis. A fallback: summaries are composed to fit (``fit``)."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    cut = max(head.rfind(" "), head.rfind("("))
    if cut > limit // 2:
        head = head[:cut]
    return head.rstrip(" ,;:(-–—") + "…"


def fit(*candidates: str, limit: int = SUMMARY_MAX) -> str:
    """The first of ``candidates`` within ``limit`` characters. Candidates are whole wordings, the
    fullest first, each with what matters first, so that what is left out of a summary is a whole
    part (the detail says it), never the end of a word. None fits: the last (card() then cuts it and
    logs it, and the summary test of the samples fails)."""
    for text in candidates:
        if len(text) <= limit:
            return text
    return candidates[-1]


@contextmanager
def composed_summaries() -> Iterator[list[tuple[str, str]]]:
    """The (topic, summary as composed) of every card built in this context, in order: the summary
    before any cut, to check that none needed one (tests; reviews of sample patients)."""
    seen: list[tuple[str, str]] = []
    token = _COMPOSED.set(seen)
    try:
        yield seen
    finally:
        _COMPOSED.reset(token)


def _citation(k: Knowledge, key: str) -> str:
    g = k.guideline(key)
    return f"- **{g['label']}**: {g['citation']}. <{g['url']}>"


def _reference(k: Knowledge, key: str) -> str:
    """A guideline cited in full on an earlier card of the same response: its label and URL."""
    g = k.guideline(key)
    return f"- **{g['label']}** (cited in full on an earlier card) <{g['url']}>"


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


@lru_cache(maxsize=1024)
def _sources(k: Knowledge, keys: tuple[str, ...], cited: frozenset[str] = frozenset()) -> str:
    """The Sources paragraph of a card's detail: each guideline in full, or by label and URL when
    ``cited`` (already cited in full on an earlier card of the response). Built once per combination."""
    return "\n\n**Sources**\n\n" + "\n".join(_reference(k, g) if g in cited else _citation(k, g) for g in keys)


@lru_cache(maxsize=512)
def _static_parts(k: Knowledge, topic: str, guidelines: tuple[str, ...]) -> tuple[str, bytes]:
    """What a card of this topic and these guidelines always carries: the sources paragraph of its
    detail, and its source, overrideReasons and guideline links (pruned, as JSON). Built once,
    so that a card costs only its own text and suggestions."""
    vocab = k.cards
    primary = k.guideline(guidelines[0])
    labels = " · ".join(k.guideline(g)["label"] for g in guidelines)
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
    return _sources(k, guidelines), orjson.dumps(parts)


def card(k: Knowledge, *, topic: str, indicator: str, summary: str, detail: str,
         guidelines: list[str], suggestions: list[dict[str, Any]] | None = None,
         selection_behavior: str | None = None, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build one card. ``guidelines`` are keys of guidelines.yaml; the first is the card's source.

    The card is whole on its own (every guideline cited in full in its detail) and carries its guideline
    keys in ``GUIDELINES_FIELD`` until ``cite_once`` assembles the response it is part of."""
    if indicator not in INDICATORS:
        raise ValueError(f"indicator {indicator!r}")
    if topic not in k.cards["topics"]:
        raise ValueError(f"topic {topic!r} is not in cards.yaml")
    if not guidelines:
        raise ValueError("every card names its guideline source")
    if suggestions and selection_behavior not in ("at-most-one", "any"):
        raise ValueError("suggestions require selectionBehavior")
    composed = _COMPOSED.get()
    if composed is not None:
        composed.append((topic, summary))
    if len(summary) > SUMMARY_MAX:  # a summary is composed to fit: this is a wording to fix, not patient data
        log.warning("a %s card's summary of %d characters was cut to fit %d", topic, len(summary), SUMMARY_MAX)
    keys = tuple(dict.fromkeys(guidelines))
    sources, static = _static_parts(k, topic, keys)
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
    c[GUIDELINES_FIELD] = keys
    return {k_: v for k_, v in c.items() if v not in (None, "", [], {})}


def cite_once(k: Knowledge, cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assemble the citations of one response, in its order: a guideline is cited in full on the first
    card that uses it, and by its label and URL on later cards (each card keeps its guideline links, so
    it still names its sources and opens them on its own). Removes ``GUIDELINES_FIELD`` from every card;
    the cards are changed in place and returned."""
    cited: set[str] = set()
    for c in cards:
        keys = c.pop(GUIDELINES_FIELD, None)
        if not keys:
            continue
        again = cited.intersection(keys)
        if again:
            whole, detail = _sources(k, keys), c.get("detail", "")
            if detail.endswith(whole):  # the paragraph card() appended, replaced as a whole
                c["detail"] = detail[: len(detail) - len(whole)] + _sources(k, keys, frozenset(again))
        cited.update(keys)
    return cards
