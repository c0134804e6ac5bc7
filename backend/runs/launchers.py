"""Which process launched a run, recorded with the launch (in its `run.launch` audit event), so that a run that never
got its runner id can be told apart later: its launch is still under way, or it died with the process.

A process is known for good by host, pid and start time (a pid alone is reused by the OS).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.runners.lfprocess import ProcessId
from backend.store.models import AuditEvent


@dataclass(frozen=True)
class Launcher:
    host: str
    process: ProcessId

    def under_way(self) -> bool:
        """The launching process ran on this host and still lives: its launch may still record the runner id."""
        return self.host == socket.gethostname() and self.process.alive()

    def ended(self) -> bool:
        """True only when it is known: the launching process ran on this host and is gone (on another host nobody
        here can tell, and the caller waits instead)."""
        return self.host == socket.gethostname() and not self.process.alive()

    def __str__(self) -> str:
        return f"process {self.process.pid} on {self.host}"


def this_process() -> dict[str, Any]:
    """The launching process as the audit event records it (not cached: a forked child is another process)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "create_time": psutil.Process().create_time()}


def launcher_of(s: Session, run_id: int) -> Launcher | None:
    """Who launched run `run_id`, from its launch event; None for runs launched before lfops recorded it."""
    detail = s.scalar(
        select(AuditEvent.detail).where(AuditEvent.subject == f"run:{run_id}", AuditEvent.action == "run.launch")
    )
    found = (detail or {}).get("launcher") if isinstance(detail, dict) else None
    try:
        return Launcher(str(found["host"]), ProcessId(int(found["pid"]), float(found["create_time"])))
    except (TypeError, KeyError, ValueError):
        return None
