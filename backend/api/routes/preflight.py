"""/preflight: which launch targets can run a config, and why not (the verdicts of `lfops preflight`).

A config not saved yet (`POST /preflight`, its dataset and DeepSpeed files read at main) or a change request's head
(`GET /change-requests/{id}/preflight`); backend.review asks backend.preflight, as the save note and the review do.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from backend.api.schemas import Out
from backend.api.security import reader, workspace
from backend.auth import Actor
from backend.preflight import Report, Verdict
from backend.workspace import Workspace

router = APIRouter(tags=["preflight"])
PROFILE = "only this target: a cluster profile, or 'local' for this machine (default: every target)"


class TargetOut(Out):
    name: str = Field(description="local, or a cluster profile")
    label: str
    hardware: str = Field(description="what it has, in words")
    gpus_per_node: int
    nodes: int
    gpu_model: str
    gpu_memory_gib: float = Field(description="per GPU; 0: not known")
    compute_capability: str


class FindingOut(Out):
    key: str = Field(description="the config key it is about (bf16, quantization_bit, memory...)")
    reason: str
    fix: str
    blocking: bool


class MemoryOut(Out):
    per_device_gib: float
    parts: list[tuple[str, float]] = Field(description="[what, GiB] in the order of the total")
    on_gpu: bool
    world_size: int
    shape_source: str
    notes: list[str]


class VerdictOut(Out):
    target: TargetOut
    runnable: bool
    line: str = Field(description="the verdict in one line, as the save note and the review say it")
    why_not: str = Field(description="the blocking findings with their fixes, and where it runs instead")
    findings: list[FindingOut]
    memory: MemoryOut | None = Field(description="the per-device estimate; null: the model's size is not known")
    capacity_gib: float = Field(description="per device; 0: not known")
    elsewhere: list[str] = Field(description="targets that run the config as it is")


class PreflightOut(Out):
    verdicts: list[VerdictOut]
    runnable_on: list[str]
    notes: list[str] = Field(description="about the config rather than a target")
    table: str = Field(description="the report as the plain-text table `lfops preflight` prints")


class PreflightIn(BaseModel):
    yaml: str = Field(description="the training config (LLaMA-Factory YAML with an optional lfops: block)")
    profile: str | None = Field(None, description=PROFILE, max_length=100)


def _verdict(v: Verdict) -> VerdictOut:
    # line() and why_not() are methods of the verdict, so they are named here; every other value is read as it is
    facts = {"line": v.line(), "why_not": v.why_not() if v.blocking else "", "runnable": v.runnable}
    return VerdictOut.model_validate(
        {**{name: getattr(v, name) for name in ("target", "findings", "memory", "capacity_gib", "elsewhere")}, **facts},
        from_attributes=True,
    )


def _report(report: Report) -> PreflightOut:
    return PreflightOut(
        verdicts=[_verdict(v) for v in report.verdicts],
        runnable_on=report.runnable_on,
        notes=list(report.notes),
        table=report.table(),
    )


@router.post("/preflight", summary="Which launch targets can run a config not saved yet, and why not")
def preflight_config(
    body: PreflightIn, ws: Workspace = Depends(workspace), actor: Actor = Depends(reader)
) -> PreflightOut:
    return _report(ws.changes.preflight_config(actor, body.yaml, body.profile))


@router.get("/change-requests/{cr_id}/preflight", summary="Which launch targets can run a change request's config")
def preflight_request(
    cr_id: int,
    profile: str | None = Query(None, max_length=100, description=PROFILE),
    ws: Workspace = Depends(workspace),
    actor: Actor = Depends(reader),
) -> PreflightOut:
    return _report(ws.changes.preflight_request(actor, cr_id, profile))
