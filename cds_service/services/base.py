"""What every CDS service is: its discovery entry and its handler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..clinical.facts import Facts
from ..knowledge import Knowledge

Handler = Callable[[Facts, Knowledge, dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    handler: Handler
    usage_requirements: str = ""
    patient_key: str = "patient"
    # keys without which no card can be made: a failed fetch of one of these is a 412
    required_keys: tuple[str, ...] = ()
    # the resourceType a non-Bundle prefetch value of a key must have
    expected_types: dict[str, str] = field(default_factory=dict)

    def discovery(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": dict(self.prefetch),
        }
        if self.usage_requirements:
            d["usageRequirements"] = self.usage_requirements
        return d
