"""The REST façade: thin FastAPI routers over a BatchService (batches/core/ports.py)."""

from batches.api.app import create_app

__all__ = ["create_app"]
