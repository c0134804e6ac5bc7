"""/forge/webhook: deliveries from the forge (Gitea, GitHub, GitLab). No bearer token: the delivery's signature (the
webhook secret) authenticates it; a bad one is refused with 401, logged and audited (backend.forge_sync). A
verified delivery only makes lfops re-read the pull request it names from the forge."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from backend.api.security import workspace
from backend.errors import NotFound
from backend.workspace import Workspace

router = APIRouter(prefix="/forge", tags=["forge"])


@router.post("/webhook", summary="A forge's webhook delivery (signed with LFOPS_FORGE_WEBHOOK_SECRET)")
async def webhook(request: Request, ws: Workspace = Depends(workspace)) -> dict[str, str]:
    sync = ws.forge_sync
    if sync is None:
        raise NotFound("no forge is configured (LFOPS_FORGE=none)", field="LFOPS_FORGE")
    body = await request.body()
    # the re-read calls the forge and git: off the event loop
    done = await run_in_threadpool(sync.receive, dict(request.headers), body)
    return {"status": done}
