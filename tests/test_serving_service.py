"""Deployments through `Workspace.serving` and the CLI, for real: a version trained and registered in this module is
deployed locally by a reviewer (LLaMA-Factory's API behind the gateway), called with the openai client, followed to
the next version its config registers, traced by lineage, undeployed. Every refused request leaves the database, the
config repository and the machine exactly as they were (whole-state snapshots, no process left).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from sqlalchemy import select

from backend import demo
from backend.cli.main import main as lfops
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied, TimedOut
from backend.lineage import graph
from backend.serving.httpserver import bind_socket
from backend.store.models import ApiKey, AuditEvent, Deployment, Rollout
from backend.workspace import Workspace
from tests.runs_fixtures import approved_merge, kill_leftover_runs, wait_for
from tests.snapshots import db_state, quiet_snapshot, snapshot
from tests.test_serving_local import QUESTION, kill_all_under, processes_under

pytestmark = pytest.mark.slow
CONFIG = "configs/tiny-follow.yaml"


def train(env, cr: int) -> int:
    """Launch the merged change request and wait until its version is registered; returns the run id."""
    alice = env.actor("alice")
    env.ws.runs.start_monitor(interval=0.1)
    try:
        run = env.ws.runs.launch(alice, cr)
        final = env.ws.runs.wait(alice, run.id, timeout=300)
    except BaseException:
        kill_leftover_runs(env.ws)
        raise
    finally:
        env.ws.runs.stop_monitor()
    assert final.status == "succeeded", final.reason
    return run.id


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory):
    """tiny-follow:v1, a LoRA adapter on a base model of its own (so the test can take the base model away)."""
    from tests.workspace_fixtures import make_env

    root = tmp_path_factory.mktemp("serving-service")
    env = make_env(template_workspace, root / "ws")
    base = root / "base-model"
    shutil.copytree(env.ws.settings.models_dir / demo.DEMO_MODEL, base)
    cr, _ = approved_merge(env, "tiny-follow", model_name_or_path=str(base))
    train(env, cr)
    yield env, cr, base
    env.ws.serving.close()
    kill_all_under(env.ws.settings.workspace / "serving")
    env.ws.store.dispose()


@pytest.fixture
def serving_root(trained) -> Path:
    return trained[0].ws.settings.workspace / "serving"


def cli(env, user: str, *args: str, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords[user])
    code = lfops(["--workspace", str(env.ws.settings.workspace), "--user", user, *args], plugins=[])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- refusals: nothing half-made ---------------------------------------------------------------------------------


def refused(env, root: Path, name: str, call, error: type[Exception], message: str) -> None:
    """`call` raises `error` whose message matches; no row, no audit event, no Git change, no process, no state."""
    before = snapshot(env)
    with pytest.raises(error) as err:
        call()
    assert re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)
    assert snapshot(env) == before
    assert processes_under(root) == []
    assert not (root / name / "deployment.json").exists()


def test_analyst_may_not_deploy(trained, serving_root):
    env, _, _ = trained
    refused(
        env,
        serving_root,
        "tiny-follow",
        lambda: env.ws.serving.deploy(env.actor("alice"), "tiny-follow"),
        PermissionDenied,
        r"^alice \(analyst\) may not deploy, roll out or undeploy models",
    )


def test_bad_input_is_refused_and_leaves_nothing(trained, serving_root):
    env, _, base = trained
    rita = env.actor("rita")
    deploy = env.ws.serving.deploy
    refused(
        env,
        serving_root,
        "tiny-follow",
        lambda: deploy(rita, "tiny-follow:v9"),
        NotFound,
        r"^model tiny-follow:v9 is not in the registry$",
    )
    refused(
        env,
        serving_root,
        "tiny-follow",
        lambda: deploy(rita, "tiny-follow", target="gpu-nope"),
        LfopsError,
        r"^target: 'gpu-nope' is neither local nor a cluster profile \(profiles: none configured\)$",
    )
    refused(
        env,
        serving_root,
        "Bad_Name",
        lambda: deploy(rita, "tiny-follow", name="Bad_Name"),
        LfopsError,
        r"^name: 'Bad_Name' must be 1-47 lower-case letters",
    )
    # tampered: a file added to the version directory after registration
    version_dir = Path(env.ws.registry.get(rita, "tiny-follow:v1").artifact_uri)
    planted = version_dir / "planted.bin"
    planted.write_bytes(b"not from the run")
    try:
        refused(
            env,
            serving_root,
            "tiny-follow",
            lambda: deploy(rita, "tiny-follow:v1"),
            Conflict,
            r"^model: tiny-follow:v1 fails `registry verify`, not serving it: planted.bin: not in the manifest",
        )
    finally:
        planted.unlink()
    # the base model is gone from this machine
    away = base.with_name("base-model.away")
    base.rename(away)
    try:
        refused(
            env,
            serving_root,
            "tiny-follow",
            lambda: deploy(rita, "tiny-follow:v1"),
            NotFound,
            r"^base model: .*base-model of tiny-follow:v1 is not on this machine$",
        )
    finally:
        away.rename(base)
    # the port is taken: refused before any process starts
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        refused(
            env,
            serving_root,
            "tiny-follow",
            lambda: deploy(rita, "tiny-follow:v1", port=port),
            Conflict,
            rf"^port: 127.0.0.1:{port} is already in use$",
        )
    finally:
        taken.close()
    # a model server that never becomes ready: stopped at the time-out, its port given back
    port = bind_socket("127.0.0.1", 0).getsockname()[1]
    refused(
        env,
        serving_root,
        "never",
        lambda: deploy(rita, "tiny-follow:v1", name="never", port=port, ready_timeout_s=1),
        TimedOut,
        r"^model server of never \(tiny-follow:v1\) was not ready after 1 s and was stopped",
    )
    bind_socket("127.0.0.1", port).close()


# ---- deploy, call, keys --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(trained):
    """Deployed by rita through `lfops deploy --follow`; (endpoint, first key)."""
    env, _, _ = trained
    mp = pytest.MonkeyPatch()
    mp.setenv("LFOPS_PASSWORD", env.passwords["rita"])
    try:
        code = lfops(
            ["--workspace", str(env.ws.settings.workspace), "--user", "rita", "deploy", "tiny-follow", "--follow"],
            plugins=[],
        )
    finally:
        mp.undo()
    assert code == 0
    info = env.ws.serving.get(env.actor("rita"), "tiny-follow")
    keys = env.ws.serving.keys(env.actor("rita"), "tiny-follow")
    return info, keys


def test_a_reviewer_deploys_and_clients_call_it_with_the_openai_client(trained, deployed, capsys, monkeypatch):
    env, _, _ = trained
    info, keys = deployed
    assert (info.status, info.model, info.target, info.follows_config) == ("running", "tiny-follow:v1", "local", CONFIG)
    assert info.endpoint == f"http://127.0.0.1:{info.port}/v1" and info.created_by == "rita"
    # the key was printed once; only its id and hash are stored
    code, out, _ = cli(env, "alice", "deployments", "show", "tiny-follow", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "tiny-follow [running] tiny-follow:v1 on local  follows configs/tiny-follow.yaml" in out
    assert re.search(r"deploy\s+- -> tiny-follow:v1 by rita \[succeeded\] in \d+\.\d s", out)
    assert f"key {keys[0].key_id}  active  first key  created by rita" in out
    with env.ws.store.session() as s:
        dep = s.scalar(select(Deployment).where(Deployment.name == "tiny-follow"))
        (rollout,) = s.scalars(select(Rollout).where(Rollout.deployment_id == dep.id))
        (key_row,) = s.scalars(select(ApiKey).where(ApiKey.deployment_id == dep.id))
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "serving.deploy"))
    assert (rollout.trigger, rollout.from_version_id, rollout.status, rollout.actor) == (
        "deploy",
        None,
        "succeeded",
        "rita",
    )
    assert rollout.switch_s > 0 and key_row.key_id == keys[0].key_id and key_row.revoked_at is None
    assert (event.actor, event.subject, event.detail["model"]) == ("rita", "deployment:tiny-follow", "tiny-follow:v1")
    assert event.detail["key_id"] == key_row.key_id

    key, _ = env.ws.serving.create_key(env.actor("rita"), "tiny-follow", "tests")
    client = openai.OpenAI(base_url=info.endpoint, api_key=key, max_retries=0, timeout=120)
    wait_for(
        lambda: _accepted(client), timeout=10, what="the new key accepted"
    )  # the gateway re-reads keys each second
    assert [m.id for m in client.models.list().data] == ["tiny-follow"]
    answer = client.chat.completions.create(model="tiny-follow", messages=QUESTION, max_tokens=8)
    assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens > 0
    # the key itself is nowhere: not in the database, the audit log or the gateway's log
    assert key not in repr(db_state(env.ws.store))
    for log in (env.ws.settings.workspace / "serving" / "tiny-follow").glob("*.log"):
        assert key not in log.read_text()
    metrics = httpx.get(info.endpoint.removesuffix("/v1") + "/metrics").text
    assert 'model_version="tiny-follow:v1"' in metrics and 'deployment="tiny-follow"' in metrics


def test_keys_are_created_shown_once_and_revoked_without_a_restart(trained, deployed, capsys, monkeypatch):
    env, _, _ = trained
    info, _ = deployed
    code, out, _ = cli(
        env,
        "rita",
        "deployments",
        "keys",
        "tiny-follow",
        "create",
        "--label",
        "app",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0
    key = re.search(r"lfk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", out).group(0)
    key_id = key.split("_")[1]
    client = openai.OpenAI(base_url=info.endpoint, api_key=key, max_retries=0, timeout=60)
    wait_for(lambda: _accepted(client), timeout=10, what="the new key accepted")
    before = quiet_snapshot(env)  # the gateway may still be writing a request an earlier test made and it sampled
    code, _, err = cli(
        env, "alice", "deployments", "keys", "tiny-follow", "revoke", key_id, capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and "may not deploy, roll out or undeploy models" in err
    assert snapshot(env) == before
    code, out, _ = cli(
        env, "rita", "deployments", "keys", "tiny-follow", "revoke", key_id, capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0 and f"key {key_id}  revoked" in out
    wait_for(lambda: not _accepted(client), timeout=10, what="the revoked key refused")
    with pytest.raises(Conflict, match=f"^key: {key_id} of deployment tiny-follow is already revoked$"):
        env.ws.serving.revoke_key(env.actor("rita"), "tiny-follow", key_id)


def _gone(pid: int) -> bool:
    """Ended (a zombie child of this test process counts: it runs nothing, the OS only keeps its exit code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _accepted(client: openai.OpenAI) -> bool:
    try:
        client.models.list()
        return True
    except openai.AuthenticationError:
        return False


# ---- follow, restart, lineage --------------------------------------------------------------------------------------


def test_a_new_version_of_the_followed_config_rolls_the_deployment_under_load(trained, deployed):
    env, cr, _ = trained
    info, _ = deployed
    key, _ = env.ws.serving.create_key(env.actor("admin"), "tiny-follow", "load")
    client = openai.OpenAI(base_url=info.endpoint, api_key=key, max_retries=0, timeout=60)
    wait_for(
        lambda: _accepted(client), timeout=10, what="the new key accepted"
    )  # the gateway re-reads keys each second
    failures, served, done = [], set(), threading.Event()
    base = info.endpoint.removesuffix("/v1")

    def client_loop() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120) as c:
            while not done.is_set():
                r = c.post(base + "/v1/chat/completions", json={"model": "x", "messages": QUESTION, "max_tokens": 2})
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
                served.add(httpx.get(base + "/readyz", timeout=10).json()["model_version"])
                time.sleep(0.05)

    loop = threading.Thread(target=client_loop)
    loop.start()
    try:
        run_id = train(env, cr)  # the same config once more: registers tiny-follow:v2, the hook rolls the deployment
        env.ws.serving.wait_follows(timeout=300)
        time.sleep(0.5)
    finally:
        done.set()
        loop.join()
    assert failures == []
    assert served == {"tiny-follow:v1", "tiny-follow:v2"}
    now = env.ws.serving.get(env.actor("alice"), "tiny-follow", live=True)
    assert (now.model, now.status, now.live.state, now.live.model_version) == (
        "tiny-follow:v2",
        "running",
        "running",
        "tiny-follow:v2",
    )
    rollouts = env.ws.serving.show(env.actor("alice"), "tiny-follow").rollouts
    assert [(r.trigger, r.from_model, r.to_model, r.actor, r.status) for r in rollouts] == [
        ("deploy", None, "tiny-follow:v1", "rita", "succeeded"),
        ("follow", "tiny-follow:v1", "tiny-follow:v2", "lfops", "succeeded"),
    ]
    assert env.ws.registry.for_run(run_id).ref == "tiny-follow:v2"
    # nothing more to follow: the catch-up pass finds nothing
    assert env.ws.serving.follow_missed() == []


def test_an_app_restart_reattaches_to_the_running_deployment(trained, deployed, serving_root):
    env, _, _ = trained
    before = env.ws.serving.get(env.actor("alice"), "tiny-follow", live=True)
    fresh = Workspace(env.ws.settings)  # the app after a restart: nothing of the old Workspace is used
    fresh.serving.start_supervisor(catch_up_interval_s=0.2)
    try:
        time.sleep(1.5)  # supervisor passes and catch-up passes run; none restarts or rolls anything
        after = fresh.serving.get(env.actor("alice"), "tiny-follow", live=True)
        assert after.live == before.live and after.live.state == "running"
        assert fresh.serving.local.supervisor.advance() == {}
    finally:
        fresh.serving.close()
    assert len(fresh.serving.show(env.actor("alice"), "tiny-follow").rollouts) == 2


def test_manual_rollout_refusals_change_nothing(trained, deployed, serving_root):
    env, _, _ = trained
    rita, alice = env.actor("rita"), env.actor("alice")
    roll = env.ws.serving.rollout
    before = snapshot(env)
    with pytest.raises(Conflict, match="^model: deployment tiny-follow already serves tiny-follow:v2$"):
        roll(rita, "tiny-follow")  # newest of the followed config: already served
    with pytest.raises(NotFound, match="^model tiny-follow:v7 is not in the registry$"):
        roll(rita, "tiny-follow", "tiny-follow:v7")
    with pytest.raises(PermissionDenied):
        roll(alice, "tiny-follow", "tiny-follow:v1")
    with pytest.raises(NotFound, match="^deployment 'nope' does not exist$"):
        roll(rita, "nope", "tiny-follow:v1")
    assert snapshot(env) == before


def test_lineage_says_where_each_version_is_and_was_served(trained, deployed, capsys, monkeypatch):
    env, _, _ = trained
    alice = env.actor("alice")
    v1 = env.ws.lineage.of_model(alice, "tiny-follow:v1")
    v2 = env.ws.lineage.of_model(alice, "tiny-follow:v2")
    (was,) = v1.served
    (now,) = v2.served
    assert (was.deployment, was.target, was.trigger, was.actor) == ("tiny-follow", "local", "deploy", "rita")
    assert was.until is not None and was.until == now.since and now.until is None
    assert (now.trigger, now.actor, now.current) == ("follow", "lfops", True) and not was.current
    assert [d.name for d in v2.deployments] == ["tiny-follow"] and v1.deployments == []
    dataset = env.ws.lineage.from_dataset_version(alice, v1.dataset_version)
    assert {(d.name, d.model) for d in dataset.deployments} >= {
        ("tiny-follow", "tiny-follow:v1"),
        ("tiny-follow", "tiny-follow:v2"),
    }
    drawn = graph(v1)
    assert {"id": "deployment:tiny-follow", "kind": "deployment"}.items() <= next(
        n for n in drawn["nodes"] if n["kind"] == "deployment"
    ).items()
    assert {"from": "model:tiny-follow:v1", "to": "deployment:tiny-follow", "label": "was served"} in drawn["edges"]
    code, out, _ = cli(env, "alice", "lineage", "tiny-follow:v1", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0
    assert re.search(r"served by tiny-follow on local from \S+ \S+ until \S+ \S+ \(deployed by rita\)", out), out
    code, out, _ = cli(env, "alice", "lineage", "tiny-follow:v2", capsys=capsys, monkeypatch=monkeypatch)
    assert re.search(
        r"served by tiny-follow on local since \S+ \S+ \(rolled out by lfops, following its config\), endpoint http",
        out,
    ), out


# ---- the WebUI's Serving tab ------------------------------------------------------------------------------------


def test_the_serving_tab_lists_offers_by_role_and_shows_a_new_key_once(trained, deployed):
    import os

    from tests.webui_fixtures import build_in_process, plain, request_for

    env, _, _ = trained
    cwd = os.getcwd()
    try:
        web = build_in_process(env)
    finally:
        os.chdir(cwd)
    tab = web.app.serving
    rows = tab.on_list(False, request_for("alice"))
    assert [r[:4] for r in rows] == [["tiny-follow", "running", "running", "tiny-follow:v2"]]
    assert rows[0][5].startswith("http://127.0.0.1:") and rows[0][6] == CONFIG
    shown = plain(tab.on_show("tiny-follow", request_for("alice")))
    assert "tiny-follow — running" in shown and "follow 'tiny-follow:v1' → 'tiny-follow:v2' by lfops" in shown.replace(
        "`", "'"
    )
    # analysts see the deployments but are offered neither deploy nor the controls, and the backend refuses anyway
    gates = dict(zip([g[0] for g in web.ctx.gates], web.ctx.on_load(request_for("alice"))[1:], strict=True))
    assert gates[tab.deploy_box]["visible"] is False and gates[tab.manage_row]["visible"] is False
    gates = dict(zip([g[0] for g in web.ctx.gates], web.ctx.on_load(request_for("rita"))[1:], strict=True))
    assert gates[tab.deploy_box]["visible"] is True and gates[tab.manage_row]["visible"] is True
    before = snapshot(env)
    message, key, _ = tab.on_deploy("tiny-follow:v1", "local", "other", False, request_for("alice"))
    assert plain(message).startswith("**Not deployed:**\n- alice (analyst) may not deploy") and key == ""
    message, key = tab.on_create_key("tiny-follow", "x", request_for("alice"))
    assert "may not deploy" in plain(message) and key == ""
    message, key, _ = tab.on_deploy("tiny-follow:v1", "mars", "", False, request_for("rita"))
    assert "target: 'mars' is neither local nor a cluster profile" in plain(message)
    assert snapshot(env) == before
    message, key = tab.on_create_key("tiny-follow", "from the tab", request_for("rita"))
    assert re.fullmatch(r"lfk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key) and key.split("_")[1] in plain(message)
    client = openai.OpenAI(base_url=rows[0][5], api_key=key, max_retries=0, timeout=60)
    wait_for(lambda: _accepted(client), timeout=10, what="the key from the tab accepted")
    assert key not in plain(tab.on_show("tiny-follow", request_for("rita")))  # never shown again


# ---- undeploy ----------------------------------------------------------------------------------------------------


def test_undeploy_stops_everything_and_twice_is_refused(trained, deployed, serving_root, capsys, monkeypatch):
    env, _, _ = trained
    info, _ = deployed
    pids = [p.pid for p in processes_under(serving_root / "tiny-follow")]
    assert len(pids) >= 2  # model server and gateway
    code, out, _ = cli(env, "rita", "deployments", "undeploy", "tiny-follow", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "tiny-follow [stopped] tiny-follow:v2 on local" in out
    assert processes_under(serving_root / "tiny-follow") == [] and all(_gone(p) for p in pids)
    bind_socket("127.0.0.1", info.port).close()  # the port is free again
    with env.ws.store.session() as s:
        dep = s.scalar(select(Deployment).where(Deployment.name == "tiny-follow"))
        assert dep.status == "stopped" and dep.stopped_at is not None
        assert all(k.revoked_at is not None for k in s.scalars(select(ApiKey).where(ApiKey.deployment_id == dep.id)))
        last = s.scalars(select(Rollout).where(Rollout.deployment_id == dep.id).order_by(Rollout.id)).all()[-1]
        assert (last.trigger, last.to_version_id, last.actor) == ("undeploy", None, "rita")
    before = snapshot(env)
    code, _, err = cli(env, "rita", "deployments", "undeploy", "tiny-follow", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and re.match(r"error: deployment tiny-follow is not deployed \(undeployed since \S+ \S+\)$", err)
    assert snapshot(env) == before
    code, out, _ = cli(env, "alice", "deployments", "list", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and out == ""
    code, out, _ = cli(env, "alice", "deployments", "list", "--all", capsys=capsys, monkeypatch=monkeypatch)
    assert "tiny-follow [stopped]" in out
    # lineage keeps the history: v2 was served until the undeploy
    (was,) = env.ws.lineage.of_model(env.actor("alice"), "tiny-follow:v2").served
    assert was.until is not None and not was.current
