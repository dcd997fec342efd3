"""Card details (CDS Hooks markdown) as HTML that patient data cannot inject into."""
from __future__ import annotations

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML is shown as text, never passed on


def _link_open(self, tokens, idx, options, env):
    # links in a card open outside the chart, and tell the target nothing about the console
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


_md.add_render_rule("link_open", _link_open)


def render(text: str) -> str:
    return _md.render(text)
