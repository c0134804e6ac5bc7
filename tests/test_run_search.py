"""Hyperparameter search (backend.runs.params through RunQueries.list): equality, ranges, ANDed filters, best loss
first, pages; bad filters refused naming the filter; the same through the API and the CLI; params recorded at launch
and backfilled by the migration. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from backend.api import create_app
from backend.errors import InvalidQuery
from backend.runners.base import RunState
from backend.runs.params import param_search, parse_filters, record_params
from backend.store.models import AuditEvent, Config, Run, RunParam, User
from tests.helpers import run_lfops
from tests.runs_fixtures import approved_merge, kill_leftover_runs
from tests.webui_fixtures import request_for

# (lora_rank, learning_rate, template, bf16, final loss): run ids follow this order, 1-based
SWEEP = [
    (16, 2e-4, "llama3", True, 0.90),
    (16, 2e-4, "llama3", False, 0.70),
    (8, 2e-4, "llama3", True, 0.60),
    (16, 1e-4, "qwen", True, 0.80),
    (16, 2e-4, "qwen", True, None),
    (16, 3e-4, "llama3", True, 0.50),
    (32, 5e-5, "llama3", True, 0.40),
    (16, 2e-4, "llama3", True, 0.75),
]


def seed(ws, sweep=SWEEP) -> list[int]:
    """Runs of a sweep as launches record them: config row, run row and its param rows."""
    ids = []
    with ws.store.session() as s:
        alice = s.scalar(select(User.id).where(User.name == "alice"))
        for i, (rank, lr, template, bf16, loss) in enumerate(sweep):
            params = {
                "lora_rank": rank,
                "learning_rate": lr,
                "template": template,
                "bf16": bf16,
                "lora_target": ["q_proj", "v_proj"],  # a list: not searchable, no row
            }
            cfg = Config(
                commit=f"{i + 1:040x}",
                path="configs/sweep.yaml",
                config_hash=f"{i + 1:064x}",
                dataset_version="d" * 64,
                base_model="tiny",
                params=params,
            )
            s.add(cfg)
            s.flush()
            run = Run(config_id=cfg.id, backend="local", status="succeeded", submitted_by_id=alice, final_loss=loss)
            s.add(run)
            s.flush()
            record_params(s, run.id, params)
            ids.append(run.id)
    return ids


def ids_of(views) -> list[int]:
    return [v.id for v in views]


@pytest.fixture
def sweep(any_db_env):
    ids = seed(any_db_env.ws)
    return any_db_env, ids


def test_two_equality_filters_best_loss_first_in_pages(sweep):
    env, ids = sweep
    runs, alice = env.ws.runs, env.actor("alice")
    found = runs.list(alice, params=["lora_rank=16", "learning_rate=2e-4"], order="loss")
    # runs 1, 2, 5, 8 match; by loss 0.70 (2), 0.75 (8), 0.90 (1), then the one without a loss (5)
    assert ids_of(found) == [ids[1], ids[7], ids[0], ids[4]]
    assert ids_of(runs.list(alice, params=["lora_rank=16", "learning_rate=2e-4"], order="loss", limit=2)) == [
        ids[1],
        ids[7],
    ]
    second = runs.list(alice, params=["lora_rank=16", "learning_rate=2e-4"], order="loss", limit=2, offset=2)
    assert ids_of(second) == [ids[0], ids[4]]
    # the same filters newest first; the API's key:value form reads the same
    assert ids_of(runs.list(alice, params=["lora_rank:16", "learning_rate:0.0002"])) == [ids[7], ids[4], ids[1], ids[0]]


def test_ranges_text_and_booleans(sweep):
    env, ids = sweep
    runs, alice = env.ws.runs, env.actor("alice")
    in_range = runs.list(alice, params=["learning_rate=1e-4..2e-4"], order="loss")
    assert ids_of(in_range) == [ids[2], ids[1], ids[7], ids[3], ids[0], ids[4]]  # 1e-4 and 2e-4 included
    assert ids_of(runs.list(alice, params=["learning_rate=2.5e-4.."])) == [ids[5]]
    assert ids_of(runs.list(alice, params=["lora_rank=..8"])) == [ids[2]]
    assert ids_of(runs.list(alice, params=["template=qwen", "bf16=true"])) == [ids[4], ids[3]]
    assert ids_of(runs.list(alice, params=["bf16=False"])) == [ids[1]]
    assert runs.list(alice, params=["lora_rank=64"]) == []  # a known key, a value no run has
    # combined with the columns' filters
    assert ids_of(runs.list(alice, params=["template=llama3"], status="succeeded", order="loss", limit=1)) == [ids[6]]


def finish_with_loss(env, run_id: int, out, train_loss: float | None) -> None:
    """The run back to running, then finished by the tracker as a real run ends: LLaMA-Factory's all_results.json
    (without train_loss when `train_loss` is None)."""
    with env.ws.store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="running"))
    out.mkdir(parents=True, exist_ok=True)
    results = {"epoch": 1.0, "train_runtime": 12.5} | ({} if train_loss is None else {"train_loss": train_loss})
    (out / "all_results.json").write_text(json.dumps(results))
    assert env.ws.runs.tracker.finish(run_id, RunState.FAILED, "test", out)


def test_a_run_finishing_moves_in_the_best_loss_order(sweep, tmp_path):
    env, ids = sweep
    runs, alice = env.ws.runs, env.actor("alice")
    both = ["lora_rank=16", "learning_rate=2e-4"]
    assert ids_of(runs.list(alice, params=both, order="loss"))[-1] == ids[4]  # no loss yet: last
    finish_with_loss(env, ids[4], tmp_path / "out5", 0.1)
    assert ids_of(runs.list(alice, params=both, order="loss")) == [ids[4], ids[1], ids[7], ids[0]]
    # the same order read from the runs (a range is not read in loss order), and without filters
    assert ids_of(runs.list(alice, params=["learning_rate=2e-4..2.5e-4"], order="loss"))[:2] == [ids[4], ids[2]]
    assert ids_of(runs.list(alice, order="loss", limit=1)) == [ids[4]]
    with env.ws.store.session() as s:
        assert set(s.scalars(select(RunParam.loss).where(RunParam.run_id == ids[4]))) == {0.1}
    # a run finishing without a train loss keeps none: still after every run with one
    finish_with_loss(env, ids[0], tmp_path / "out1", None)
    assert ids_of(runs.list(alice, params=both, order="loss"))[-1] == ids[0]


def test_runs_without_a_loss_sort_last_by_run_number(any_db_env):
    sweep = [(16, 2e-4, "llama3", True, None), (16, 2e-4, "llama3", True, 0.9), (16, 2e-4, "llama3", True, None)]
    sweep += [(8, 1e-4, "qwen", True, 0.1), (16, 2e-4, "qwen", True, 0.2)]
    ids = seed(any_db_env.ws, sweep)
    runs, alice = any_db_env.ws.runs, any_db_env.actor("alice")
    expected = [ids[4], ids[1], ids[0], ids[2]]
    both = ["lora_rank=16", "learning_rate=2e-4"]
    with any_db_env.ws.store.session() as s:  # equality filters are read from run_params in loss order
        assert param_search(s, parse_filters(both), 50, by_loss=True).driver is not None
        assert param_search(s, parse_filters(["lora_rank=8..16"]), 50, by_loss=True).driver is None
        assert set(s.scalars(select(RunParam.loss).where(RunParam.run_id == ids[0]))) == {math.inf}
    assert ids_of(runs.list(alice, params=both, order="loss")) == expected
    assert ids_of(runs.list(alice, params=both, order="loss", limit=2, offset=2)) == expected[2:]
    assert ids_of(runs.list(alice, params=["lora_rank=10..20"], order="loss")) == expected
    assert ids_of(runs.list(alice, params=["lora_rank=16", "template=llama3"], order="loss")) == expected[1:]
    assert ids_of(runs.list(alice, params=both, order="loss", status="succeeded", limit=1)) == [ids[4]]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["lora_rnk=16"], "param: no run has a parameter named 'lora_rnk'"),
        (["lora_rank=sixteen"], "param: 'lora_rank=sixteen': lora_rank is numeric, 'sixteen' is not a number"),
        (["learning_rate=1e-4..abc"], "param: 'learning_rate=1e-4..abc': learning_rate is numeric, 'abc' is not"),
        (["learning_rate=nan"], "param: 'learning_rate=nan': learning_rate is numeric, 'nan' is not a finite number"),
        (["learning_rate=3e-4..1e-4"], "param: 'learning_rate=3e-4..1e-4': the range is empty (3e-4 > 1e-4)"),
        (["template=a..b"], "param: 'template=a..b': template is not numeric: give one value, not a range"),
        (["lora_rank"], "param: 'lora_rank': write it as name=value or name=low..high"),
        (["lora_rank="], "param: 'lora_rank=': give a value after the name"),
        (["lora_rank=.."], "param: 'lora_rank=..': a range needs at least one end"),
        (["x;drop=1"], "param: 'x;drop=1': 'x;drop' is not a parameter name"),
        ([f"lora_rank={i}" for i in range(11)], "param: at most 10 filters, got 11"),
    ],
)
def test_bad_filters_are_refused_naming_the_filter(sweep, given, message):
    env, _ids = sweep
    with env.ws.store.session() as s:
        before = s.scalar(select(func.count()).select_from(AuditEvent))
    with pytest.raises(InvalidQuery) as raised:
        env.ws.runs.list(env.actor("alice"), params=given)
    assert str(raised.value).startswith(message) and raised.value.field == "param"
    with pytest.raises(InvalidQuery, match=r"^order: 'worst' must be one of newest, loss$"):
        env.ws.runs.list(env.actor("alice"), order="worst")
    with env.ws.store.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == before  # nothing changed


def test_api_searches_and_answers_422_naming_the_filter(env):
    ids = seed(env.ws)
    app = create_app(env.ws)
    token = env.ws.tokens.create(env.actor("alice"), "search", scope="read").token
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(
            "/api/v1/runs",
            params={"param": ["lora_rank:16", "learning_rate:1e-4..3e-4"], "order": "loss", "limit": 2},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert [item["id"] for item in page["items"]] == [ids[5], ids[1]] and page["next_offset"] == 2
        bad = client.get("/api/v1/runs", params={"param": "lora_rank:big"}, headers=headers)
        assert bad.status_code == 422
        assert bad.json() == {
            "error": "invalid",
            "field": "param",
            "message": "param: 'lora_rank:big': lora_rank is numeric, 'big' is not a number",
        }
        unknown = client.get("/api/v1/runs", params={"param": "rank:16"}, headers=headers)
        assert unknown.status_code == 422 and unknown.json()["message"] == "param: no run has a parameter named 'rank'"
        assert client.get("/api/v1/runs", params={"order": "best"}, headers=headers).status_code == 422
    app.state.readiness.close()


def test_cli_searches_on_the_database(env):
    ids = seed(env.ws)
    ws_dir = env.ws.settings.workspace
    args = ("runs", "list", "--param", "lora_rank=16", "--param", "template=llama3", "--order", "loss")
    out = run_lfops(*args, workspace=ws_dir, user="alice", password=env.passwords["alice"])
    assert out.returncode == 0, out.stderr
    listed = [int(line.split()[0]) for line in out.stdout.splitlines()[1:] if line.strip()[:1].isdigit()]
    assert listed == [ids[5], ids[1], ids[7], ids[0]]
    bad = run_lfops(
        "runs", "list", "--param", "learning_rate=fast", workspace=ws_dir, user="alice", password=env.passwords["alice"]
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: param: 'learning_rate=fast': learning_rate is numeric, 'fast' is not a number"


def test_a_launch_records_its_params(env):
    _cr, commit = approved_merge(env, "rank32", lora_rank=32, learning_rate=3e-4)
    alice = env.actor("alice")
    try:
        run = env.ws.runs.launch(alice, commit, config_path="configs/rank32.yaml")
        with env.ws.store.session() as s:
            rows = {r.key: (r.num, r.text) for r in s.scalars(select(RunParam).where(RunParam.run_id == run.id))}
        assert rows["lora_rank"] == (32.0, None) and rows["learning_rate"] == (3e-4, None)
        assert rows["finetuning_type"] == (None, "lora")
        assert ids_of(env.ws.runs.list(alice, params=["lora_rank=32", "learning_rate=3e-4"])) == [run.id]
        env.ws.runs.cancel(alice, run.id)
    finally:
        kill_leftover_runs(env.ws)


def test_the_migration_backfills_params_of_existing_runs(tmp_path):
    from alembic import command

    from backend.store import Store, _alembic_config

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    with store.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004_serving")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (id, name, email, role, password_hash, active, created_at) "
                             "VALUES (1, 'alice', '', 'analyst', 'x', 1, '2026-01-01')")  # fmt: skip
        conn.exec_driver_sql(
            'INSERT INTO configs (id, "commit", path, config_hash, dataset_version, base_model, base_model_revision, '
            "params, created_at) VALUES (1, 'c', 'configs/a.yaml', 'h', 'd', 'm', '', "
            '\'{"lora_rank": 16, "template": "qwen", "bf16": true, "lora_target": ["q"]}\', \'2026-01-01\')'
        )
        conn.exec_driver_sql(
            "INSERT INTO runs (id, config_id, backend, external_id, status, reason, submitted_by_id, resources, "
            "run_dir, override_reason, final_metrics, metrics_offset, created_at) "
            "VALUES (1, 1, 'local', '', 'succeeded', '', 1, '{}', '', '', '{}', 0, '2026-01-01')"
        )
    store.upgrade()
    with store.session() as s:
        rows = {r.key: (r.num, r.text) for r in s.scalars(select(RunParam).where(RunParam.run_id == 1))}
    assert rows == {"lora_rank": (16.0, None), "template": (None, "qwen"), "bf16": (None, "true")}
    with store.session() as s:  # the run has no final loss: its rows sort last
        assert set(s.scalars(select(RunParam.loss).where(RunParam.run_id == 1))) == {math.inf}
    store.dispose()


def test_webui_runs_filters_search_by_hyperparameters(env):
    from webui.auth import Authenticator
    from webui.context import AppContext
    from webui.runs_tab import RunsTab
    from webui.workdir import Workdir

    ids = seed(env.ws)
    tab = RunsTab(AppContext(env.ws, Authenticator(env.ws), Workdir(env.ws)))
    request = request_for("alice")
    rows = tab.on_list("all", "", "", request, 1, "lora_rank=16, learning_rate=1e-4..3e-4", "loss")
    assert [r[0] for r in rows] == [ids[5], ids[1], ids[7], ids[3], ids[0], ids[4]]
    with pytest.warns(UserWarning, match=r"^param: 'lora_rank=big': lora_rank is numeric"):  # Gradio's toast
        assert tab.on_list("all", "", "", request, 1, "lora_rank=big", "loss") == []
