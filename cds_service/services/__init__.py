"""CDS services: each is data (id, hook, title, prefetch) plus a handler from facts to cards."""
from __future__ import annotations

from ..knowledge import Knowledge
from .base import CdsService
from .orders import order_select_service, order_sign_service
from .patient_view import patient_view_service


def registry(k: Knowledge) -> dict[str, CdsService]:
    services = [patient_view_service(k), order_select_service(k), order_sign_service(k)]
    return {s.id: s for s in services}
