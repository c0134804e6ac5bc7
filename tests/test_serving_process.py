"""The small parts under local serving, with real processes and files: detached processes found again by pid +
create time and stopped with everything they started, restart back-off, the scrubbed environment, API keys, names."""

from __future__ import annotations

import dataclasses
import os
import sys

import psutil
import pytest

from backend.errors import LfopsError
from backend.runners.lfprocess import child_env
from backend.serving.keys import KeyRing, hash_key, key_id_of, new_api_key, read_keys_file, write_keys_file
from backend.serving.names import check_deployment_name, default_deployment_name
from backend.serving.process import Backoff, ManagedProcess
from tests.helpers import wait_for


def test_detached_process_is_recorded_found_again_and_stopped_with_its_children(tmp_path):
    proc = ManagedProcess(tmp_path, "sleeper")
    # a shell that starts a child of its own: stop must take both
    record = proc.start(["/bin/sh", "-c", "sleep 60 & sleep 60; wait"], dict(os.environ), cwd=tmp_path, port=1234)
    assert proc.alive() and record.pid != os.getpid() and record.port == 1234
    assert os.getsid(record.pid) == record.pid  # its own session: it outlives the app
    again = ManagedProcess(tmp_path, "sleeper")  # the app after a restart
    assert again.record() == record and again.alive()
    children = wait_for(lambda: psutil.Process(record.pid).children(recursive=True), timeout=10, what="the children")
    # the same pid with another start time is another process (pids are reused)
    assert not dataclasses.replace(record, create_time=record.create_time - 100).alive()
    again.stop(grace_s=2)
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children if psutil.pid_exists(c.pid))
    assert again.record() is None and not again.alive()
    proc.stop()  # stopping what is gone is a no-op


def test_a_process_that_ends_at_once_is_not_alive_and_says_why(tmp_path):
    proc = ManagedProcess(tmp_path, "crash")
    proc.start([sys.executable, "-c", "raise SystemExit('model file broken')"], dict(os.environ), cwd=tmp_path)
    proc._child.wait(10)
    assert not proc.alive() and proc.exit_code() == 1
    assert proc.log_tail()[-1] == "model file broken"
    record_path = proc.record_path
    record_path.write_text("{not json")
    with pytest.raises(LfopsError, match="unreadable process record"):
        proc.record()


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run():
    b = Backoff(base_s=1, max_s=8, stable_s=60)
    delays = [b.failed(now=100.0, up_for_s=2) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert not b.ready(105.0) and b.ready(108.0)
    assert b.failed(now=200.0, up_for_s=600) == 1  # it ran fine for 10 minutes: start over


def test_scrubbed_env_drops_app_settings_and_credentials_but_keeps_what_is_asked():
    base = {
        "LFOPS_DATABASE_URL": "postgresql://u:pw@db/lfops",
        "HF_TOKEN": "hf_x",
        "WANDB_API_KEY": "w",
        "AWS_SECRET_ACCESS_KEY": "a",
        "PGPASSWORD": "p",
        "API_KEY": "k",
        "HOME": "/home/u",
        "PATH": "/usr/bin",
        "TOKENIZERS_PARALLELISM": "false",
    }
    training = child_env(base=base)
    assert "LFOPS_DATABASE_URL" not in training and training["WANDB_API_KEY"] == "w"  # training keeps its credentials
    server = child_env({"API_KEY": "mine"}, drop_credentials=True, keep=("HF_TOKEN",), base=base)
    assert server["API_KEY"] == "mine" and server["HF_TOKEN"] == "hf_x" and server["HOME"] == "/home/u"
    for gone in ("LFOPS_DATABASE_URL", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        assert gone not in server
    assert server["PATH"].endswith("/usr/bin") and server["PYTHONUNBUFFERED"] == "1"
    assert server["TOKENIZERS_PARALLELISM"] == "false"  # "TOKEN" inside a longer word is not a credential


def test_api_keys_are_random_stored_as_hashes_and_matched_by_value(tmp_path):
    key, stored = new_api_key()
    other, stored_other = new_api_key()
    assert key.startswith("lfk_") and key_id_of(key) == stored.key_id and len(key) == 4 + 8 + 1 + 43
    assert stored.sha256 == hash_key(key) and key not in repr(stored)
    ring = KeyRing([stored, stored_other])
    assert ring.match(key) == stored.key_id and ring.match(other) == stored_other.key_id
    assert ring.match(key + "x") is None and ring.match("") is None and ring.match(stored.sha256) is None
    write_keys_file(tmp_path / "keys.json", [stored, stored_other])
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert read_keys_file(tmp_path / "keys.json") == [stored, stored_other]
    assert key not in (tmp_path / "keys.json").read_text()
    (tmp_path / "bad.json").write_text('{"keys": [{"id": "x", "sha256": "short"}]}')
    with pytest.raises(LfopsError, match="entry 0 of .* has no valid sha256"):
        read_keys_file(tmp_path / "bad.json")
    with pytest.raises(LfopsError, match="does not exist"):
        read_keys_file(tmp_path / "none.json")


def test_deployment_names():
    assert check_deployment_name("support-bot") == "support-bot"
    for bad in ("Support", "1bot", "bot-", "a" * 48, "", "bot_1"):
        with pytest.raises(LfopsError) as err:
            check_deployment_name(bad)
        assert err.value.field == "name"
    assert default_deployment_name("SFT_demo.v2") == "sft-demo-v2"
    assert default_deployment_name("7b") == "m-7b"
