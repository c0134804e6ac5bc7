"""/change-requests: list, show (diff and hyperparameter table), save, approve, request changes, merge, close."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import (
    ChangeRequestDetailOut,
    ChangeRequestOut,
    CommentIn,
    Page,
    SaveIn,
    SaveOut,
    UpdateIn,
)
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.review_status import ChangeRequestStatus
from backend.workspace import Workspace

router = APIRouter(prefix="/change-requests", tags=["change requests"])


@router.get("", summary="Change requests, newest first")
def list_change_requests(
    status: ChangeRequestStatus | None = Query(None),
    author: str | None = Query(None, max_length=64, description="user name"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[ChangeRequestOut]:
    found = Pager.of(
        lambda limit, offset: ws.changes.list(actor, status=status, author=author, limit=limit, offset=offset),
        page.limit,
        page.offset,
    )
    return Page[ChangeRequestOut].model_validate(found)


@router.get("/{cr_id}", summary="One change request with its YAML diff and hyperparameter table")
def show_change_request(
    cr_id: int,
    defaults: bool = Query(False, description="compare with LLaMA-Factory's defaults, not the baseline"),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> ChangeRequestDetailOut:
    return ChangeRequestDetailOut.model_validate(ws.changes.show(actor, cr_id, against_defaults=defaults))


@router.post("", status_code=201, summary="Save a config: commit it on a new branch and open a change request")
def save_config(body: SaveIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> SaveOut:
    return SaveOut.model_validate(ws.changes.save(actor, body.yaml, body.name, body.message, branch=body.branch))


@router.post("/{cr_id}/revisions", summary="Update: a new revision of the config on the request (its author)")
def update_config(
    cr_id: int, body: UpdateIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> SaveOut:
    return SaveOut.model_validate(ws.changes.update(actor, cr_id, body.yaml, body.message))


@router.post("/{cr_id}/approve", summary="Approve (reviewers and admins; never one's own)")
def approve(
    cr_id: int, body: CommentIn | None = None, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> ChangeRequestOut:
    return ChangeRequestOut.model_validate(ws.changes.approve(actor, cr_id, body.comment if body else ""))


@router.post("/{cr_id}/request-changes", summary="Request changes, saying what (reviewers and admins)")
def request_changes(
    cr_id: int, body: CommentIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> ChangeRequestOut:
    return ChangeRequestOut.model_validate(ws.changes.request_changes(actor, cr_id, body.comment))


@router.post("/{cr_id}/merge", summary="Merge an approved change request into main")
def merge(cr_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> ChangeRequestOut:
    return ChangeRequestOut.model_validate(ws.changes.merge(actor, cr_id))


@router.post("/{cr_id}/close", summary="Close without merging (the author, reviewers and admins)")
def close(cr_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> ChangeRequestOut:
    return ChangeRequestOut.model_validate(ws.changes.close(actor, cr_id))
