"""/deployments: served registry versions: list, show, deploy, roll out, undeploy, and their API keys.

The same verbs as `lfops deploy | deployments` and the WebUI's Serving tab (backend.serving.service: deploy, roll out,
undeploy and keys need `deploy.manage`). A new key is answered once, when it is made; afterwards only its id shows.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import Out, Page
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(prefix="/deployments", tags=["serving"])


class LiveOut(Out):
    state: str = Field(description="what the target reports now: running, starting, restarting, rolling, failed...")
    model_version: str = Field(description="NAME:vN actually served")
    detail: str
    reason: str


class DeploymentInfoOut(Out):
    id: int
    name: str
    model: str = Field(description="NAME:vN served now (stopped: served last)")
    model_version_id: int
    target: str = Field(description="local or a cluster profile")
    namespace: str
    endpoint: str = Field(description="the OpenAI-compatible base URL")
    port: int | None
    status: str = Field(description="running, rolling or stopped")
    reason: str
    follows_config: str | None = Field(description="the config whose new versions it rolls to; null: pinned")
    created_by: str
    created_at: datetime
    stopped_at: datetime | None
    live: LiveOut | None = Field(None, description="the target's state now (live=true)")


class RolloutOut(Out):
    id: int
    from_model: str | None
    to_model: str | None
    trigger: str = Field(description="deploy, manual, follow or undeploy")
    actor: str
    status: str
    reason: str
    switch_s: float | None
    started_at: datetime
    finished_at: datetime | None


class KeyOut(Out):
    key_id: str = Field(description="the 8 hex digits of lfk_<id>_...: to revoke it by")
    label: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class DeploymentDetailOut(Out):
    deployment: DeploymentInfoOut
    rollouts: list[RolloutOut] = Field(description="every switch, oldest first")
    keys: list[KeyOut]


class DeployIn(BaseModel):
    model: str = Field(description="NAME (its newest version) or NAME:vN", min_length=1, max_length=200)
    target: str = Field("local", description="local or a cluster profile", max_length=100)
    name: str | None = Field(None, description="deployment name (default: from the model name)", max_length=100)
    follow: bool = Field(False, description="roll to each version later registered from the same config")
    port: int | None = Field(None, description="local: the gateway's port on 127.0.0.1 (default: a free one)")
    ready_timeout_s: float | None = Field(None, gt=0, le=3600, description="seconds to wait for the model to load")


class DeployedOut(Out):
    deployment: DeploymentInfoOut
    api_key: str = Field(description="its first API key: shown only in this answer, never again")


class RolloutIn(BaseModel):
    model: str | None = Field(
        None, description="NAME:vN (default: the newest of the followed config or model)", max_length=200
    )


class KeyIn(BaseModel):
    label: str = Field("", description="what the key is for (shown in listings)", max_length=100)


class NewKeyOut(Out):
    api_key: str = Field(description="the key itself: shown only in this answer, never again")
    details: KeyOut


@router.get("", summary="Deployments by name (undeployed ones too unless all=false)")
def list_deployments(
    everything: bool = Query(True, alias="all", description="include undeployed (stopped) deployments"),
    live: bool = Query(False, description="ask each target for its state now"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[DeploymentInfoOut]:
    found = Pager.of(
        lambda limit, offset: ws.serving.list(actor, live=live, include_stopped=everything, limit=limit, offset=offset),
        page.limit,
        page.offset,
    )
    return Page[DeploymentInfoOut].model_validate(found)


@router.post("", status_code=201, summary="Deploy a registry version (reviewers and admins); answers its first key")
def deploy(body: DeployIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> DeployedOut:
    done = ws.serving.deploy(
        actor,
        body.model,
        target=body.target,
        name=body.name,
        follow=body.follow,
        port=body.port,
        ready_timeout_s=body.ready_timeout_s,
    )
    return DeployedOut(deployment=DeploymentInfoOut.model_validate(done.deployment), api_key=done.api_key)


@router.get("/{name}", summary="One deployment with its live state, rollouts and keys (ids only)")
def show_deployment(
    name: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)
) -> DeploymentDetailOut:
    return DeploymentDetailOut.model_validate(ws.serving.show(actor, name))


@router.post("/{name}/rollout", summary="Serve another version with no failed request (reviewers and admins)")
def rollout(
    name: str, body: RolloutIn | None = None, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> DeploymentInfoOut:
    return DeploymentInfoOut.model_validate(ws.serving.rollout(actor, name, body.model if body else None))


@router.delete("/{name}", summary="Undeploy: stop serving, revoke its keys; the record stays (reviewers and admins)")
def undeploy(name: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> DeploymentInfoOut:
    return DeploymentInfoOut.model_validate(ws.serving.undeploy(actor, name))


@router.get("/{name}/keys", summary="The deployment's API keys: ids, labels and states, never the keys")
def list_keys(name: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> list[KeyOut]:
    return [KeyOut.model_validate(k) for k in ws.serving.keys(actor, name)]


@router.post("/{name}/keys", status_code=201, summary="A new API key; the answer is the only place it shows")
def create_key(
    name: str, body: KeyIn | None = None, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> NewKeyOut:
    key, info = ws.serving.create_key(actor, name, body.label if body else "")
    return NewKeyOut(api_key=key, details=KeyOut.model_validate(info))


@router.delete("/{name}/keys/{key_id}", summary="Revoke a key: the gateway refuses it within a second")
def revoke_key(name: str, key_id: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> KeyOut:
    return KeyOut.model_validate(ws.serving.revoke_key(actor, name, key_id))
