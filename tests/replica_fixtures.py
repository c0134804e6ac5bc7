"""Two (or more) `lfops webui` processes on one workspace and one PostgreSQL database, as two replicas behind one
Service run: which one leads the run monitor, killing it, and signing in on one to read through the other. Shared by
tests/test_failover.py and bench/failover.py."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.webui_fixtures import Server, start_webui

# trainer_log.jsonl fields that are bookkeeping, not metrics (as backend.runs.ingest reads them)
_NOT_METRICS = {"current_steps", "total_steps", "elapsed_time", "remaining_time"}
# A run long enough to kill its leader mid-way: one optimiser step per sample, a loss row per step.
LONG = {"max_samples": 48, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "logging_steps": 1}


@dataclass
class Replica:
    name: str
    server: Server

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def leader(self) -> dict:
        """/readyz's `leader` part: this replica's role and who holds the lease."""
        return httpx.get(self.url + "/readyz", timeout=10).json()["leader"]

    def kill(self) -> None:
        """SIGKILL the app process only (its training runs live in sessions of their own)."""
        os.kill(self.pid, signal.SIGKILL)
        self.server.proc.wait(30)


def start_replica(workspace: Path, database_url: str, name: str, log_dir: Path) -> Replica:
    server = start_webui(workspace, log_dir / f"{name}.log", env={"LFOPS_DATABASE_URL": database_url})
    return Replica(name, server)


def leader_of(replicas: list[Replica]) -> Replica | None:
    """The live replica whose /readyz says it leads (None while nobody does)."""
    for replica in replicas:
        if replica.server.proc.poll() is None:
            try:
                if replica.leader()["role"] == "leader":
                    return replica
            except (httpx.HTTPError, KeyError, ValueError):
                continue
    return None


def sign_in(replica: Replica, name: str, password: str) -> dict[str, str]:
    """Sign in through a replica's WebUI as a browser does; the session cookie it sets (plain HTTP: the unsecure
    variant is the one a browser sends back)."""
    response = httpx.post(replica.url + "/login", data={"username": name, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return {k: v for k, v in response.cookies.items() if k.startswith("access-token-unsecure-")}


def whoami(replica: Replica, cookies: dict[str, str]) -> int | str:
    """The user the session cookie stands for on this replica (/api/v1/me), or the HTTP status when refused."""
    response = httpx.get(replica.url + "/api/v1/me", cookies=cookies, timeout=30)
    return response.json()["name"] if response.status_code == 200 else response.status_code


def logged_metrics(out: Path) -> set[tuple[int, str]]:
    """Every (step, key) of a metric LLaMA-Factory logged in trainer_log.jsonl: what the store must hold, once."""
    found = set()
    for line in (out / "trainer_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record.get("current_steps")
        for key, value in record.items():
            if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(step, int) and math.isfinite(value):
                found.add((step, key))
    return found
