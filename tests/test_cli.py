"""The README walkthrough through the real `lfops` command: init, save, refused self-approval, approve, merge, log."""

from __future__ import annotations

import argparse
import re
import subprocess
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

from backend.cli import build_parser, main
from backend.cli.main import COMMAND_GROUP, plugin_commands
from tests.helpers import ROOT, git, git_clone, printed_passwords, run_lfops
from webui import cli as webui_cli


def run(
    ws: Path, *args: str, user: str | None = None, password: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return run_lfops(*args, workspace=ws, user=user, password=password, stdin=stdin)


def test_walkthrough(tmp_path):
    ws = tmp_path / "ws"
    init = run(ws, "init")
    assert init.returncode == 0, init.stderr
    passwords = printed_passwords(init.stdout)
    assert set(passwords) == {"admin", "alice", "rita"}
    assert run(ws, "init").stdout.strip().endswith("nothing changed")

    clone = tmp_path / "clone"
    git_clone(ws / "origin.git", clone)
    example = (clone / "configs" / "example.yaml").read_text()
    (tmp_path / "new.yaml").write_text(example.replace("lora_rank: 8", "lora_rank: 16"))

    saved = run(
        ws,
        "save",
        str(tmp_path / "new.yaml"),
        "--name",
        "rank16",
        "-m",
        "Rank 16",
        user="alice",
        password=passwords["alice"],
    )
    assert saved.returncode == 0, saved.stderr
    cr = re.search(r"change request #(\d+)", saved.stdout).group(1)

    refused = run(ws, "review", "approve", cr, user="alice", password=passwords["alice"])
    assert refused.returncode == 2 and "may not approve" in refused.stderr
    wrong = run(ws, "review", "approve", cr, user="rita", password="not-her-password")
    assert wrong.returncode == 2 and "wrong user name or password" in wrong.stderr

    shown = run(ws, "review", "show", cr, user="rita", password=passwords["rita"])
    assert "lora_rank" in shown.stdout and "+lora_rank: 16" in shown.stdout
    assert run(ws, "review", "approve", cr, "-c", "ok", user="rita", password=passwords["rita"]).returncode == 0
    merged = run(ws, "review", "merge", cr, user="rita", password=passwords["rita"])
    assert merged.returncode == 0 and "[merged]" in merged.stdout

    log = run(ws, "log").stdout
    assert f"Merge change request #{cr}" in log and "Approved-by: rita <rita@lfops.local>" in log
    git(clone, "pull", "-q")
    assert "lora_rank: 16" in (clone / "configs" / "rank16.yaml").read_text()

    added = run(
        ws,
        "user",
        "add",
        "bob",
        "--role",
        "analyst",
        "--password-stdin",
        user="admin",
        password=passwords["admin"],
        stdin="bob-secret-1\n",
    )
    assert added.returncode == 0, added.stderr
    denied = run(ws, "user", "add", "eve", "--role", "admin", user="bob", password="bob-secret-1")
    assert denied.returncode == 2 and "may not manage users" in denied.stderr
    # no secret ever lands in the repository or the database in clear
    db = (ws / "lfops.db").read_bytes() + b"".join(p.read_bytes() for p in ws.glob("lfops.db*") if p.is_file())
    for secret in [*passwords.values(), "bob-secret-1"]:
        assert secret.encode() not in db
        assert secret not in git(ws / "origin.git", "log", "--all", "-p")


def test_validate_for_ci(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "data" / "dataset_info.json").write_text('{"d": {"file_name": "d.json"}}')
    (repo / "data" / "d.json").write_text("[]")
    good = (
        "model_name_or_path: m\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: d\n"
        "template: default\nlearning_rate: 5e-5\n"
    )
    (repo / "configs" / "good.yaml").write_text(good)
    (repo / "configs" / "bad.yaml").write_text(good.replace("5e-5", '"5e-5"').replace("dataset: d", "dataset: x"))
    ok = run(tmp_path, "validate", str(repo / "configs" / "good.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run(tmp_path, "validate", str(repo / "configs" / "good.yaml"), str(repo / "configs" / "bad.yaml"))
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"{repo}/configs/bad.yaml: learning_rate: must be a number (got '5e-5')",
        f"{repo}/configs/bad.yaml: dataset: 'x' is not defined in data/dataset_info.json",
    ]


# ---- the parser: command groups, the WebUI's command as an entry point (import direction: test_architecture.py) --

# Every command and option `lfops --help` showed before the CLI became a package (new ones may be added).
COMMANDS_AND_OPTIONS = {
    "": ["--workspace", "--user"],
    "init": ["--no-demo-users"],
    "validate": ["paths", "--repo-root"],
    "save": ["file", "--name", "--message", "--branch"],
    "review list": ["--status", "--author"],
    "review show": ["id"],
    "review approve": ["id", "--comment"],
    "review request-changes": ["id", "--comment"],
    "review merge": ["id"],
    "review close": ["id"],
    "user add": ["name", "--role", "--email", "--password-stdin"],
    "config diff": ["old", "new"],
    "log": ["path", "--limit"],
    "webui": ["--host", "--port", "--no-auth"],
    "cluster profiles": [],
    "cluster preview": ["target", "--config", "--profile", "--gpus", "--nodes"],
    "launch": ["target", "--config", "--override", "--profile", "--gpus", "--nodes", "--wait", "--timeout"],
    "runs list": [
        "--status",
        "--commit",
        "--config",
        "--config-hash",
        "--dataset-version",
        "--submitted-by",
        "--change-request",
        "--limit",
    ],
    "runs show": ["id"],
    "runs cancel": ["id"],
    "runs logs": ["id", "--follow"],
    "runs wait": ["id", "--timeout"],
    "runs compare": ["ids"],
    "registry list": ["name"],
    "registry show": ["model"],
    "registry verify": ["model"],
    "registry export": ["model"],
    "registry push": ["model", "--repo"],
    "lineage": ["term"],
    "reproduce": ["model", "--override", "--wait", "--timeout"],
}
TOP_LEVEL_ORDER = [
    "init", "validate", "save", "review", "user", "config", "log", "webui",
    "cluster", "launch", "runs", "registry", "lineage", "reproduce",
]  # fmt: skip


def _commands(parser: argparse.ArgumentParser, path: str = "") -> dict[str, list[str]]:
    found = {path: []}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _commands(sub, f"{path} {name}".strip())
        elif not isinstance(action, argparse._HelpAction):
            found[path].append(action.option_strings[-1] if action.option_strings else action.dest)
    return found


def test_every_command_and_option_is_still_there_in_the_same_order():
    parser = build_parser(plugins=[webui_cli.register])
    commands = _commands(parser)
    for command, options in COMMANDS_AND_OPTIONS.items():
        assert command in commands, f"lfops {command} is gone"
        assert [o for o in commands[command] if o in options] == options, command
    listed = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert [name for name in listed if name in TOP_LEVEL_ORDER] == TOP_LEVEL_ORDER


def test_the_webui_registers_a_working_webui_command(tmp_path, capsys):
    """`webui.cli.register` adds `lfops webui`, and the command reaches the WebUI's server: it refuses to serve a
    network address without sign-in before anything starts."""
    args = build_parser(plugins=[webui_cli.register]).parse_args(["webui", "--port", "7999"])
    assert args.func is webui_cli.cmd_webui and (args.host, args.port, args.no_auth) == ("127.0.0.1", 7999, False)
    code = main(["--workspace", str(tmp_path / "ws"), "webui", "--host", "10.1.2.3", "--no-auth"], [webui_cli.register])
    assert code == 2
    assert "error: host: 10.1.2.3 is reachable from other machines" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()  # refused before the workspace was created


def test_pyproject_declares_the_webui_command_as_an_entry_point():
    """What `pip install` writes into the package metadata resolves to the WebUI's `register`."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][COMMAND_GROUP]
    found = [EntryPoint(name, value, COMMAND_GROUP) for name, value in declared.items()]
    assert plugin_commands(found) == [webui_cli.register]
    assert "webui" not in _commands(build_parser(plugins=[]))  # it comes only from the entry point


def test_a_command_group_that_cannot_be_imported_is_left_out_with_a_warning(capsys):
    found = [
        EntryPoint("webui", "webui.cli:register", COMMAND_GROUP),
        EntryPoint("broken", "lfops_no_such_module:register", COMMAND_GROUP),
    ]
    assert plugin_commands(found) == [webui_cli.register]
    assert "warning: command broken (lfops_no_such_module:register) not available" in capsys.readouterr().err
