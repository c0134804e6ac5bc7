"""Benchmark: hyperparameter search at 100,000 runs, lfops (backend.runs.params) versus MLflow's `search_runs`.

The query: two equality filters, best final loss first, the first page of 50 —
    lfops:  RunQueries.list(params=["lora_rank=R", "learning_rate=LR"], order="loss"), paged as the API pages it
            (51 rows asked, to know whether another page follows)
    MLflow: SqlAlchemyStore.search_runs(filter "params.lora_rank = 'R' and params.learning_rate = 'LR'",
            order_by ["metrics.train_loss ASC"], max_results 50)
with (R, LR) drawn at random for each iteration (about 1 run in 30 matches both), on SQLite and PostgreSQL.

Generated data (deterministic, seed 0), at --runs 100000: 10,000 configs of 24 flat LLaMA-Factory keys each (the
hyperparameters a sweep varies and the ones it keeps), 10 runs per config, 85 % with a final loss; so 2.4 million
parameter rows on each side. Both sides are bulk-loaded straight into their tables (MLflow's client API would take
hours for 100,000 runs; its SQL store's own tables are filled, as its `log_batch` would), then ANALYZEd. Before timing,
both sides' first page for one key pair is checked against the answer computed from the generated data.

MLflow is not a dependency of lfops: the bench makes its own venv on first use (~/.cache/lfops-bench/
mlflow-<version>: `python3.11 -m venv` + `pip install mlflow-skinny==<version> sqlalchemy alembic psycopg2-binary`;
mlflow-skinny carries the SQL tracking store, its SQL drivers come beside it) and runs the MLflow side there as a
subprocess that loads the same generated data with this very file and prints its timings as one JSON line.
mlflow-skinny 3.18.0 is not on the package index here (only the full mlflow 3.18.0, which needs it), so 3.17.2.

    .venv/bin/python bench/run_search.py [--runs 100000] [--iterations 30] [--mlflow-iterations 10]
                                         [--pg-url URL | $LFOPS_BENCH_PG_URL] [--backends sqlite,postgresql]
                                         [--skip-mlflow] [--explain]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script (also by MLflow's venv): the repo first

from bench.common import median, percentile, print_table, time_each  # noqa: E402

MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = Path.home() / ".cache" / "lfops-bench" / f"mlflow-{MLFLOW_VERSION}"
MLFLOW_PACKAGES = [
    f"mlflow-skinny=={MLFLOW_VERSION}",
    "sqlalchemy==2.1.9",
    "alembic==1.20.1",
    "psycopg2-binary==2.9.13",
]
PAGE = 50
CHUNK = 10_000
# What a sweep varies (searched on) and what it keeps: the flat keys of a LLaMA-Factory LoRA config.
VARIED = {
    "lora_rank": [4, 8, 16, 32, 64],
    "learning_rate": [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 3e-4],
    "lora_alpha": [8, 16, 32, 64],
    "lora_dropout": [0.0, 0.05, 0.1],
    "per_device_train_batch_size": [1, 2, 4, 8],
    "gradient_accumulation_steps": [1, 2, 4, 8],
    "num_train_epochs": [1.0, 2.0, 3.0],
    "cutoff_len": [512, 1024, 2048, 4096],
    "lr_scheduler_type": ["cosine", "linear", "constant_with_warmup"],
    "warmup_ratio": [0.0, 0.03, 0.1],
    "weight_decay": [0.0, 0.01, 0.1],
    "seed": [1, 2, 3, 42],
    "template": ["llama3", "qwen", "mistral"],
    "dataset": ["alpaca_en_demo", "identity", "support_tickets_v3", "support_tickets_v4"],
    "model_name_or_path": ["meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "mistralai/Mistral-7B-v0.3"],
}
KEPT = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_target": "all",
    "max_samples": 100000,
    "preprocessing_num_workers": 16,
    "logging_steps": 10,
    "save_steps": 500,
    "bf16": True,
}


@dataclass
class Data:
    n_runs: int
    configs: list[dict] = field(default_factory=list)  # id, params
    runs: list[dict] = field(default_factory=list)  # id, config_id, final_loss


def generate(n_runs: int, seed: int = 0) -> Data:
    """Standard library only: the MLflow side makes the same rows in its own venv."""
    rng = random.Random(seed)
    data = Data(n_runs)
    for i in range(max(1, n_runs // 10)):
        params = {k: rng.choice(v) for k, v in VARIED.items()} | KEPT
        data.configs.append({"id": i + 1, "params": params})
    for j in range(n_runs):
        loss = round(0.3 + rng.random(), 6) if rng.random() < 0.85 else None
        data.runs.append({"id": j + 1, "config_id": j % len(data.configs) + 1, "final_loss": loss})
    return data


def keys(n: int, seed: int = 1) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(rng.choice(VARIED["lora_rank"]), rng.choice(VARIED["learning_rate"])) for _ in range(n)]


def expected_page(data: Data, rank: int, lr: float) -> list[int]:
    """The first page as the generated data has it: matching runs with a loss, best first (ties: lower id)."""
    found = [
        r
        for r in data.runs
        if r["final_loss"] is not None
        and data.configs[r["config_id"] - 1]["params"]["lora_rank"] == rank
        and data.configs[r["config_id"] - 1]["params"]["learning_rate"] == lr
    ]
    return [r["id"] for r in sorted(found, key=lambda r: (r["final_loss"], r["id"]))[:PAGE]]


def mlflow_value(value: object) -> str:
    """A param's value as MLflow logs it (`str()` of the value)."""
    return str(value)


def _chunks(rows: Iterator[dict], size: int = CHUNK) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(engine, table, rows) -> None:  # noqa: ANN001 - SQLAlchemy engine and table
    with engine.begin() as conn:
        for chunk in _chunks(iter(rows)):
            conn.execute(table.insert(), chunk)


def _analyze(engine) -> None:  # noqa: ANN001
    """Statistics, and on PostgreSQL the visibility map autovacuum would set after a bulk load (index-only scans
    otherwise visit the table for every row); the same for both sides."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        return
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def timed(fn, items: list, warmup: int) -> list[float]:  # noqa: ANN001
    """Milliseconds per item (the unit both sides report)."""
    return [s * 1000 for s in time_each(fn, items, warmup)]


# ---- lfops ----------------------------------------------------------------------------------------------------------


def load_lfops(url: str, data: Data) -> tuple[object, float]:
    from backend.runs.params import param_rows
    from backend.store import Store
    from backend.store import models as m

    start = time.perf_counter()
    store = Store(url)
    store.upgrade()
    eng = store.engine
    _insert(eng, m.User.__table__, [{"id": 1, "name": "bench", "email": "", "role": "analyst", "password_hash": "x"}])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    _insert(
        eng,
        m.Config.__table__,
        (
            {
                "id": c["id"],
                "commit": f"{c['id']:040x}",
                "path": f"configs/sweep{c['id'] % 500}.yaml",
                "config_hash": f"{c['id']:064x}",
                "dataset_version": "sha256:" + "0" * 64,
                "base_model": c["params"]["model_name_or_path"],
                "base_model_revision": "",
                "params": c["params"],
                "created_at": t0,
            }
            for c in data.configs
        ),
    )
    _insert(
        eng,
        m.Run.__table__,
        (
            {
                "id": r["id"],
                "config_id": r["config_id"],
                "backend": "local",
                "external_id": f"run-{r['id']}",
                "status": "succeeded" if r["final_loss"] is not None else "failed",
                "reason": "",
                "submitted_by_id": 1,
                "resources": {},
                "run_dir": "",
                "override_reason": "",
                "final_loss": r["final_loss"],
                "final_metrics": {},
                "metrics_offset": 0,
                "created_at": t0 + timedelta(minutes=r["id"]),
            }
            for r in data.runs
        ),
    )
    # the rows a launch writes (backend.runs.params.param_rows: the one rule of what is searchable)
    params = (
        row
        for r in data.runs
        for row in param_rows(r["id"], data.configs[r["config_id"] - 1]["params"], r["final_loss"])
    )
    _insert(eng, m.RunParam.__table__, params)
    _analyze(eng)
    return store, time.perf_counter() - start


def bench_lfops(store, data: Data, iterations: int) -> list[float]:  # noqa: ANN001
    from backend.auth import Actor
    from backend.paging import Page
    from backend.runs.queries import RunQueries

    queries = RunQueries(store, None)  # type: ignore[arg-type]  # listing needs no runner
    actor = Actor(1, "bench", "analyst", "bench@lfops.local")

    def search(key: tuple[int, float]) -> Page:
        rank, lr = key
        filters = [f"lora_rank={rank}", f"learning_rate={lr!r}"]
        return Page.of(
            lambda lim, off: queries.list(actor, params=filters, order="loss", limit=lim, offset=off), PAGE, 0
        )

    rank, lr = keys(1, seed=7)[0]
    got = [v.id for v in search((rank, lr)).items if v.final_loss is not None]
    assert got == expected_page(data, rank, lr)[: len(got)] and len(got) >= PAGE * 0.8, (got[:5], rank, lr)
    return timed(search, keys(iterations), warmup=3)


def explain_lfops(store, iterations: int) -> float:  # noqa: ANN001
    """The page query's plan, and its own median time (the statement alone, as the driver runs it: no Python
    building of the query or the views), so the figure does not hang on the machine's load as much. Prints the plan;
    returns milliseconds (SQLite: the statement run and fetched; PostgreSQL: EXPLAIN ANALYZE's execution time)."""
    from sqlalchemy import event

    from backend.auth import Actor
    from backend.runs.queries import RunQueries

    seen: list[tuple[str, object]] = []
    capture = lambda conn, cursor, statement, parameters, context, many: seen.append((statement, parameters))  # noqa: E731, ARG005
    queries = RunQueries(store, None)  # type: ignore[arg-type]
    actor = Actor(1, "bench", "analyst", "bench@lfops.local")
    pairs = keys(iterations, seed=3)
    statements = []
    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        for rank, lr in pairs:
            seen.clear()
            queries.list(actor, params=[f"lora_rank={rank}", f"learning_rate={lr!r}"], order="loss", limit=PAGE + 1)
            statements.append(seen[-1])  # the page (the last statement; before it, the filters' counts)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        statement, parameters = statements[0]
        postgres = store.engine.dialect.name == "postgresql"
        if postgres:  # as RunQueries.list plans (unprepared statements: backend.store.Store.reading)
            cur.execute("SET plan_cache_mode = force_custom_plan")
        cur.execute(("EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN ") + statement, parameters)
        print("\n".join("    " + " | ".join(str(c) for c in row) for row in cur.fetchall()), flush=True)
        ms = []
        for statement, parameters in statements:
            if postgres:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                ms.append(cur.fetchone()[0][0]["Execution Time"])
            else:
                start = time.perf_counter()
                cur.execute(statement, parameters).fetchall()
                ms.append((time.perf_counter() - start) * 1000)
        raw.rollback()
    finally:
        raw.close()
    return median(ms)


# ---- MLflow (in its own venv) ---------------------------------------------------------------------------------------


def load_mlflow(url: str, data: Data, workdir: Path) -> tuple[object, float]:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    start = time.perf_counter()
    store = SqlAlchemyStore(url, str(workdir / "artifacts"))
    exp_id = store.create_experiment("search-bench")
    eng = store.engine
    run_uuid = {r["id"]: uuid.UUID(int=r["id"]).hex for r in data.runs}
    t0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    _insert(
        eng,
        SqlRun.__table__,
        (
            {
                "run_uuid": run_uuid[r["id"]],
                "name": f"run-{r['id']}",
                "source_type": "LOCAL",
                "source_name": "",
                "entry_point_name": "",
                "user_id": "bench",
                "status": "FINISHED" if r["final_loss"] is not None else "FAILED",
                "start_time": t0 + r["id"] * 60_000,
                "end_time": t0 + r["id"] * 60_000 + 1_800_000,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"{workdir}/artifacts/{run_uuid[r['id']]}",
                "experiment_id": int(exp_id),
            }
            for r in data.runs
        ),
    )
    _insert(
        eng,
        SqlParam.__table__,
        (
            {"key": k, "value": mlflow_value(v), "run_uuid": run_uuid[r["id"]]}
            for r in data.runs
            for k, v in data.configs[r["config_id"] - 1]["params"].items()
        ),
    )

    def losses() -> Iterator[dict]:
        for r in data.runs:
            if r["final_loss"] is not None:
                yield {
                    "key": "train_loss",
                    "value": r["final_loss"],
                    "timestamp": 0,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": run_uuid[r["id"]],
                }

    _insert(eng, SqlMetric.__table__, losses())
    _insert(eng, SqlLatestMetric.__table__, losses())
    _analyze(eng)
    return (store, exp_id, {u: i for i, u in run_uuid.items()}), time.perf_counter() - start


def bench_mlflow(handle, data: Data, iterations: int) -> list[float]:  # noqa: ANN001
    from mlflow.entities import ViewType

    store, exp_id, run_id_of = handle

    def search(key: tuple[int, float]) -> list:
        rank, lr = key
        flt = f"params.lora_rank = '{mlflow_value(rank)}' and params.learning_rate = '{mlflow_value(lr)}'"
        return store.search_runs(
            [exp_id], flt, ViewType.ACTIVE_ONLY, max_results=PAGE, order_by=["metrics.train_loss ASC"]
        )

    rank, lr = keys(1, seed=7)[0]
    got = [run_id_of[r.info.run_id] for r in search((rank, lr))]
    assert got[:10] == expected_page(data, rank, lr)[:10], (got[:10], rank, lr)  # the same data, the same answer
    return timed(search, keys(iterations), warmup=1)


def mlflow_side(args: argparse.Namespace) -> None:
    """Entry point inside MLflow's venv: load, measure, print one JSON line."""
    import mlflow

    data = generate(args.runs)
    with tempfile.TemporaryDirectory(prefix="mlflow-search-bench-") as tmp:
        handle, load_s = load_mlflow(args.db_url, data, Path(tmp))
        ms = bench_mlflow(handle, data, args.mlflow_iterations)
        handle[0].engine.dispose()
    print(json.dumps({"load_s": load_s, "ms": ms, "mlflow": mlflow.__version__}))


def mlflow_python() -> str:
    """MLflow's own venv, made on first use (never lfops' venv: MLflow is no dependency of lfops)."""
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {MLFLOW_VENV} (pip install {' '.join(MLFLOW_PACKAGES)}) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", *MLFLOW_PACKAGES], check=True)
    return str(python)


def run_mlflow(url: str, args: argparse.Namespace) -> dict:
    cmd = [mlflow_python(), __file__, "--mlflow-side", "--db-url", url, "--runs", str(args.runs)]
    cmd += ["--mlflow-iterations", str(args.mlflow_iterations)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": url}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"MLflow side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- orchestration --------------------------------------------------------------------------------------------------


def _pg_database(admin_url: str, name: str, create: bool) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--mlflow-iterations", type=int, default=10, help="MLflow's query takes seconds here")
    parser.add_argument(
        "--pg-url", default=os.environ.get("LFOPS_BENCH_PG_URL", os.environ.get("LFOPS_TEST_PG_URL", ""))
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the page query's plan and its own median time")
    parser.add_argument("--mlflow-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mlflow_side:
        mlflow_side(args)
        return
    data = generate(args.runs)
    n_params = sum(len(data.configs[r["config_id"] - 1]["params"]) for r in data.runs)
    print(f"data: {len(data.runs):,} runs, {len(data.configs):,} configs, {n_params:,} parameter rows", flush=True)
    rows = []
    for backend in [b for b in args.backends.split(",") if b]:
        with tempfile.TemporaryDirectory(prefix="lfops-bench-search-") as tmp:
            if backend == "sqlite":
                lfops_url, mlflow_url = f"sqlite:///{tmp}/lfops.db", f"sqlite:///{tmp}/mlflow.db"
            elif backend == "postgresql":
                if not args.pg_url:
                    print("postgresql: skipped (no --pg-url / LFOPS_BENCH_PG_URL)")
                    continue
                lfops_url = _pg_database(args.pg_url, "lfops_bench_search", True)
                mlflow_url = _pg_database(args.pg_url, "lfops_bench_search_mlflow", True).replace(
                    "postgresql+psycopg://",
                    "postgresql+psycopg2://",  # MLflow's venv has psycopg2
                )
            else:
                raise SystemExit(f"backend: {backend!r} must be sqlite or postgresql")
            store, load_s = load_lfops(lfops_url, data)
            print(f"{backend}: lfops loaded in {load_s:.1f} s", flush=True)
            ours = bench_lfops(store, data, args.iterations)
            if args.explain:
                print(f"{backend}: the page query's plan", flush=True)
                own = explain_lfops(store, args.iterations)
                print(f"{backend}: the page query alone, median of {args.iterations}: {own:.2f} ms", flush=True)
            store.dispose()
            theirs: dict = {}
            if not args.skip_mlflow:
                theirs = run_mlflow(mlflow_url, args)
                print(f"{backend}: MLflow {theirs['mlflow']} loaded in {theirs['load_s']:.1f} s", flush=True)
            rows.append((backend, ours, theirs.get("ms")))
            if backend == "postgresql":
                _pg_database(args.pg_url, "lfops_bench_search", False)
                _pg_database(args.pg_url, "lfops_bench_search_mlflow", False)
    table = []
    for backend, ours, theirs in rows:
        cells = [backend, f"{median(ours):.2f}", f"{percentile(ours, 95):.2f}", "", "", ""]
        if theirs:
            cells[3:] = [
                f"{median(theirs):.1f}",
                f"{percentile(theirs, 95):.1f}",
                f"{median(theirs) / median(ours):.0f}x",
            ]
        table.append(cells)
    print_table(
        ["db", "lfops p50", "p95", "MLflow p50", "p95", "MLflow/lfops"],
        table,
        title=f"two equality filters, best loss first, first page of {PAGE}, {len(data.runs):,} runs (ms)",
    )
    print(
        f"\n{args.iterations} random (lora_rank, learning_rate) pairs for lfops, {args.mlflow_iterations} for MLflow; "
        f"goal: lfops p50 <= 20 ms and >= 25x faster than MLflow; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
