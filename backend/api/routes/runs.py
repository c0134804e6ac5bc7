"""/runs: launch, list with filters, show, metrics, logs, cancel."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import LaunchIn, MetricsOut, ModelVersionOut, Page, RunOut
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.runners.base import Resources, RunState
from backend.workspace import Workspace

router = APIRouter(prefix="/runs", tags=["runs"])
LAUNCH_FIELDS = {"gpus_per_node": "gpus_per_node", "nodes": "nodes", "profile": "profile"}


@router.get("", summary="Runs, newest or best loss first, filtered by indexed columns and hyperparameters")
def list_runs(
    status: RunState | None = Query(None),
    commit: str | None = Query(None, max_length=40, description="commit id or a prefix of 7+ hex digits"),
    config: str | None = Query(None, max_length=255, description="config name or configs/<name>.yaml"),
    config_hash: str | None = Query(None, max_length=64),
    dataset_version: str | None = Query(None, max_length=80),
    submitted_by: str | None = Query(None, max_length=64, description="user name"),
    change_request: int | None = Query(None, ge=1),
    param: list[str] = Query(
        [],
        max_length=10,
        description="hyperparameter filters, ANDed: `lora_rank:16`, a range `learning_rate:1e-4..3e-4` (ends optional)",
    ),
    order: str = Query("newest", description="`newest` first, or `loss`: best final loss first"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[RunOut]:
    found = Pager.of(
        lambda limit, offset: ws.runs.list(
            actor,
            status=status.value if status else None,
            commit=commit,
            config=config,
            config_hash=config_hash,
            dataset_version=dataset_version,
            submitted_by=submitted_by,
            change_request=change_request,
            params=param,
            order=order,
            limit=limit,
            offset=offset,
        ),
        page.limit,
        page.offset,
    )
    return Page[RunOut].model_validate(found)


@router.post("", status_code=201, summary="Launch a merged, approved config (admins: any commit with a reason)")
def launch(body: LaunchIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> RunOut:
    resources = Resources.from_user(
        gpus_per_node=body.gpus_per_node,
        nodes=body.nodes,
        profile=body.profile,
        names=LAUNCH_FIELDS,  # problems named as this body names them
    )
    view = ws.runs.launch(
        actor, body.target, config_path=body.config, override_reason=body.override_reason, resources=resources
    )
    return RunOut.model_validate(view)


@router.get("/{run_id}", summary="One run")
def show_run(run_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> RunOut:
    return RunOut.model_validate(ws.runs.get(actor, run_id))


@router.get("/{run_id}/model", summary="The model version the run registered (null: none)")
def run_model(
    run_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)
) -> ModelVersionOut | None:
    ws.runs.get(actor, run_id)  # may the caller read it, does it exist
    model = ws.registry.for_run(run_id)
    return ModelVersionOut.model_validate(model) if model is not None else None


@router.get("/{run_id}/metrics", summary="Curves of one run")
def run_metrics(
    run_id: int,
    key: list[str] = Query(["loss"], max_length=20, description="metric keys (loss, eval_loss, lr, ...)"),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> MetricsOut:
    return MetricsOut(run_id=run_id, curves=ws.runs.metrics(actor, run_id, tuple(dict.fromkeys(key))))


@router.get(
    "/{run_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "the run's log, one line per line"}},
    summary="The run's log as text; follow=true keeps streaming until the run ends",
)
def run_logs(
    run_id: int,
    follow: bool = Query(False),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> StreamingResponse:
    lines = ws.runs.logs(actor, run_id, follow=follow)  # refusals and unknown runs raise here, before streaming

    def text() -> Iterator[str]:
        for line in lines:
            yield line + "\n"

    return StreamingResponse(text(), media_type="text/plain; charset=utf-8")


@router.post("/{run_id}/cancel", summary="Cancel a run (its submitter or an admin)")
def cancel(run_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> RunOut:
    return RunOut.model_validate(ws.runs.cancel(actor, run_id))
