"""Bone-health CDS Hooks 2.0 service."""
from __future__ import annotations

from typing import Any, Mapping

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None):
    """The application factory: ``config`` overrides settings read from the environment."""
    import logging

    from flask import Flask
    from flask_cors import CORS

    from .api import bp
    from .api.errors import register as register_errors
    from .config import Settings
    from .engine import Engine

    settings = Settings.from_env(overrides=config)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["CDS_SETTINGS"] = settings
    app.extensions["cds_engine"] = Engine(settings)
    origins = settings.cors_origin_list
    CORS(app, origins="*" if origins == ["*"] else origins, methods=["GET", "POST", "OPTIONS"],
         allow_headers=["Authorization", "Content-Type"], max_age=600)
    register_errors(app)
    app.register_blueprint(bp)
    return app
