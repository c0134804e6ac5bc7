"""Reading runs: the flat run view, the one query every list of runs is built from, and the read verbs (a run, a
list, curves, progress, logs).

Lists of runs (here and in lineage) skip the ORM's per-row object building: `runs_query()` selects plain columns of the
run, its config and its submitter, and `run_views()` builds the views from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, func, select, text
from sqlalchemy.orm import Session

from backend.auth import Actor, require
from backend.errors import InvalidQuery, LfopsError, NotFound
from backend.runners.base import RunState
from backend.runs.params import param_search, parse_filters
from backend.runs.progress import CURVE_EXCLUDED, PERCENTAGE, PROGRESS_KEYS, REMAINING, TOTAL_STEPS, RunProgress
from backend.store import Store
from backend.store.models import Config, Metric, Run, User, utcnow

if TYPE_CHECKING:
    from backend.runs.runner_set import RunnerSet

COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
# Run ids are the database's integer keys, 32 bits on PostgreSQL: a number outside them names no run, and must not
# reach the driver (SQLite and psycopg raise on it instead of finding nothing). The same bound on both databases.
MAX_ID = 2**31 - 1
# How a list of runs is ordered: newest first, or best (lowest) final loss first (runs without one last).
ORDERS = ("newest", "loss")

# A log panel's tail: what is asked for by default, and the most any caller gets.
LOG_TAIL_LINES, LOG_TAIL_BYTES = 200, 64 * 1024
LOG_TAIL_LINES_LIMIT, LOG_TAIL_BYTES_LIMIT = 5000, 1024 * 1024


def id_in_range(value: int) -> bool:
    """Whether `value` can be a row id at all (1 .. MAX_ID); anything else names nothing."""
    return isinstance(value, int) and 1 <= value <= MAX_ID


# Not frozen: a lineage answer builds a thousand of these, and a frozen dataclass initialises 6x slower.
@dataclass(slots=True)
class RunView:
    id: int
    status: str
    reason: str
    backend: str
    external_id: str
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    base_model: str
    change_request_id: int | None
    submitted_by: str
    override_reason: str
    reproduces_run_id: int | None
    final_loss: float | None
    final_metrics: dict[str, float]
    params: dict[str, Any]
    resources: dict[str, Any]
    output_dir: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    base_model_revision: str = ""

    @property
    def finished(self) -> bool:
        return RunState(self.status).finished

    @property
    def config_name(self) -> str:
        return Path(self.config_path).stem

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return (aware(end) - aware(self.started_at)).total_seconds()


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_RUN_COLUMNS = (
    Run.id,
    Run.status,
    Run.reason,
    Run.backend,
    Run.external_id,
    Config.commit,
    Config.path,
    Config.config_hash,
    Config.dataset_version,
    Config.base_model,
    Config.change_request_id,
    User.name,
    Run.override_reason,
    Run.reproduces_run_id,
    Run.final_loss,
    # JSON read as text (psycopg would decode it per row): params decoded once per config, "{}" not at all
    cast(Run.final_metrics, Text),
    cast(Config.params, Text),
    cast(Run.resources, Text),
    Run.run_dir,
    Run.created_at,
    Run.started_at,
    Run.finished_at,
    Config.base_model_revision,
    Config.id,
)


@lru_cache(maxsize=8)  # built once per driver: a select is immutable (each .where() makes a new one)
def runs_query(driver: Any = None) -> Any:
    """Runs with their config and submitter as plain columns in one query (lists of runs skip the ORM's per-row
    object building: 1,000 runs in a lineage answer stay well under the 50 ms budget). With a `driver` (an alias of
    run_params, `backend.runs.params.ParamSearch`), the query reads it first and joins each row's run."""
    start = select(*_RUN_COLUMNS).select_from(Run)
    if driver is not None:
        start = select(*_RUN_COLUMNS).select_from(driver).join(Run, Run.id == driver.run_id)
    return start.join(Config, Run.config_id == Config.id).join(User, Run.submitted_by_id == User.id)


def run_views(s: Session, query: Any, params: dict[str, Any] | None = None) -> list[RunView]:
    """Execute a `runs_query()` (with its filters and order) and build the views."""
    params_by_config: dict[int, dict[str, Any]] = {}
    views = []
    for row in s.connection().execute(query, params or {}).all():  # Core rows, fetched at once
        (
            run_id, status, reason, backend, external_id, commit, path, config_hash, dataset_version, base_model,
            cr_id, submitter, override, reproduces, final_loss, final_metrics, params, resources, run_dir,
            created_at, started_at, finished_at, base_model_revision, config_id,
        ) = row  # fmt: skip
        if config_id not in params_by_config:
            params_by_config[config_id] = _json(params)
        views.append(
            RunView(
                id=run_id,
                status=status,
                reason=reason,
                backend=backend,
                external_id=external_id,
                commit=commit,
                config_path=path,
                config_hash=config_hash,
                dataset_version=dataset_version,
                base_model=base_model,
                change_request_id=cr_id,
                submitted_by=submitter,
                override_reason=override,
                reproduces_run_id=reproduces,
                final_loss=final_loss,
                final_metrics=_json(final_metrics),
                params=params_by_config[config_id],
                resources=_json(resources),
                output_dir=run_dir,
                created_at=created_at,
                started_at=started_at,
                finished_at=finished_at,
                base_model_revision=base_model_revision,
            )
        )
    return views


def custom_plans(s: Session) -> None:
    """PostgreSQL: plan this transaction's queries for their own values. psycopg prepares a statement after five
    executions and the server then switches to a generic plan, which for a skewed key (one dataset version of a
    hundred) joins through whole tables: measured 30 ms -> 150+ ms from the tenth lineage query on. No-op elsewhere."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def _json(value: Any) -> dict[str, Any]:
    # SQLite hands back the JSON text; psycopg decodes json columns itself
    if value is None or value == "{}":
        return {}
    return value if isinstance(value, dict) else json.loads(value)


def commit_filter(column: Any, prefix: str) -> Any:
    """Exact commit, or a prefix as a range (both SQLite and PostgreSQL use the index for a range)."""
    prefix = prefix.lower()
    if not COMMIT_RE.match(prefix):
        raise LfopsError(f"commit: {prefix!r} must be 7-40 hex digits")
    if len(prefix) == 40:
        return column == prefix
    return (column >= prefix) & (column < prefix + "g")


def run_row(s: Session, run_id: int) -> Run:
    """The run's ORM row, or NotFound."""
    run = s.get(Run, run_id) if id_in_range(run_id) else None
    if run is None:
        raise NotFound(f"run #{run_id} does not exist")
    return run


class RunQueries:
    """get, list, metrics, progress and logs of runs (every verb checks the actor may read)."""

    def __init__(self, store: Store, runners: RunnerSet) -> None:
        self.store = store
        self.runners = runners

    def get(self, actor: Actor, run_id: int) -> RunView:
        require(actor, "read")
        if not id_in_range(run_id):
            raise NotFound(f"run #{run_id} does not exist")
        with self.store.session() as s:
            views = run_views(s, runs_query().where(Run.id == run_id))
        if not views:
            raise NotFound(f"run #{run_id} does not exist")
        return views[0]

    def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        commit: str | None = None,
        config: str | None = None,
        config_hash: str | None = None,
        dataset_version: str | None = None,
        submitted_by: str | None = None,
        change_request: int | None = None,
        params: Sequence[str] = (),
        order: str = "newest",
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunView]:
        """Runs, newest first or best final loss first (`order`); every filter is an indexed column or, for
        hyperparameters (`params`: "lora_rank=16", "learning_rate=1e-4..3e-4", ANDed), an index of run_params."""
        require(actor, "read")
        if status and status not in {s.value for s in RunState}:
            raise LfopsError(f"status: {status!r} must be one of {', '.join(s.value for s in RunState)}")
        if order not in ORDERS:
            raise InvalidQuery(f"order: {order!r} must be one of {', '.join(ORDERS)}", field="order")
        param_filters = parse_filters(params)
        conditions = []
        if status:
            conditions.append(Run.status == status)
        if commit:
            conditions.append(commit_filter(Config.commit, commit))
        if config:
            conditions.append(Config.path == (config if "/" in config else f"configs/{config}.yaml"))
        if config_hash:
            conditions.append(Config.config_hash == config_hash)
        if dataset_version:
            conditions.append(Config.dataset_version == dataset_version)
        if submitted_by:
            conditions.append(User.name == submitted_by)
        if change_request is not None:
            if not id_in_range(change_request):
                return []  # no change request has that number
            conditions.append(Config.change_request_id == change_request)
        # reads only: no transaction's round trips, each statement planned for its values (Store.reading)
        with self.store.reading() as s:
            search = param_search(s, param_filters, limit + offset, by_loss=order == "loss")
            if search.driver is not None:  # one filter's index, read in loss order (the same order as below)
                by = search.order
            elif order == "loss":
                by = (Run.final_loss.asc().nulls_last(), Run.id.asc())
            else:
                by = (Run.id.desc(),)
            q = runs_query(search.driver).where(*conditions, *search.clauses).order_by(*by)
            q = q.limit(max(1, min(limit, 10_000))).offset(max(0, offset))
            return run_views(s, q, search.values)

    def metrics(
        self, actor: Actor, run_id: int, keys: tuple[str, ...] = ("loss",)
    ) -> dict[str, list[tuple[int, float]]]:
        """Curves of one run: key -> [(step, value)] in step order (the metrics index serves it)."""
        require(actor, "read")
        with self.store.session() as s:
            run_row(s, run_id)
            rows = s.execute(
                select(Metric.key, Metric.step, Metric.value)
                .where(Metric.run_id == run_id, Metric.key.in_(keys))
                .order_by(Metric.key, Metric.step)
            )
            curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
            for key, step, value in rows:
                curves[key].append((step, value))
            return curves

    def metric_keys(self, actor: Actor, run_id: int) -> list[str]:
        """The keys of a run's curves (loss, lr, grad_norm, eval_loss...), without its progress bookkeeping."""
        require(actor, "read")
        with self.store.session() as s:
            run_row(s, run_id)
            keys = s.scalars(select(Metric.key).where(Metric.run_id == run_id).distinct())
            return sorted(k for k in keys if k not in CURVE_EXCLUDED)

    def progress(self, actor: Actor, run_id: int) -> RunProgress:
        """Where the run stands: status, the last logged step of the total, elapsed and remaining time."""
        view = self.get(actor, run_id)
        with self.store.session() as s:
            # the latest row of each progress key: one index range per key (run_id, key, step)
            latest = (
                select(Metric.key, func.max(Metric.step).label("step"))
                .where(Metric.run_id == run_id, Metric.key.in_(PROGRESS_KEYS))
                .group_by(Metric.key)
                .subquery()
            )
            rows = s.execute(
                select(Metric.key, Metric.step, Metric.value)
                .join(latest, (Metric.key == latest.c.key) & (Metric.step == latest.c.step))
                .where(Metric.run_id == run_id)
            ).all()
        values = {key: value for key, _step, value in rows}
        step = max((step for _key, step, _value in rows), default=None)
        total = values.get(TOTAL_STEPS)
        finished = view.finished
        return RunProgress(
            run_id=view.id,
            status=view.status,
            step=step,
            total_steps=int(total) if total else None,
            percentage=values.get(PERCENTAGE),
            elapsed_s=view.duration_s,
            remaining_s=0.0 if finished else values.get(REMAINING),
            started_at=view.started_at,
            finished_at=view.finished_at,
        )

    def logs(self, actor: Actor, run_id: int, follow: bool = False) -> Iterator[str]:
        view = self.get(actor, run_id)
        if not view.external_id:
            return iter(())
        return self.runners.get(view.backend).logs(view.external_id, follow=follow)

    def log_tail(
        self, actor: Actor, run_id: int, max_lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES
    ) -> list[str]:
        """The last lines of the run's log (bounded: at most `max_lines`, read from the last `max_bytes`); the same
        permission as the run's details."""
        view = self.get(actor, run_id)
        if not view.external_id:
            return []
        max_lines = max(1, min(max_lines, LOG_TAIL_LINES_LIMIT))
        max_bytes = max(1024, min(max_bytes, LOG_TAIL_BYTES_LIMIT))
        return self.runners.get(view.backend).log_tail(view.external_id, max_lines, max_bytes)
