"""JSON answers serialized with orjson.

FastAPI deprecated its own ``ORJSONResponse``; the few hand-built answers (errors,
/health) keep orjson's speed and its handling of datetimes through this one class.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
