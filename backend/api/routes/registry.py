"""/models: registered model versions: list, show (with the manifest), verify."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import ModelDetailOut, ModelVersionOut, Page, VerifyOut
from backend.api.security import reader, workspace
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(prefix="/models", tags=["registry"])
REF = "NAME (its newest version) or NAME:vN"


@router.get("", summary="Model versions by name, newest version first")
def list_models(
    name: str | None = Query(None, max_length=200),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[ModelVersionOut]:
    found = Pager.of(
        lambda limit, offset: ws.registry.list(actor, name, limit=limit, offset=offset), page.limit, page.offset
    )
    return Page[ModelVersionOut].model_validate(found)


@router.get("/{ref}", summary="One model version with its manifest")
def show_model(ref: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> ModelDetailOut:
    model = ws.registry.get(actor, ref)
    return ModelDetailOut(model=ModelVersionOut.model_validate(model), manifest=ws.registry.manifest(actor, model.id))


@router.get("/{ref}/verify", summary="Recompute every file's sha256 against the manifest and the database")
def verify_model(ref: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> VerifyOut:
    return VerifyOut.model_validate(ws.registry.verify(actor, ref))
