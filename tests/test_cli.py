"""The README walkthrough through the real `lfops` command: init, save, refused self-approval, approve, merge, log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

LFOPS = str(Path(sys.executable).parent / "lfops")


def run(
    ws: Path, *args: str, user: str | None = None, password: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "LFOPS_WORKSPACE": str(ws)}
    env.pop("LFOPS_DATABASE_URL", None)
    if user:
        env |= {"LFOPS_USER": user, "LFOPS_PASSWORD": password or ""}
    return subprocess.run([LFOPS, *args], capture_output=True, text=True, env=env, input=stdin, timeout=300)


def test_walkthrough(tmp_path):
    ws = tmp_path / "ws"
    init = run(ws, "init")
    assert init.returncode == 0, init.stderr
    passwords = dict(re.findall(r"^\s+(\w+)\s+\w+\s+(\S+)$", init.stdout, re.M))
    assert set(passwords) == {"admin", "alice", "rita"}
    assert run(ws, "init").stdout.strip().endswith("nothing changed")

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws / "origin.git"), str(clone)], check=True)
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
    subprocess.run(["git", "-C", str(clone), "pull", "-q"], check=True)
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
        assert (
            secret
            not in subprocess.run(
                ["git", "-C", str(ws / "origin.git"), "log", "--all", "-p"], capture_output=True, text=True
            ).stdout
        )


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
