"""The REST façade: thin FastAPI routers that forward to the coordinator actor."""

from batches.api.app import create_app

__all__ = ["create_app"]
