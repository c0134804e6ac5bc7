"""Benchmark: the queries behind the lineage tab at scale, lfops versus MLflow's SQLAlchemy tracking store.

Generated data (deterministic, seed 0), at --scale 1.0: 100,000 runs, 1,000,000 metric rows, 10,000 configs (each a
merged change request with its approval), 100 dataset versions, a model version per succeeded run, 1,000
deployments. The same data goes into lfops' schema and into MLflow's (runs with tags for config hash, dataset
version, commit, change request and approvers, params for the hyperparameters, metrics, registered model versions),
bulk-loaded, then ANALYZEd on both sides. Queries, each over --iterations random keys (p50 and p95, milliseconds):

  1. runs of one config with final metrics, best loss first
       lfops:  Lineage.runs_of_config(config_hash)
       MLflow: search_runs(filter "tags.config_hash = X and attributes.status = 'FINISHED'",
               order_by metrics.train_loss ASC)
  2. provenance of one model
       lfops:  Lineage.of_model("name:vN")  (change request, approvers, commit, config, dataset, run, metrics)
       MLflow: get_model_version(name, N) + get_run(run_id)  (tags, params, metrics)
  3. everything derived from one dataset version (up to 1,000 runs, their models)
       lfops:  Lineage.from_dataset_version(version)  (configs, runs, models, deployments)
       MLflow: search_runs(filter "tags.dataset_version = X", max_results 1000) + search_model_versions(run_id IN ...)

MLflow is not installed into lfops' venv: `pip install --dry-run mlflow` there would replace pinned packages
(pyarrow 26 -> 25, python-dateutil 4 -> 2.9). It runs from its own venv (--mlflow-python, default
.venv-bench/bin/python, made with `python3.11 -m venv .venv-bench && .venv-bench/bin/pip install mlflow
'psycopg[binary]'`) as a subprocess that regenerates the same data from the same seed with this very file.

    .venv/bin/python bench/lineage.py [--scale 1.0] [--iterations 30] [--pg-url URL | $LFOPS_BENCH_PG_URL]
                                      [--backends sqlite,postgresql] [--skip-mlflow]

PostgreSQL is measured twice on the same data: with the server's default random_page_cost (4, which makes its
planner prefer sequential scans here) and with 1.1, the usual setting for SSDs, applied to both sides' databases.

A PostgreSQL URL names a role that may create databases (two are created and dropped per run), e.g.
postgresql+psycopg://bench:bench@127.0.0.1/postgres after `pg_ctlcluster 15 main start`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script (also by MLflow's venv): the repo first

from bench.common import ROOT, median, percentile, print_table, time_each  # noqa: E402 - standard library only

CHUNK = 20_000
PG_SSD_RANDOM_PAGE_COST = 1.1
HYPERPARAMS = {
    "learning_rate": [1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3],
    "lora_rank": [4, 8, 16, 32, 64],
    "lora_alpha": [8, 16, 32],
    "per_device_train_batch_size": [1, 2, 4, 8],
    "gradient_accumulation_steps": [1, 2, 4, 8],
    "num_train_epochs": [1.0, 2.0, 3.0],
    "cutoff_len": [512, 1024, 2048],
    "lr_scheduler_type": ["cosine", "linear"],
    "warmup_ratio": [0.0, 0.03, 0.1],
    "seed": [42],
}
STATUSES = ["succeeded"] * 16 + ["failed"] * 3 + ["cancelled"]


# ---- generated data: standard library only, so the MLflow side can make the same rows in its own venv ------------


def _hex(text: str, n: int = 40) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass
class Data:
    scale: float
    n_users: int
    n_configs: int
    n_runs: int
    n_datasets: int
    metrics_per_run: int = 10
    users: list[dict] = field(default_factory=list)
    configs: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)

    def metrics(self) -> Iterator[dict]:
        """metrics_per_run loss values per run (1,000,000 rows at scale 1)."""
        for run in self.runs:
            rng = random.Random(run["id"])
            value = 3.0 + rng.random()
            for step in range(1, self.metrics_per_run + 1):
                value *= 0.9 + 0.05 * rng.random()
                yield {"run_id": run["id"], "step": step, "key": "loss", "value": value}


def generate(scale: float, seed: int = 0) -> Data:
    rng = random.Random(seed)
    n_runs = max(100, int(100_000 * scale))
    n_configs = max(10, n_runs // 10)
    data = Data(scale, 20, n_configs, n_runs, max(5, n_configs // 100))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(data.n_users):
        role = "reviewer" if i % 4 == 0 else "analyst"
        data.users.append({"id": i + 1, "name": f"user{i:02d}", "role": role})
    reviewers = [u["id"] for u in data.users if u["role"] == "reviewer"]
    for i in range(n_configs):
        params = {k: rng.choice(v) for k, v in HYPERPARAMS.items()}
        author = rng.randint(1, data.n_users)
        data.configs.append(
            {
                "id": i + 1,
                "name": f"cfg{i % 500:03d}",
                "commit": _hex(f"commit{i}"),
                "config_hash": _hex(f"config{i}", 64),
                "dataset_version": "sha256:" + _hex(f"dataset{i % data.n_datasets}", 64),
                "params": params,
                "author_id": author,
                "approver_id": rng.choice([r for r in reviewers if r != author]),
                "at": t0 + timedelta(minutes=i),
            }
        )
    versions: dict[str, int] = {}
    for j in range(n_runs):
        cfg = data.configs[j % n_configs]
        status = rng.choice(STATUSES)
        loss = round(0.5 + rng.random(), 6) if status == "succeeded" else None
        run = {
            "id": j + 1,
            "config_id": cfg["id"],
            "status": status,
            "final_loss": loss,
            "submitted_by_id": rng.randint(1, data.n_users),
            "created_at": t0 + timedelta(minutes=n_configs + j),
        }
        data.runs.append(run)
        if status == "succeeded":
            versions[cfg["name"]] = versions.get(cfg["name"], 0) + 1
            data.models.append(
                {
                    "id": len(data.models) + 1,
                    "name": cfg["name"],
                    "version": versions[cfg["name"]],
                    "run_id": run["id"],
                    "parent_id": None,
                }
            )
            if rng.random() < 0.01:  # an export (merged full model) of that adapter
                parent = data.models[-1]
                versions[cfg["name"]] += 1
                data.models.append(
                    {
                        "id": len(data.models) + 1,
                        "name": cfg["name"],
                        "version": versions[cfg["name"]],
                        "run_id": run["id"],
                        "parent_id": parent["id"],
                    }
                )
    for k in range(max(10, n_runs // 100)):
        data.deployments.append({"id": k + 1, "model_version_id": rng.randint(1, len(data.models))})
    return data


def samples(data: Data, n: int, seed: int = 1) -> dict[str, list]:
    rng = random.Random(seed)
    return {
        "config_hash": [rng.choice(data.configs)["config_hash"] for _ in range(n)],
        "model": [(m["name"], m["version"]) for m in (rng.choice(data.models) for _ in range(n))],
        "dataset_version": [rng.choice(data.configs)["dataset_version"] for _ in range(n)],
    }


def timed(fn: Callable[[object], object], keys: list, warmup: int = 3) -> list[float]:
    """Milliseconds per key (the unit both sides report)."""
    return [seconds * 1000 for seconds in time_each(fn, keys, warmup)]


def _chunks(rows: Iterator[dict] | list[dict], size: int = CHUNK) -> Iterator[list[dict]]:
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
        for chunk in _chunks(rows):
            conn.execute(table.insert(), chunk)


def _analyze(engine) -> None:  # noqa: ANN001
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


# ---- lfops ----------------------------------------------------------------------------------------------------------


def load_lfops(url: str, data: Data, workdir: Path) -> tuple[object, float]:
    from backend.settings import Settings
    from backend.store import Store
    from backend.store import models as m

    start = time.perf_counter()
    store = Store(url)
    store.upgrade()
    eng = store.engine
    _insert(
        eng,
        m.User.__table__,
        [
            {"id": u["id"], "name": u["name"], "email": "", "role": u["role"], "password_hash": "x", "active": True}
            for u in data.users
        ],
    )
    crs, reviews, configs = [], [], []
    for c in data.configs:
        common = {"config_hash": c["config_hash"], "dataset_version": c["dataset_version"]}
        crs.append(
            {
                "id": c["id"],
                "title": f"tune {c['name']}",
                "description": "",
                "branch": f"b/{c['id']}",
                "base_commit": _hex(f"base{c['id']}"),
                "head_commit": _hex(f"head{c['id']}"),
                "config_path": f"configs/{c['name']}.yaml",
                "author_id": c["author_id"],
                "status": "merged",
                "merged_commit": c["commit"],
                "merged_by_id": c["approver_id"],
                "created_at": c["at"],
                "updated_at": c["at"],
                "merged_at": c["at"],
                **common,
            }
        )
        reviews.append(
            {
                "change_request_id": c["id"],
                "reviewer_id": c["approver_id"],
                "decision": "approved",
                "comment": "",
                "head_commit": _hex(f"head{c['id']}"),
                "at": c["at"],
            }
        )
        configs.append(
            {
                "id": c["id"],
                "commit": c["commit"],
                "path": f"configs/{c['name']}.yaml",
                "base_model": "meta-llama/Llama-3.2-1B",
                "base_model_revision": _hex("rev"),
                "change_request_id": c["id"],
                "params": c["params"],
                "created_at": c["at"],
                **common,
            }
        )
    _insert(eng, m.ChangeRequest.__table__, crs)
    _insert(eng, m.Review.__table__, reviews)
    _insert(eng, m.Config.__table__, configs)
    _insert(
        eng,
        m.Run.__table__,
        (
            {
                "id": r["id"],
                "config_id": r["config_id"],
                "backend": "local",
                "external_id": f"run-{r['id']:06d}",
                "status": r["status"],
                "reason": "",
                "submitted_by_id": r["submitted_by_id"],
                "resources": {},
                "run_dir": f"/runs/run-{r['id']:06d}/output",
                "override_reason": "",
                "final_loss": r["final_loss"],
                "final_metrics": {"train_loss": r["final_loss"]} if r["final_loss"] is not None else {},
                "metrics_offset": 0,
                "created_at": r["created_at"],
                "started_at": r["created_at"],
                "finished_at": r["created_at"] + timedelta(minutes=30),
            }
            for r in data.runs
        ),
    )
    _insert(eng, m.Metric.__table__, data.metrics())
    _insert(
        eng,
        m.ModelVersion.__table__,
        (
            {
                "id": mv["id"],
                "name": mv["name"],
                "version": mv["version"],
                "kind": "full" if mv["parent_id"] else "adapter",
                "run_id": mv["run_id"],
                "parent_id": mv["parent_id"],
                "artifact_uri": f"/registry/{mv['name']}/v{mv['version']}",
                "manifest_sha256": _hex(f"manifest{mv['id']}", 64),
                "hub_repo": "",
                "hub_revision": "",
                "created_at": datetime(2026, 6, 1, tzinfo=UTC),
            }
            for mv in data.models
        ),
    )
    _insert(
        eng,
        m.Deployment.__table__,
        [
            {
                "id": d["id"],
                "name": f"deployment-{d['id']}",
                "model_version_id": d["model_version_id"],
                "target": "staging",
                "endpoint": "",
                "status": "ready",
                "created_at": datetime(2026, 6, 2, tzinfo=UTC),
                "updated_at": datetime(2026, 6, 2, tzinfo=UTC),
            }
            for d in data.deployments
        ],
    )
    if url.startswith("postgresql"):  # explicit ids were inserted: move the sequences past them
        from sqlalchemy import text

        with eng.begin() as conn:
            for table in ("users", "change_requests", "configs", "runs", "model_versions", "deployments"):
                sql = f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
                conn.execute(text(sql))
    _analyze(eng)
    settings = Settings(workspace=workdir, database_url=url, repo_url="")
    return (store, settings), time.perf_counter() - start


def bench_lfops(handle: object, data: Data, iterations: int) -> dict[str, list[float]]:
    from backend.auth import Actor
    from backend.lineage import Lineage
    from backend.registry import Registry

    store, settings = handle
    lineage = Lineage(store, Registry(store, settings))
    actor = Actor(1, "user00", "reviewer", "user00@lfops.local")
    keys = samples(data, iterations)
    results = {
        "runs of one config": timed(lambda h: lineage.runs_of_config(actor, h), keys["config_hash"]),
        "provenance of one model": timed(lambda nv: lineage.of_model(actor, f"{nv[0]}:v{nv[1]}"), keys["model"]),
        "derived from one dataset version": timed(
            lambda v: lineage.from_dataset_version(actor, v), keys["dataset_version"]
        ),
    }
    # sanity: the answers are what the generated data says
    probe = keys["dataset_version"][0]
    expected = sum(1 for r in data.runs if data.configs[r["config_id"] - 1]["dataset_version"] == probe)
    got = len(lineage.from_dataset_version(actor, probe).runs)
    assert got == min(expected, 1000), (got, expected)
    return results


# ---- MLflow (runs in its own venv) ----------------------------------------------------------------------------------


def load_mlflow(url: str, data: Data, workdir: Path) -> tuple[object, float]:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModel
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    start = time.perf_counter()
    store = SqlAlchemyStore(url, str(workdir / "artifacts"))
    registry = RegistryStore(url)
    exp_id = store.create_experiment("lineage-bench")
    eng = store.engine
    uuids = {r["id"]: uuid.UUID(int=r["id"]).hex for r in data.runs}
    users = {u["id"]: u["name"] for u in data.users}
    status = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
    ms = lambda dt: int(dt.timestamp() * 1000)  # noqa: E731
    _insert(
        eng,
        SqlRun.__table__,
        (
            {
                "run_uuid": uuids[r["id"]],
                "name": f"run-{r['id']}",
                "source_type": "LOCAL",
                "source_name": "",
                "entry_point_name": "",
                "user_id": users[r["submitted_by_id"]],
                "status": status[r["status"]],
                "start_time": ms(r["created_at"]),
                "end_time": ms(r["created_at"]) + 1_800_000,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"{workdir}/artifacts/{uuids[r['id']]}",
                "experiment_id": int(exp_id),
            }
            for r in data.runs
        ),
    )

    def tags() -> Iterator[dict]:
        for r in data.runs:
            c = data.configs[r["config_id"] - 1]
            values = {
                "config_hash": c["config_hash"],
                "dataset_version": c["dataset_version"],
                "commit": c["commit"],
                "config_path": f"configs/{c['name']}.yaml",
                "change_request": str(c["id"]),
                "approvers": users[c["approver_id"]],
                "base_model": "meta-llama/Llama-3.2-1B",
            }
            for key, value in values.items():
                yield {"key": key, "value": value, "run_uuid": uuids[r["id"]]}

    def params() -> Iterator[dict]:
        for r in data.runs:
            for key, value in data.configs[r["config_id"] - 1]["params"].items():
                yield {"key": key, "value": str(value), "run_uuid": uuids[r["id"]]}

    def metrics(latest: bool) -> Iterator[dict]:
        last: dict | None = None
        for row in data.metrics():
            item = {
                "key": "loss",
                "value": row["value"],
                "timestamp": row["step"],
                "step": row["step"],
                "is_nan": False,
                "run_uuid": uuids[row["run_id"]],
            }
            if not latest:
                yield item
            elif row["step"] == data.metrics_per_run:
                last = item
                yield last
        for r in data.runs:  # the final train loss, as LLaMA-Factory's all_results.json reports it
            if r["final_loss"] is not None:
                yield {
                    "key": "train_loss",
                    "value": r["final_loss"],
                    "timestamp": 0,
                    "step": 0,
                    "is_nan": False,
                    "run_uuid": uuids[r["id"]],
                }

    _insert(eng, SqlTag.__table__, tags())
    _insert(eng, SqlParam.__table__, params())
    _insert(eng, SqlMetric.__table__, metrics(latest=False))
    _insert(eng, SqlLatestMetric.__table__, metrics(latest=True))
    names = sorted({mv["name"] for mv in data.models})
    _insert(
        eng,
        SqlRegisteredModel.__table__,
        [{"name": n, "creation_time": 0, "last_updated_time": 0, "description": ""} for n in names],
    )
    _insert(
        eng,
        SqlModelVersion.__table__,
        (
            {
                "name": mv["name"],
                "version": mv["version"],
                "creation_time": 0,
                "last_updated_time": 0,
                "description": "",
                "user_id": "",
                "current_stage": "None",
                "source": f"runs:/{uuids[mv['run_id']]}/model",
                "storage_location": None,
                "run_id": uuids[mv["run_id"]],
                "run_link": "",
                "status": "READY",
                "status_message": "",
            }
            for mv in data.models
        ),
    )
    _analyze(eng)
    return (store, registry, exp_id), time.perf_counter() - start


def bench_mlflow(handle: object, data: Data, iterations: int) -> dict[str, list[float]]:
    from mlflow.entities import ViewType

    store, registry, exp_id = handle
    keys = samples(data, iterations)

    def runs_of_config(h: str) -> object:
        return store.search_runs(
            [exp_id],
            f"tags.config_hash = '{h}' and attributes.status = 'FINISHED'",
            ViewType.ACTIVE_ONLY,
            max_results=100,
            order_by=["metrics.train_loss ASC"],
        )

    def provenance(nv: tuple[str, int]) -> object:
        mv = registry.get_model_version(nv[0], str(nv[1]))
        return store.get_run(mv.run_id)

    def derived(v: str) -> object:
        runs = store.search_runs([exp_id], f"tags.dataset_version = '{v}'", ViewType.ACTIVE_ONLY, max_results=1000)
        ids = ", ".join(f"'{r.info.run_id}'" for r in runs)
        models = registry.search_model_versions(f"run_id IN ({ids})", max_results=10_000) if ids else []
        return runs, models

    results = {
        "runs of one config": timed(runs_of_config, keys["config_hash"]),
        "provenance of one model": timed(provenance, keys["model"]),
        "derived from one dataset version": timed(derived, keys["dataset_version"]),
    }
    probe = keys["dataset_version"][0]
    expected = sum(1 for r in data.runs if data.configs[r["config_id"] - 1]["dataset_version"] == probe)
    assert len(derived(probe)[0]) == min(expected, 1000)
    return results


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


def set_random_page_cost(url: str, value: float) -> None:
    """PostgreSQL's default random_page_cost (4) models spinning disks and steers the planner to sequential scans
    over index lookups; 1.1 is the usual setting on SSDs. Applied to the database, so new connections use it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{make_url(url).database}" SET random_page_cost = {float(value)}'))
    engine.dispose()


def mlflow_side(args: argparse.Namespace) -> None:
    """Entry point inside MLflow's venv: load, measure, print one JSON line."""
    data = generate(args.scale)
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        handle, load_s = load_mlflow(args.db_url, data, Path(tmp))
        results = {"default": bench_mlflow(handle, data, args.iterations)}
        if args.db_url.startswith("postgresql"):
            for engine in (handle[0].engine, handle[1].engine):
                engine.dispose()
            set_random_page_cost(args.db_url, PG_SSD_RANDOM_PAGE_COST)
            results["ssd"] = bench_mlflow(handle, data, args.iterations)
        handle[0].engine.dispose()
        handle[1].engine.dispose()
    import mlflow

    print(json.dumps({"load_s": load_s, "results": results, "mlflow": mlflow.__version__}))


def run_mlflow(python: str, url: str, args: argparse.Namespace) -> dict:
    cmd = [python, __file__, "--mlflow-side", "--db-url", url, "--scale", str(args.scale)]
    cmd += ["--iterations", str(args.iterations)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": url})
    if proc.returncode != 0:
        raise SystemExit(f"MLflow side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=float(os.environ.get("LFOPS_BENCH_SCALE", "1.0")))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--pg-url", default=os.environ.get("LFOPS_BENCH_PG_URL", ""))
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--mlflow-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--mlflow-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mlflow_side:
        mlflow_side(args)
        return
    data = generate(args.scale)
    n_metrics = data.n_runs * data.metrics_per_run
    print(
        f"data: {data.n_runs:,} runs, {n_metrics:,} metric rows, {data.n_configs:,} configs, "
        f"{data.n_datasets} dataset versions, {len(data.models):,} model versions, {len(data.deployments):,} "
        f"deployments; {args.iterations} random keys per query",
        flush=True,
    )
    backends = [b for b in args.backends.split(",") if b]
    rows = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="lfops-bench-lineage-") as tmp:
            tmpdir = Path(tmp)
            if backend == "sqlite":
                lfops_url, mlflow_url = f"sqlite:///{tmpdir / 'lfops.db'}", f"sqlite:///{tmpdir / 'mlflow.db'}"
            elif backend == "postgresql":
                if not args.pg_url:
                    print("postgresql: skipped (no --pg-url / LFOPS_BENCH_PG_URL)")
                    continue
                lfops_url = _pg_database(args.pg_url, "lfops_bench_lineage", True)
                mlflow_url = _pg_database(args.pg_url, "lfops_bench_mlflow", True)
            else:
                raise SystemExit(f"backend: {backend!r} must be sqlite or postgresql")
            handle, load_s = load_lfops(lfops_url, data, tmpdir)
            print(f"{backend}: lfops data loaded in {load_s:.1f} s", flush=True)
            ours = {"default": bench_lfops(handle, data, args.iterations)}
            handle[0].dispose()
            if backend == "postgresql":
                set_random_page_cost(lfops_url, PG_SSD_RANDOM_PAGE_COST)
                ours["ssd"] = bench_lfops(handle, data, args.iterations)
                handle[0].dispose()
            theirs: dict = {}
            if not args.skip_mlflow:
                result = run_mlflow(args.mlflow_python, mlflow_url, args)
                theirs = result["results"]
                print(f"{backend}: MLflow {result['mlflow']} data loaded in {result['load_s']:.1f} s", flush=True)
            for setting, results in ours.items():
                label = backend if setting == "default" else f"pg rpc {PG_SSD_RANDOM_PAGE_COST}"
                for query, values in results.items():
                    rows.append((label, query, values, theirs.get(setting, {}).get(query)))
            if backend == "postgresql":
                _pg_database(args.pg_url, "lfops_bench_lineage", False)
                _pg_database(args.pg_url, "lfops_bench_mlflow", False)
    print()
    table = []
    for backend, query, ours_ms, theirs_ms in rows:
        ours_p50 = median(ours_ms)
        cells = [backend, query, f"{ours_p50:.2f}", f"{percentile(ours_ms, 95):.2f}", "", "", ""]
        if theirs_ms:
            theirs_p50 = median(theirs_ms)
            cells[4:] = [f"{theirs_p50:.2f}", f"{percentile(theirs_ms, 95):.2f}", f"{theirs_p50 / ours_p50:.1f}x"]
        table.append(cells)
    print_table(["db", "query", "lfops p50", "p95", "MLflow p50", "p95", "MLflow/lfops"], table, align="llrrrrr")
    print(
        "\nmilliseconds; target: lfops p50 <= 50 ms and >= 10x faster than MLflow. "
        f"pg rpc {PG_SSD_RANDOM_PAGE_COST}: the same PostgreSQL databases (both sides) after "
        f"ALTER DATABASE ... SET random_page_cost = {PG_SSD_RANDOM_PAGE_COST} (SSD); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
