"""/retrain: the retrain signals with what became of them, the retrain requests, and the dataset check now.

The same verbs as `lfops retrain list | check` (backend.retrain.service): everyone reads; the check proposes change
requests, so it needs `config.save`.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import Out, Page
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(prefix="/retrain", tags=["retrain"])


class RetrainSignalOut(Out):
    id: int
    kind: str
    model_name: str
    deployment: str
    model_version_id: int | None
    fingerprint: str
    evidence_ref: str
    summary: str
    observed_at: datetime
    received_at: datetime
    outcome: str
    reason: str
    change_request: int | None


class RetrainRequestOut(Out):
    id: int
    model_name: str
    config_path: str
    change_request: int | None
    branch: str
    state: str
    reason: str
    created_at: datetime
    finished_at: datetime | None


class HandledOut(Out):
    deployment: str | None
    model_version_id: int
    evidence_ref: str
    outcome: str
    change_request: int | None
    reason: str


class CheckReportOut(Out):
    checked: int
    handled: list[HandledOut]
    problems: list[str]


@router.get("/signals", summary="Retrain signals received, newest first, with what became of them")
def list_signals(
    model: str | None = Query(None, max_length=200, description="only this model's signals"),
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[RetrainSignalOut]:
    found = Pager.of(
        lambda limit, offset: ws.retrain.signals(actor, limit=limit, model=model, offset=offset),
        page.limit,
        page.offset,
    )
    return Page[RetrainSignalOut].model_validate(found)


@router.get("/requests", summary="Retrain change requests, newest first")
def list_requests(
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[RetrainRequestOut]:
    found = Pager.of(
        lambda limit, offset: ws.retrain.requests(actor, limit=limit, offset=offset), page.limit, page.offset
    )
    return Page[RetrainRequestOut].model_validate(found)


@router.post("/check", summary="Propose retrains for deployed models whose dataset has a new version on main")
def check(ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> CheckReportOut:
    report = ws.retrain.check(actor)
    handled = [
        HandledOut(
            deployment=signal.deployment,
            model_version_id=signal.model_version_id,
            evidence_ref=signal.evidence_ref,
            outcome=done.outcome,
            change_request=done.change_request,
            reason=done.reason,
        )
        for signal, done in report.handled
    ]
    return CheckReportOut(checked=report.checked, handled=handled, problems=report.problems)
