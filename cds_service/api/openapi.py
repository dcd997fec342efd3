"""GET /openapi.json: the OpenAPI 3.1 document of every endpoint (being written)."""
from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(b"{}", mimetype="application/json")
