"""A full disk, for real, on SQLite and PostgreSQL: the mirror (or origin) is put on a tmpfs filled to the last
byte, in a private mount namespace (`unshare --user --map-root-user --mount`: no root needed where user namespaces
are allowed; skipped where they are not). Save and merge must fail with one line naming the cause and leave origin's
refs and the database as they were."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.snapshots import snapshot

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the namespace: fills a folder's filesystem, runs one operation, reports its error in one JSON line.
CHILD = r"""
import json, os, subprocess, sys, tempfile
from backend.errors import LfopsError
from backend.settings import Settings
from backend.workspace import Workspace

def full(where):
    copy = tempfile.mkdtemp()
    subprocess.run(["cp", "-a", where + "/.", copy], check=True)
    size = int(subprocess.run(["du", "-sk", copy], capture_output=True, text=True, check=True).stdout.split()[0])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + 256}k", "tmpfs", where], check=True)
    subprocess.run(["cp", "-a", copy + "/.", where], check=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={where}/filler", "bs=4k"], capture_output=True)

def refs(repo):
    return subprocess.run(["git", "-C", repo, "for-each-ref"], capture_output=True, text=True).stdout

job = json.loads(sys.argv[1])
ws = Workspace(Settings.from_env())
actor = ws.login(job["user"], job["password"])
main = ws.repo.sync_main()
origin = ws.settings.repo_url
full(str(ws.settings.mirror_dir) if job["full"] == "mirror" else origin)
before = refs(origin)
try:
    if job["op"] == "save":
        ws.changes.save(actor, job["yaml"].encode(), "fulldisk", "msg")
    else:
        ws.changes.merge(actor, job["id"])
    error = None
except LfopsError as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "origin_unchanged": refs(origin) == before}))
"""


def namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(), reason="no user and mount namespaces here (unshare -rm)")


def full_disk(env, job: dict) -> dict:
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LFOPS_WORKSPACE": str(env.ws.settings.workspace),
        "LFOPS_DATABASE_URL": env.ws.settings.database_url,
    }
    proc = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", CHILD, json.dumps(job)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a traceback is a failure
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("mirror", "GitFailure: cannot write the commit into the mirror "),
        ("origin", "GitFailure: push of 'alice/fulldisk' to origin was rejected: "),
    ],
)
def test_save_on_a_full_disk_fails_in_one_line_and_leaves_nothing(any_db_env, where, expected):
    env = any_db_env
    before = snapshot(env)
    yaml = env.example_yaml().replace(b"seed: 42", b"seed: 9").decode()
    result = full_disk(
        env, {"op": "save", "full": where, "user": "alice", "password": env.passwords["alice"], "yaml": yaml}
    )
    assert result["error"].startswith(expected) and "\n" not in result["error"], result
    assert result["error"].endswith("No space left on device")
    assert result["origin_unchanged"]
    assert snapshot(env) == before


def test_merge_on_a_full_disk_fails_in_one_line_and_leaves_nothing(any_db_env):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    saved = env.ws.changes.save(alice, env.example_yaml().replace(b"seed: 42", b"seed: 10"), "tomerge", "msg")
    env.ws.changes.approve(rita, saved.change_request)
    before = snapshot(env)
    job = {
        "op": "merge",
        "full": "mirror",
        "user": "rita",
        "password": env.passwords["rita"],
        "id": saved.change_request,
    }
    result = full_disk(env, job)
    assert result["error"].startswith("GitFailure: git ") and "\n" not in result["error"], result
    assert result["error"].endswith("No space left on device")
    assert result["origin_unchanged"]
    assert snapshot(env) == before
