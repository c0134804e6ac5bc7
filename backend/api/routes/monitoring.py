"""/monitoring/{deployment}: traffic, drift scores and reports of a deployment, its sampling policy, a drift check now.

The same verbs as `lfops monitor` and the WebUI's Monitoring tab (backend.monitoring.service): everyone reads;
changing the sampling policy and running a check need `deploy.manage`.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from backend.api.routes.paging import PageParams, page_params
from backend.api.schemas import Out, Page
from backend.api.security import reader, workspace, writer
from backend.auth import Actor
from backend.paging import MAX_LIMIT
from backend.paging import Page as Pager
from backend.workspace import Workspace

router = APIRouter(prefix="/monitoring", tags=["monitoring"])


class PolicyOut(Out):
    enabled: bool
    rate: float = Field(description="share of requests sampled, 0 to 1")
    max_samples: int = Field(description="samples kept per deployment; the oldest go first")
    retention_days: float


class PolicyIn(BaseModel):
    enabled: bool | None = Field(None, description="sample requests at all")
    rate: float | None = Field(None, description="share of requests sampled, 0 to 1")
    max_samples: int | None = Field(None, description="samples kept per deployment")
    retention_days: float | None = Field(None, description="days a sample is kept")


class TrafficOut(Out):
    start: datetime
    requests_per_min: float
    error_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    prompt_tokens: float
    completion_tokens: float
    samples: int


class DriftReportOut(Out):
    id: int
    deployment: str
    model_version: str
    created_at: datetime
    window_start: datetime
    window_end: datetime
    n_prompts: int
    n_reference: int = Field(description="training prompts of the model's dataset compared against")
    dataset_version: str
    state: str = Field(description="ok, drifting, declared or reference_missing")
    drifting: bool
    declared: bool
    scores: dict[str, float]
    thresholds: dict[str, float]
    exceeded: list[str] = Field(description="the scores over their threshold")
    reason: str
    top_terms: list[str]
    unknown_words: list[str]
    sample_prompts: list[str]


class OverviewOut(Out):
    deployment: str
    model_version: str
    status: str
    policy: PolicyOut
    samples_stored: int
    traffic: list[TrafficOut] = Field(description="estimated from the samples, oldest bucket first")
    reports: list[DriftReportOut] = Field(description="the newest drift reports, newest first")


class CheckOut(Out):
    report: DriftReportOut | None = Field(description="null: no new window to check (too few new prompts)")


@router.get("/{deployment}", summary="Traffic, drift scores and the newest drift reports of a deployment")
def overview(
    deployment: str,
    hours: float = Query(24.0, description="how far back the traffic goes"),
    bucket: float = Query(5.0, description="minutes per traffic bucket"),
    reports: int = Query(20, ge=1, le=MAX_LIMIT, description="how many of the newest drift reports"),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> OverviewOut:
    view = ws.monitoring.overview(actor, deployment, hours=hours, bucket_minutes=bucket, reports=reports)
    return OverviewOut.model_validate(view)


@router.get("/{deployment}/reports", summary="The drift reports of a deployment, newest first")
def list_reports(
    deployment: str,
    page: PageParams = Depends(page_params),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> Page[DriftReportOut]:
    found = Pager.of(
        lambda limit, offset: ws.monitoring.reports(actor, deployment, limit, offset), page.limit, page.offset
    )
    return Page[DriftReportOut].model_validate(found)


@router.get("/{deployment}/reports/{report_id}", summary="One drift report with its evidence")
def show_report(
    deployment: str, report_id: int, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)
) -> DriftReportOut:
    return DriftReportOut.model_validate(ws.monitoring.report(actor, report_id, deployment=deployment))


@router.post("/{deployment}/check", summary="Check the next window of prompts for drift now (reviewers and admins)")
def check(deployment: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)) -> CheckOut:
    made = ws.monitoring.check_for(actor, deployment)
    return CheckOut(report=DriftReportOut.model_validate(made) if made is not None else None)


@router.get("/{deployment}/sampling", summary="The deployment's sampling policy")
def sampling(deployment: str, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)) -> PolicyOut:
    return PolicyOut.model_validate(ws.monitoring.sampling(actor, deployment))


@router.patch("/{deployment}/sampling", summary="Change the sampling policy (reviewers and admins); omitted: kept")
def set_sampling(
    deployment: str, body: PolicyIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(writer)
) -> PolicyOut:
    policy = ws.monitoring.set_sampling(
        actor,
        deployment,
        enabled=body.enabled,
        rate=body.rate,
        max_samples=body.max_samples,
        retention_days=body.retention_days,
    )
    return PolicyOut.model_validate(policy)
