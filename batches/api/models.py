"""/v1/models: every model batchlog can route to, local and upstream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from batches.api.auth import tenant_of

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(request: Request, _: Annotated[str, Depends(tenant_of)]) -> Any:
    owners: dict[str, str] = await request.app.state.service.model_owners()
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": owner}
        for model, owner in sorted(owners.items())
    ]
    return {"object": "list", "data": data}
