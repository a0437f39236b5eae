"""/v1/models: every model batchlog can route to, local and upstream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from batches.api.auth import tenant_of

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(request: Request, _: Annotated[str, Depends(tenant_of)]) -> Any:
    owners: dict[str, str] = await request.app.state.service.model_owners()
    status = request.app.state.model_status
    local = await status() if status is not None else {}
    data = []
    for model, owner in sorted(owners.items()):
        row: dict[str, Any] = {"id": model, "object": "model", "created": 0, "owned_by": owner}
        if model in local:  # an extension: is the embedded model usable, and if not, why
            row["status"] = local[model]["status"]
            row["status_reason"] = local[model]["reason"]
        data.append(row)
    return {"object": "list", "data": data}
