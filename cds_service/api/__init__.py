"""HTTP layer: discovery, service calls, health, errors."""
from .routes import bp

__all__ = ["bp"]
