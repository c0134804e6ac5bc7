"""What every runner shares: resource checks (one place for the CLI, the WebUI and the manifests), the lazy
`kubernetes` import, `git archive` of a commit, the llamafactory-cli child process with a scrubbed environment, and
the `preview` / `close` verbs. No training: a stand-in llamafactory-cli prints what it was given."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from backend.cli import main as lfops
from backend.errors import GitFailure, TimedOut, ValidationFailed
from backend.gitstore import GitStore
from backend.runners import lfprocess
from backend.runners.base import Resources, RunSpec, RunState
from backend.runners.kubernetes import KubernetesRunner
from backend.runners.kubernetes import manifests as km
from backend.runners.local import LocalRunner
from backend.settings import ClusterProfile
from tests.runs_fixtures import approved_merge, small_config
from tests.snapshots import snapshot

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLI_FLAGS = {"gpus_per_node": "--gpus", "nodes": "--nodes", "profile": "--profile"}

# A stand-in for llamafactory-cli: prints its arguments, working directory and environment, then exits.
FAKE_CLI = """#!/bin/sh
echo "args=$*"
echo "cwd=$(pwd)"
env | sort
if [ -n "$FAKE_SLEEP" ]; then sleep "$FAKE_SLEEP"; fi
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def fake_cli(tmp_path) -> Path:
    path = tmp_path / "bin" / "llamafactory-cli"
    path.parent.mkdir()
    path.write_text(FAKE_CLI)
    path.chmod(0o755)
    return path


@pytest.fixture
def secrets(monkeypatch) -> dict[str, str]:
    """The app's own credentials in its environment, and one that belongs to the training."""
    values = {
        "LFOPS_DATABASE_URL": "postgresql://lfops:db-secret@db/lfops",
        "LFOPS_PASSWORD": "hunter2-secret",
        "PGPASSWORD": "pg-secret",
        "KUBECONFIG": "/etc/app/kubeconfig-secret",
        "HF_TOKEN": "hf_training_token",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


# ---- the lazy kubernetes import -------------------------------------------------------------------------------------


def test_importing_runs_the_cli_and_the_kubernetes_runner_does_not_import_kubernetes():
    code = """
import sys
import backend.cli, backend.runs, backend.workspace, backend.lineage, backend.runners.kubernetes
from backend.runners.kubernetes import KubernetesRunner
KubernetesRunner(profiles={})
assert "kubernetes" not in sys.modules, sorted(m for m in sys.modules if m.startswith("kubernetes"))
from backend.runners.base import Resources
Resources.from_user(memory="64Gi")  # a quantity check is the first use: now the adaptor imports it
assert "kubernetes.utils" in sys.modules
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# ---- resources ------------------------------------------------------------------------------------------------------


def test_user_values_are_converted_once():
    assert Resources.from_user(gpus_per_node="8", nodes="2", profile="a100") == Resources(8, 2, profile="a100")
    assert Resources.from_user(gpus_per_node=2.0, nodes=1.0, profile="a100") == Resources(2, 1, profile="a100")
    assert Resources.from_user(profile="a100").gpus_per_node == 1  # a cluster run gets one GPU unless asked
    assert Resources.from_user() == Resources()  # on this machine: none
    assert Resources.from_user(cpu=" 500m ", memory="64Gi", profile="p") == Resources(1, 1, "500m", "64Gi", "p")


@pytest.mark.parametrize(
    ("values", "names", "expected"),
    [
        ({"gpus_per_node": -1, "profile": "p"}, CLI_FLAGS, ["--gpus: must be 0 or more"]),
        ({"nodes": 0, "profile": "p"}, CLI_FLAGS, ["--nodes: must be at least 1"]),
        ({"nodes": 2}, CLI_FLAGS, ["--nodes: more than 1 needs a cluster profile (--profile)"]),
        ({"gpus_per_node": "eight"}, CLI_FLAGS, ["--gpus: 'eight' is not a whole number"]),
        ({"gpus_per_node": 1.5, "profile": "p"}, None, ["resources.gpus_per_node: 1.5 is not a whole number"]),
        ({"nodes": True, "profile": "p"}, None, ["resources.nodes: True is not a whole number"]),
        (
            {"memory": "abc", "profile": "p"},
            None,
            ["resources.memory: 'abc' is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)"],
        ),
        ({"memory": "0", "profile": "p"}, None, ["resources.memory: '0' must be more than 0"]),
        ({"cpu": "-1", "profile": "p"}, None, ["resources.cpu: '-1' must be more than 0"]),
        (
            {"cpu": "NaN", "profile": "p"},
            None,
            ["resources.cpu: 'NaN' is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)"],
        ),
        (
            {"gpus_per_node": "eight", "memory": "abc", "profile": "p"},
            None,
            [
                "resources.gpus_per_node: 'eight' is not a whole number",
                "resources.memory: 'abc' is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)",
            ],
        ),
        (
            {"gpus_per_node": -2, "nodes": 0, "profile": "p"},
            {"gpus_per_node": "GPUs per node", "nodes": "Nodes"},
            ["GPUs per node: must be 0 or more", "Nodes: must be at least 1"],
        ),
    ],
)
def test_bad_resources_name_the_field_as_the_user_sees_it(values, names, expected):
    with pytest.raises(ValidationFailed) as err:
        Resources.from_user(**values, names=names)
    assert [str(p) for p in err.value.problems] == expected
    assert "\n" not in str(err.value)


def test_manifests_refuse_what_from_user_refuses():
    spec = RunSpec(1, "r", COMMIT, "configs/x.yaml", "stage: sft\n", Resources(cpu="0", memory="lots", profile="p"))
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(spec, ClusterProfile(name="p", namespace="ml", image="img"))
    assert [str(p) for p in err.value.problems] == [
        "resources.cpu: '0' must be more than 0",
        "resources.memory: 'lots' is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "-1"], "error: --gpus: must be 0 or more"),
        (["--nodes", "0"], "error: --nodes: must be at least 1"),
        (["--nodes", "2"], "error: --nodes: more than 1 needs a cluster profile (--profile)"),
    ],
)
def test_cli_launch_with_bad_resources_creates_nothing(env, capsys, monkeypatch, flags, message):
    cr, _ = approved_merge(env, "bad-resources")
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    before = snapshot(env)
    code = lfops(["--workspace", str(env.ws.settings.workspace), "--user", "alice", "launch", str(cr), *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert snapshot(env) == before
    assert not env.ws.settings.runs_dir.exists() or not any(env.ws.settings.runs_dir.iterdir())


def test_webui_launch_form_names_its_own_fields():
    from webui.train_actions import _form_problems, _resources

    assert _resources("", -5, 0) == Resources()  # on this machine the fields do not apply
    assert _resources("gpu", 2.0, 3.0) == Resources(gpus_per_node=2, nodes=3, profile="gpu")
    with pytest.raises(ValidationFailed) as err:
        _resources("gpu", -1, 0)
    assert _form_problems(err.value) == ["GPUs per node must be 0 or more", "Nodes must be at least 1"]


# ---- git archive of a commit ----------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit_tree(tmp_path: Path, files: dict[str, str], links: dict[str, str]) -> tuple[GitStore, str]:
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    for path, target in links.items():
        (work / path).symlink_to(target)
    _git(work, "add", "-A")
    _git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    store = GitStore(tmp_path / "mirror.git", str(work))
    store.ensure_mirror()
    store.fetch()
    return store, _git(work, "rev-parse", "HEAD")


def test_extract_writes_a_commit_or_one_folder_of_it(tmp_path):
    files = {"configs/a.yaml": "a: 1\n", "data/x.json": "[]\n", "data/sub/y.json": "{}\n"}
    store, commit = _commit_tree(tmp_path, files, {"data/latest.json": "x.json"})
    whole = tmp_path / "whole"
    store.extract(commit, whole)
    assert (whole / "configs/a.yaml").read_text() == "a: 1\n"
    assert (whole / "data/latest.json").is_symlink() and (whole / "data/latest.json").read_text() == "[]\n"
    folder = tmp_path / "folder"
    store.extract(commit, folder, "data", regular_files_only=True)
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())
    assert found == ["sub/y.json", "x.json"]  # relative to data/, without the link


def test_extract_refuses_links_out_of_the_destination_and_unknown_commits(tmp_path):
    store, commit = _commit_tree(tmp_path, {"a.txt": "a\n"}, {"evil": "/etc/passwd"})
    with pytest.raises(GitFailure, match=f"git archive {commit}: .*evil"):
        store.extract(commit, tmp_path / "out")
    with pytest.raises(GitFailure, match="git archive 0{40} failed"):
        store.extract("0" * 40, tmp_path / "out2")


# ---- the llamafactory-cli child process -----------------------------------------------------------------------------


def _env_lines(log: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)


def test_child_process_gets_its_own_cwd_and_no_app_secrets(tmp_path, fake_cli, secrets):
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "export.log"
    code = lfprocess.run("export", work / "x.yaml", cwd=work, log_path=log, timeout_s=30, cli=fake_cli)
    seen = _env_lines(log)
    assert code == 0 and seen["args"] == f"export {work / 'x.yaml'}" and seen["cwd"] == str(work)
    for key in ("LFOPS_DATABASE_URL", "LFOPS_PASSWORD", "PGPASSWORD", "KUBECONFIG"):
        assert key not in seen
    assert not any(value in log.read_text() for key, value in secrets.items() if key != "HF_TOKEN")
    assert seen["HF_TOKEN"] == secrets["HF_TOKEN"]  # the training's own credential passes, as it does to a pod
    assert seen["PATH"].startswith(f"{fake_cli.parent}{os.pathsep}")
    assert os.getcwd() != str(work)


def test_child_process_past_its_time_is_killed(tmp_path, fake_cli, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "30")
    start = time.monotonic()
    with pytest.raises(TimedOut, match="llamafactory-cli export took longer than 0.5 s"):
        lfprocess.run("export", tmp_path / "x.yaml", cwd=tmp_path, log_path=tmp_path / "l", timeout_s=0.5, cli=fake_cli)
    assert time.monotonic() - start < 10


def test_local_runner_trains_through_the_same_child_process(env, tmp_path, fake_cli, secrets):
    """The local runner's detached training gets the scrubbed environment plus its run markers, in its checkout."""
    commit = env.ws.repo.sync_main()
    runner = LocalRunner(tmp_path / "runs", env.ws.repo, cli=fake_cli)
    spec = RunSpec(7, env.ws.repo.remote_url, commit, "configs/example.yaml", small_config(env).training_yaml())
    external_id = runner.submit(spec)
    assert runner.wait(external_id, timeout=30, poll=0.05).state == RunState.SUCCEEDED
    run_dir = runner.run_dir(external_id)
    seen = _env_lines(run_dir / "train.log")
    assert seen["cwd"] == str(run_dir / "checkout") and (run_dir / "checkout/configs/example.yaml").exists()
    assert seen["args"] == f"train {run_dir / 'train.yaml'}"
    assert seen["LFOPS_RUN_ID"] == "7" and seen["LFOPS_RUN_DIR"] == str(run_dir)
    assert "LFOPS_DATABASE_URL" not in seen and "PGPASSWORD" not in seen and seen["HF_TOKEN"] == secrets["HF_TOKEN"]
    runner.close()


# ---- preview and close ----------------------------------------------------------------------------------------------


def test_local_preview_shows_the_process_without_secret_values_and_starts_nothing(env, tmp_path, fake_cli, secrets):
    runner = LocalRunner(tmp_path / "runs", env.ws.repo, cli=fake_cli)
    spec = RunSpec(3, env.ws.repo.remote_url, COMMIT, "configs/example.yaml", small_config(env).training_yaml())
    text = runner.preview(spec)
    process, train = yaml.safe_load_all(text)
    run_dir = tmp_path / "runs" / "run-000003"
    assert process["command"] == [str(fake_cli), "train", str(run_dir / "train.yaml")]
    assert process["cwd"] == str(run_dir / "checkout")
    assert process["env"]["set"]["LFOPS_RUN_DIR"] == str(run_dir)
    assert {"LFOPS_DATABASE_URL", "LFOPS_PASSWORD", "PGPASSWORD", "KUBECONFIG"} <= set(process["env"]["removed"])
    assert "HF_TOKEN" in process["env"]["inherited"]
    assert not any(value in text for value in secrets.values())  # names only, never values
    assert train["output_dir"] == str(run_dir / "output") and "lfops" not in train
    assert not (tmp_path / "runs").exists()


def test_runs_preview_asks_the_runner_a_launch_would_use(env):
    cr, merge = approved_merge(env, "preview-local")
    process, train = yaml.safe_load_all(env.ws.runs.preview(cr))  # no profile: the default (local) runner
    assert process["runner"] == "local" and f"git archive of {merge}" in process["checkout"]
    assert train["max_samples"] == small_config(env).args["max_samples"]
    with pytest.raises(ValidationFailed, match="no cluster profiles configured"):
        env.ws.runs.preview(cr, runner="kubernetes")


def test_close_releases_threads_and_handles_but_runs_go_on(env, tmp_path, fake_cli, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "1")
    runner = LocalRunner(tmp_path / "runs", env.ws.repo, cli=fake_cli)
    spec = RunSpec(9, env.ws.repo.remote_url, env.ws.repo.sync_main(), "c.yaml", small_config(env).training_yaml())
    external_id = runner.submit(spec)
    runner.close()
    assert runner.status(external_id).state == RunState.RUNNING  # the run does not belong to the app
    assert runner.wait(external_id, timeout=30, poll=0.05).state == RunState.SUCCEEDED
    KubernetesRunner(profiles={}).close()  # nothing made yet: nothing to release
    monitor = env.ws.runs.start_monitor(interval=0.05)
    env.ws.runs.close()
    assert not monitor.alive
