"""The `configs` row of one config file at one commit, recorded once for review (save, merge) and runs (launch)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.config import TrainConfig
from backend.store.models import Config

_BY_COMMIT_PATH = select(Config).where(Config.commit == bindparam("commit"), Config.path == bindparam("path"))


def record_config(
    s: Session,
    commit: str,
    path: str,
    config: TrainConfig,
    dataset_version: str,
    change_request_id: int | None,
    config_hash: str | None = None,
) -> Config:
    """The row for (`commit`, `path`): the one already recorded, or a new one (flushed, so it has an id).

    Everything in the row follows from the file at that commit except the change request; a row recorded before its
    change request was known (an overridden launch of a merge commit, racing the merge's own record) learns it here.
    `config_hash` saves hashing again when the caller has it.
    """
    row = s.scalar(_BY_COMMIT_PATH, {"commit": commit, "path": path})
    if row is None:
        row = Config(
            commit=commit,
            path=path,
            config_hash=config_hash or config.config_hash(),
            dataset_version=dataset_version,
            base_model=config.base_model,
            base_model_revision=config.base_model_revision(),
            change_request_id=change_request_id,
            params=config.normalised_args(),
        )
        s.add(row)
        s.flush()
    elif row.change_request_id is None and change_request_id is not None:
        row.change_request_id = change_request_id
    return row
