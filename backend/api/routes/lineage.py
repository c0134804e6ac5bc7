"""/lineage: where a model came from; what came from a commit or a dataset version (paged)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import DerivedOut, ModelLineageOut
from backend.api.security import reader, workspace
from backend.auth import Actor
from backend.lineage import Derived, graph
from backend.workspace import Workspace

router = APIRouter(prefix="/lineage", tags=["lineage"])


@router.get("/models/{ref}", summary="Where a model version came from: review, commit, data, run, exports")
def model_lineage(ref: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> ModelLineageOut:
    found = ws.lineage.of_model(actor, ref)
    answer = ModelLineageOut.model_validate(found)
    answer.graph = graph(found)
    return answer


@router.get("/commits/{commit}", summary="Configs, runs, models and deployments from one commit")
def from_commit(
    commit: str,
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> DerivedOut:
    return _derived(ws.lineage.from_commit(actor, commit, limit=page.limit, offset=page.offset), page)


@router.get("/datasets/{version}", summary="Configs, runs, models and deployments from one dataset version")
def from_dataset_version(
    version: str,
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> DerivedOut:
    return _derived(ws.lineage.from_dataset_version(actor, version, limit=page.limit, offset=page.offset), page)


def _derived(found: Derived, page: PageParams) -> DerivedOut:
    answer = DerivedOut.model_validate(found)
    answer.limit, answer.offset = page.limit, page.offset
    answer.next_offset = page.offset + page.limit if found.has_more else None
    return answer
