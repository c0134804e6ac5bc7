"""/notify: notification targets (admins), the caller's mutes, the delivery log. Rules live in backend.notifications."""

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

router = APIRouter(prefix="/notify", tags=["notifications"])


class TargetIn(BaseModel):
    name: str = Field(max_length=64)
    kind: str = Field(description="webhook or apprise")
    url: str = Field(max_length=2000, description="the webhook's URL, or an apprise URL (stored sealed)")
    kinds: list[str] = Field(default_factory=list, max_length=20, description="event kinds sent; empty: all")
    user: str | None = Field(None, description="the user the target belongs to (their mutes apply)")


class TargetOut(Out):
    id: int
    name: str
    kind: str
    address: str
    kinds: list[str]
    user: str
    created_by: str
    created_at: datetime


class NewTargetOut(BaseModel):
    target: TargetOut
    signing_secret: str = Field(description="a webhook's HMAC key: shown only in this answer")


class MutesOut(BaseModel):
    user: str
    muted: list[str]
    kinds: dict[str, str] = Field(description="every event kind and what it means")


class DeliveryOut(Out):
    id: int
    target: str
    event_id: int
    kind: str
    subject: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str
    created_at: datetime
    finished_at: datetime | None


@router.get("/targets", summary="Notification targets (admins)")
def list_targets(ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> list[TargetOut]:
    return [TargetOut.model_validate(t) for t in ws.notifications.targets.list(actor)]


@router.post("/targets", status_code=201, summary="Add a webhook or apprise target (admins); a webhook's secret once")
def add_target(body: TargetIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> NewTargetOut:
    added = ws.notifications.targets.add(actor, body.name, body.kind, body.url, kinds=body.kinds, user=body.user)
    return NewTargetOut(target=TargetOut.model_validate(added.target), signing_secret=added.signing_secret)


@router.delete("/targets/{name}", status_code=204, summary="Stop sending to a target (admins)")
def remove_target(name: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> None:
    ws.notifications.targets.remove(actor, name)


def _mutes(ws: Workspace, actor: Actor, muted: list[str]) -> MutesOut:
    from backend.notifications import KINDS

    return MutesOut(user=actor.name, muted=muted, kinds=KINDS)


@router.get("/mutes", summary="The kinds the caller muted, and every kind")
def mutes(ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> MutesOut:
    return _mutes(ws, actor, ws.notifications.targets.mutes(actor))


@router.put("/mutes/{kind}", summary="Mute a kind for the caller's own targets")
def mute(kind: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> MutesOut:
    return _mutes(ws, actor, ws.notifications.targets.mute(actor, kind))


@router.delete("/mutes/{kind}", summary="Unmute a kind")
def unmute(kind: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> MutesOut:
    return _mutes(ws, actor, ws.notifications.targets.unmute(actor, kind))


@router.get("/deliveries", summary="The delivery log, newest first (admins)")
def deliveries(
    target: str | None = Query(None, max_length=64),
    status: str | None = Query(None, description="pending, delivered or failed"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[DeliveryOut]:
    found = Pager.of(
        lambda limit, offset: ws.notifications.targets.deliveries(actor, target, status, limit=limit, offset=offset),
        page.limit,
        page.offset,
    )
    return Page[DeliveryOut].model_validate(found)
