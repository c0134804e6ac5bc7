"""/tokens and /me: the caller's API tokens (admins: everyone's), and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import MeOut, NewTokenOut, Page, TokenIn, TokenOut
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(tags=["tokens"])


@router.get("/me", summary="Who the caller is, and what their credentials allow")
def me(actor: Actor = Depends(reader)) -> MeOut:
    return MeOut.model_validate(actor)


@router.get("/tokens", summary="The caller's tokens, newest first (admins: everyone's with all=true)")
def list_tokens(
    everyone: bool = Query(False, alias="all"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[TokenOut]:
    found = Pager.of(
        lambda limit, offset: ws.tokens.list(actor, everyone=everyone, limit=limit, offset=offset),
        page.limit,
        page.offset,
    )
    return Page[TokenOut].model_validate(found)


@router.post("/tokens", status_code=201, summary="A new token of the caller's; the answer is the only place it shows")
def create_token(body: TokenIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> NewTokenOut:
    new = ws.tokens.create(actor, body.name, scope=body.scope, expires_in_days=body.expires_in_days)
    return NewTokenOut(token=new.token, details=TokenOut.model_validate(new.view))


@router.delete("/tokens/{token_id}", summary="Revoke a token (its owner; admins: anyone's)")
def revoke_token(token_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> TokenOut:
    return TokenOut.model_validate(ws.tokens.revoke(actor, token_id))
