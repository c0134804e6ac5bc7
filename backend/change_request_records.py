"""The recording steps of a save and a merge, shared by `backend.review` (which performs them) and the change-request
repair (which completes them after a crash): each is a conditional update, audited once, so running it twice, or
racing the other, records nothing twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend import audit
from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.errors import Conflict
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus
from backend.store.models import ChangeRequest, utcnow


def open_saved(s: Session, cr_id: int, commit: str, by: str, **detail: Any) -> bool:
    """Save step 3 (also the reconcile's adoption): `saving` -> `open` once its branch is on origin at `commit`,
    audited once. False when it was not `saving` at that commit (already opened by whichever came first)."""
    opened = s.execute(
        update(ChangeRequest)
        .where(
            ChangeRequest.id == cr_id,
            ChangeRequest.status == ChangeRequestStatus.SAVING,
            ChangeRequest.head_commit == commit,
        )
        .values(status=ChangeRequestStatus.OPEN, updated_at=utcnow())
    )
    if opened.rowcount != 1:
        return False
    cr = s.get(ChangeRequest, cr_id)
    s.refresh(cr)
    audit.record(
        s,
        by,
        "config.save",
        f"change_request:{cr_id}",
        branch=cr.branch,
        commit=commit,
        path=cr.config_path,
        config_hash=cr.config_hash,
        **detail,
    )
    return True


def record_merge(
    s: Session,
    cr_id: int,
    merge: str,
    merged_by_id: int | None,
    by: str,
    merged_cfg: TrainConfig,
    dataset_version: str,
    approvers: list[str],
    **detail: Any,
) -> bool:
    """Merge steps after main holds `merge` (also the reconcile's repair): the request is merged as `merge`, whatever
    it was (Git is the truth: a close that raced the merge loses), recorded and audited once. False when it was
    already recorded as this merge; Conflict when recorded as another."""
    now = utcnow()
    marked = s.execute(
        update(ChangeRequest)
        .where(ChangeRequest.id == cr_id, ChangeRequest.status != ChangeRequestStatus.MERGED)
        .values(
            status=ChangeRequestStatus.MERGED,
            merged_commit=merge,
            merged_by_id=merged_by_id,
            merged_at=now,
            updated_at=now,
        )
    )
    if marked.rowcount != 1:
        recorded = s.scalar(select(ChangeRequest.merged_commit).where(ChangeRequest.id == cr_id))
        if recorded != merge:
            raise Conflict(f"change request #{cr_id} is recorded as merged by {recorded}, not {merge}")
        return False
    cr = s.get(ChangeRequest, cr_id)
    s.refresh(cr)
    record_config(s, merge, cr.config_path, merged_cfg, dataset_version, cr_id)
    audit.record(s, by, "review.merge", f"change_request:{cr_id}", merge_commit=merge, approvers=approvers, **detail)
    return True


def record_update(
    s: Session,
    cr_id: int,
    old_head: str,
    commit: str,
    config: TrainConfig,
    config_hash: str,
    dataset_version: str,
    by: str,
    **detail: Any,
) -> bool:
    """Update steps after origin's branch holds `commit` (also the reconcile's adoption of an update that stopped after
    its push): the request's head moves from `old_head` to `commit` and it is open again (an approval counts only for
    the head it was given on), recorded and audited once. False when the head was not `old_head` any more, or the
    request left review meanwhile (whichever came first recorded it, or a decision was taken)."""
    moved = s.execute(
        update(ChangeRequest)
        .where(
            ChangeRequest.id == cr_id,
            ChangeRequest.head_commit == old_head,
            ChangeRequest.status.in_(UNDER_REVIEW),
        )
        .values(
            head_commit=commit,
            config_hash=config_hash,
            dataset_version=dataset_version,
            status=ChangeRequestStatus.OPEN,
            updated_at=utcnow(),
        )
    )
    if moved.rowcount != 1:
        return False
    cr = s.get(ChangeRequest, cr_id)
    s.refresh(cr)
    record_config(s, commit, cr.config_path, config, dataset_version, cr_id, config_hash)
    audit.record(
        s,
        by,
        "config.update",
        f"change_request:{cr_id}",
        branch=cr.branch,
        previous=old_head,
        commit=commit,
        config_hash=config_hash,
        **detail,
    )
    return True
