"""The service's HTTP API: `create_app` (app.py) and one router per resource (uploads, jobs, models, health)."""

from visapp.service.api.app import create_app

__all__ = ["create_app"]
