"""The card console: a development page that calls the patient-view service as an EHR would (being written)."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console")
