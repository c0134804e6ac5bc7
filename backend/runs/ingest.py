"""Metrics of a run from LLaMA-Factory's files in its output_dir: `trainer_log.jsonl` tailed while it trains (with its
progress: total steps, percentage, elapsed and remaining time), `trainer_state.json` (what the log does not carry) and
`all_results.json` (the final summary) at the end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.runs.progress import DURATION_FIELDS, duration_seconds
from backend.store import Store
from backend.store.models import Metric, Run

# trainer_log.jsonl's step: the row's step, not a metric. Its progress fields are kept (backend.runs.progress).
_NOT_METRICS = {"current_steps"}
# trainer_state.json names what trainer_log.jsonl calls otherwise.
_STATE_KEY_NAMES = {"learning_rate": "lr"}


def ingest_log(store: Store, run_id: int, out: Path) -> int:
    """Store the complete lines of trainer_log.jsonl that arrived since the last pass; returns rows added."""
    path = out / "trainer_log.jsonl"
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with store.session() as s:
        offset = s.scalar(select(Run.metrics_offset).where(Run.id == run_id)) or 0
        if size <= offset:
            return 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size - offset)
        end = data.rfind(b"\n")
        if end < 0:
            return 0  # half a line: LLaMA-Factory is still writing it
        records = []
        for line in data[: end + 1].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("current_steps"), int):
                records.append(record)
        # LLaMA-Factory logs the last step twice (the second time without the loss): one row per (step, key).
        first_step = min((r["current_steps"] for r in records), default=0)
        have = {
            (step, key)
            for step, key in s.execute(
                select(Metric.step, Metric.key).where(Metric.run_id == run_id, Metric.step >= first_step)
            )
        }
        rows = []
        for record in records:
            step = record["current_steps"]
            for key, value in log_values(record):
                if key not in _NOT_METRICS and is_number(value) and (step, key[:64]) not in have:
                    have.add((step, key[:64]))
                    rows.append(Metric(run_id=run_id, step=step, key=key[:64], value=float(value)))
        # Only the pass that moves the offset stores the rows: a second monitor racing us stores nothing.
        moved = s.execute(
            update(Run).where(Run.id == run_id, Run.metrics_offset == offset).values(metrics_offset=offset + end + 1)
        ).rowcount
        if not moved:
            return 0
        s.add_all(rows)
    return len(rows)


def log_values(record: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A trainer_log.jsonl record's fields as metric keys and values: durations ("0:01:02") in seconds."""
    for key, value in record.items():
        if key in DURATION_FIELDS:
            yield DURATION_FIELDS[key], duration_seconds(value)
        else:
            yield key, value


def ingest_state(s: Session, run_id: int, out: Path) -> None:
    """At the end: what trainer_state.json logged that trainer_log.jsonl does not carry (grad_norm, eval...)."""
    try:
        state = json.loads((out / "trainer_state.json").read_text())
    except (FileNotFoundError, ValueError):
        return
    have = {(step, key) for step, key in s.execute(select(Metric.step, Metric.key).where(Metric.run_id == run_id))}
    for entry in state.get("log_history", []):
        step = entry.get("step")
        if not isinstance(step, int) or "train_runtime" in entry:
            continue  # the summary entry is in final_metrics
        for key, value in entry.items():
            name = _STATE_KEY_NAMES.get(key, key)[:64]
            if key in ("step", "epoch") or not is_number(value) or (step, name) in have:
                continue
            s.add(Metric(run_id=run_id, step=step, key=name, value=float(value)))
            have.add((step, name))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def final_metrics(out: Path) -> dict[str, float]:
    """all_results.json (train and eval summaries), else train_results.json; numbers only."""
    for name in ("all_results.json", "train_results.json"):
        try:
            data = json.loads((out / name).read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        if isinstance(data, dict):
            return {k: float(v) for k, v in data.items() if is_number(v)}
    return {}
