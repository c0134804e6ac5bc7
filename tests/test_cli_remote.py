"""The CLI through a remote lfops (LFOPS_URL + LFOPS_TOKEN) prints what it prints on the database."""

from __future__ import annotations

import pytest

from backend.cli import main as lfops
from tests.runs_fixtures import approved_merge, kill_leftover_runs, saved_unapproved
from tests.webui_fixtures import start_webui

COMMANDS = [
    ["review", "list"],
    ["review", "list", "--status", "merged"],
    ["review", "list", "--limit", "1"],
    ["review", "list", "--limit", "1", "--offset", "1"],
    ["review", "show", "1"],
    ["review", "show", "2"],
    ["review", "show", "999"],
    ["runs", "list"],
    ["runs", "list", "--status", "cancelled", "--config", "remote-a"],
    ["runs", "show", "1"],
    ["runs", "show", "42"],
]


@pytest.fixture
def remote(env, tmp_path):
    cr, _commit = approved_merge(env, "remote-a")
    saved_unapproved(env, "remote-b")
    alice = env.actor("alice")
    try:
        run = env.ws.runs.launch(alice, cr)
        env.ws.runs.cancel(alice, run.id)
    except BaseException:
        kill_leftover_runs(env.ws)
        raise
    tokens = {name: env.ws.tokens.create(env.actor(name), "cli", scope="write").token for name in ("alice", "rita")}
    server = start_webui(env.ws.settings.workspace, tmp_path / "webui.log")
    try:
        yield env, server.url.rstrip("/"), tokens
    finally:
        server.stop()


def on_database(env, args, capsys, monkeypatch, user="alice"):
    monkeypatch.delenv("LFOPS_URL", raising=False)
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords[user])
    code = lfops(["--workspace", str(env.ws.settings.workspace), "--user", user, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def through_api(url, token, args, capsys, monkeypatch):
    monkeypatch.setenv("LFOPS_URL", url)
    monkeypatch.setenv("LFOPS_TOKEN", token)
    monkeypatch.delenv("LFOPS_PASSWORD", raising=False)
    code = lfops(args)  # no --workspace, no --user: the token says who
    out = capsys.readouterr()
    return code, out.out, out.err


def test_review_and_runs_commands_print_the_same_through_the_api(remote, capsys, monkeypatch):
    env, url, tokens = remote
    for args in COMMANDS:
        local = on_database(env, args, capsys, monkeypatch)
        far = through_api(url, tokens["alice"], args, capsys, monkeypatch)
        assert far == local, args
    assert "(more: --offset 1)" in on_database(env, ["review", "list", "--limit", "1"], capsys, monkeypatch)[2]
    assert "run #1 [cancelled]" in on_database(env, ["runs", "show", "1"], capsys, monkeypatch)[1]

    # decisions go through the same policy, with the same words
    refused = through_api(url, tokens["alice"], ["review", "approve", "2"], capsys, monkeypatch)
    assert refused == on_database(env, ["review", "approve", "2"], capsys, monkeypatch)
    assert refused[0] == 2 and refused[2] == "error: alice (analyst) may not approve or request changes\n"
    code, out, _ = through_api(url, tokens["rita"], ["review", "approve", "2", "-c", "fine"], capsys, monkeypatch)
    assert code == 0 and out.startswith("#2 [approved]") and "approved by rita" in out


def test_the_remote_needs_a_token_and_database_commands_refuse_to_run_against_it(env, capsys, monkeypatch):
    monkeypatch.setenv("LFOPS_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LFOPS_TOKEN", raising=False)
    assert lfops(["review", "list"]) == 2
    assert "error: LFOPS_TOKEN: set it to an API token" in capsys.readouterr().err
    monkeypatch.setenv("LFOPS_TOKEN", "lfops_000000000000_x")
    assert lfops(["runs", "list"]) == 2
    assert capsys.readouterr().err == "error: LFOPS_URL: http://127.0.0.1:9 did not answer (ConnectError)\n"
    assert lfops(["--workspace", str(env.ws.settings.workspace), "--user", "alice", "runs", "cancel", "1"]) == 2
    assert "error: LFOPS_URL: `lfops runs` works on the database only; unset LFOPS_URL" in capsys.readouterr().err


def test_deployments_list_and_show_print_the_same_through_the_api(env, tmp_path, capsys, monkeypatch):
    """The rows a deployed (and an undeployed) version leave, with a rollout and keys: `lfops deployments list | show`
    through the API print what they print on the database (serving itself: tests/test_api_serving.py)."""
    from sqlalchemy import select

    from backend.store.models import ApiKey, Deployment, Rollout, utcnow
    from tests.test_monitoring_drift import _deployment

    version = _deployment(env.ws, env.ws.repo.sync_main())
    _deployment(env.ws, env.ws.repo.sync_main(), config_path="configs/old.yaml", name="old")
    with env.ws.store.session() as s:
        demo = s.scalar(select(Deployment).where(Deployment.name == "demo"))
        demo.endpoint, demo.created_by, demo.follows_config = "http://127.0.0.1:9/v1", "rita", "configs/example.yaml"
        now = utcnow()
        s.add(Rollout(deployment_id=demo.id, to_version_id=version, trigger="deploy", actor="rita", status="succeeded",
                      switch_s=1.5, started_at=now, finished_at=now))  # fmt: skip
        s.add(ApiKey(deployment_id=demo.id, key_id="0a1b2c3d", sha256="0" * 64, label="app", created_by="rita"))
        old = s.scalar(select(Deployment).where(Deployment.name == "old"))
        old.status, old.stopped_at, old.reason = "stopped", now, "undeployed by rita"
    token = env.ws.tokens.create(env.actor("alice"), "cli", scope="read").token
    server = start_webui(env.ws.settings.workspace, tmp_path / "webui.log")
    try:
        url = server.url.rstrip("/")
        for args in (
            ["deployments", "list"],
            ["deployments", "list", "--all"],
            ["deployments", "list", "--live"],
            ["deployments", "show", "demo"],
            ["deployments", "show", "old"],
            ["deployments", "show", "nosuch"],
        ):
            local = on_database(env, args, capsys, monkeypatch)
            assert through_api(url, token, args, capsys, monkeypatch) == local, args
        shown = on_database(env, ["deployments", "show", "demo"], capsys, monkeypatch)[1]
        assert "demo [running] tiny-sft:v1 on local  follows configs/example.yaml" in shown
        assert (
            "deploy   - -> tiny-sft:v1 by rita [succeeded] in 1.5 s" in shown and "key 0a1b2c3d  active  app" in shown
        )
        refused = through_api(url, token, ["deployments", "undeploy", "demo"], capsys, monkeypatch)
        assert refused[0] == 2 and "works on the database only" in refused[2]
    finally:
        server.stop()
