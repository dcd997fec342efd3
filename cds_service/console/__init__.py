"""The card console: a development page that calls the patient-view service as an EHR would.

Registered by ``create_app`` only when the ``console`` setting is true (``CDS_CONSOLE``; ``make run``
turns it on). It is not authenticated: it is a development and review tool, off in production.

- ``GET /console/`` the page (its script and style sheet are served from ``static/``; no CDN)
- ``GET /console/api/samples`` the example patients of ``fhir_samples.scenarios``
- ``POST /console/api/request`` a sample number or a pasted Bundle → the patient-view hook request
  with every prefetch key filled, and the patient's T-scores over time
- ``POST /console/api/markdown`` card details rendered as HTML (raw HTML in the text is never passed on)

The page itself then calls ``POST /cds-services/<id>`` and ``.../feedback`` exactly as an EHR does.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static", static_url_path="/static")

from . import views  # noqa: E402,F401  (registers the routes on bp)
