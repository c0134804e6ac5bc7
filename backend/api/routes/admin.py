"""/users and /audit: user administration and the audit log (admins; the backend decides, as everywhere)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from backend import audit
from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import Out, Page
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(tags=["admin"])


class UserOut(Out):
    id: int
    name: str
    email: str
    role: str
    active: bool
    created_at: datetime


class UserIn(BaseModel):
    name: str
    role: str = Field(description="analyst, reviewer or admin")
    email: str = ""
    password: str = Field("", description="empty: a password is generated and answered once")


class UserChange(BaseModel):
    role: str | None = Field(None, description="analyst, reviewer or admin")
    active: bool | None = Field(None, description="false: deactivate (sessions end, tokens stop working)")


class PasswordIn(BaseModel):
    password: str = Field("", description="empty: a password is generated and answered once")


class PasswordOut(Out):
    user: str
    password: str = Field(description="shown only in this answer")


class NewUserOut(Out):
    user: UserOut
    password: str = Field(description="shown only in this answer")


class EventOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict


@router.get("/users", summary="Every user (admins)")
def list_users(
    page: PageParams = Depends(page_params), ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)
) -> Page[UserOut]:
    found = Pager.of(lambda limit, offset: ws.users.list(actor, limit, offset), page.limit, page.offset)
    return Page[UserOut].model_validate(found)


@router.post("/users", status_code=201, summary="Add a user (admins)")
def add_user(body: UserIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> NewUserOut:
    view, password = ws.users.add(actor, body.name, body.role, body.password, body.email)
    return NewUserOut(user=UserOut.model_validate(view), password=password)


@router.patch("/users/{name}", summary="Change a user's role or activity (admins; never the last active admin)")
def change_user(
    name: str, body: UserChange, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> UserOut:
    return UserOut.model_validate(ws.users.change(actor, name, role=body.role, active=body.active))


@router.post("/users/{name}/password", summary="Reset a user's password (admins); their sessions end")
def reset_password(
    name: str, body: PasswordIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> PasswordOut:
    return PasswordOut(user=name, password=ws.users.reset_password(actor, name, body.password))


@router.delete("/users/{name}", status_code=204, summary="Delete a user without history (admins)")
def delete_user(name: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> None:
    ws.users.delete(actor, name)


@router.get("/audit", summary="The audit log, newest first, filtered (admins)")
def audit_log(
    actor_name: str = Query("", alias="actor", description="who acted, exactly"),
    action: str = Query("", description="an action exactly, or every action under a prefix ending in '.' (user.)"),
    subject: str = Query("", description="what was acted on, exactly (user:alice, token:0a1b2c3d4e5f, cr:12)"),
    since: datetime | None = Query(None, description="from this time (ISO 8601 with a time zone)"),
    until: datetime | None = Query(None, description="before this time"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[EventOut]:
    where = audit.AuditFilter(actor=actor_name, action=action, subject=subject, since=since, until=until)
    return Page[EventOut].model_validate(audit.search(ws.store, actor, where, page.limit, page.offset))
