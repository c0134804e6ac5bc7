"""The REST API and the operations endpoints (FastAPI), served in the WebUI's process; no rule lives here."""

from backend.api.app import API_PREFIX, create_api, create_app

__all__ = ["API_PREFIX", "create_api", "create_app"]
