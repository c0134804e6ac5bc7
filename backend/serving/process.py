"""Long-running child processes (model servers, gateways) that outlive the app and are found again after a restart.

Each process has a name inside a state directory:

    <name>.json   pid and psutil create time of the process (its session and group leader), command, port, restarts
    <name>.log    its stdout and stderr

It runs in its own session (`start_new_session=True`), so it survives the app and `killpg` reaches everything it
started. A pid alone is not an identity (the OS reuses pids): a process is ours only when pid *and* create time
match the record, exactly as the local runner re-attaches to training processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from backend.errors import LfopsError

CREATE_TIME_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    create_time: float
    command: list[str]
    port: int = 0
    started_at: str = ""
    restarts: int = 0  # how many times the supervisor started it again after it ended on its own
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        """The recorded process still runs (same pid, same start time, not a zombie)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_TOLERANCE_S:
                return False
            return proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ManagedProcess:
    """One named, detached process in `state_dir`; safe to use from several threads."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.state_dir = Path(state_dir)
        self.name = name
        self._child: subprocess.Popen | None = None  # when this app started it: reaped, so no zombie lingers
        self._exit_code: int | None = None  # of the last child this object reaped
        self._lock = threading.Lock()

    @property
    def record_path(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def record(self) -> ProcessRecord | None:
        try:
            doc = json.loads(self.record_path.read_text())
            return ProcessRecord(**doc)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LfopsError(f"{self.record_path}: unreadable process record ({exc})") from None

    def _reap(self) -> None:
        with self._lock:
            if self._child is not None and self._child.poll() is not None:
                self._exit_code = self._child.returncode
                self._child = None

    def alive(self) -> bool:
        self._reap()
        record = self.record()
        return record is not None and record.alive()

    def start(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        port: int = 0,
        pass_fds: Sequence[int] = (),
        restarts: int = 0,
        extra: dict | None = None,
    ) -> ProcessRecord:
        """Start the process detached and record it; the record is written before this returns."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {datetime.now(UTC).isoformat()} start: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the app; killpg reaches all it starts
                close_fds=True,
                pass_fds=tuple(pass_fds),
            )
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:  # ended at once: the log says why
            create_time = 0.0
        record = ProcessRecord(
            pid=proc.pid,
            create_time=create_time,
            command=list(command),
            port=port,
            started_at=datetime.now(UTC).isoformat(),
            restarts=restarts,
            extra=extra or {},
        )
        _write_atomic(self.record_path, json.dumps(asdict(record), indent=1))
        with self._lock:
            self._child, self._exit_code = proc, None
        return record

    def exit_code(self) -> int | None:
        """The exit code when this app started the process and it has ended (None otherwise)."""
        self._reap()
        return self._exit_code

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after `grace_s`; then forget the record."""
        record = self.record()
        if record is not None and record.alive():
            members = _group(record.pid)
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                live = [p for p in members if _live(p)]
                if not live:
                    break
                try:
                    os.killpg(record.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                for proc in live:  # members that left the group (none expected, but never leave one behind)
                    try:
                        proc.send_signal(sig)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline and any(_live(p) for p in members):
                    self._reap()
                    time.sleep(0.05)
        self._reap()
        with self._lock:
            if self._child is not None:
                try:
                    self._exit_code = self._child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                self._child = None
        self.record_path.unlink(missing_ok=True)

    def log_tail(self, max_bytes: int = 65536) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, self.log_path.stat().st_size - max_bytes))
                return [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        except FileNotFoundError:
            return []


def _group(leader: int) -> list[psutil.Process]:
    """The leader, its descendants and every process in its process group."""
    found: dict[int, psutil.Process] = {}
    try:
        proc = psutil.Process(leader)
        found[proc.pid] = proc
        found.update({p.pid: p for p in proc.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == leader:
                found.setdefault(proc.pid, proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return list(found.values())


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Backoff:
    """Restart delays 1, 2, 4 ... max_s seconds; back to the start once a process stayed up for `stable_s`."""

    base_s: float = 1.0
    max_s: float = 60.0
    stable_s: float = 60.0
    failures: int = 0
    next_at: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float, up_for_s: float) -> float:
        """Record an end after `up_for_s` seconds up; returns the delay before the next start."""
        self.failures = 1 if up_for_s >= self.stable_s else self.failures + 1
        delay = min(self.max_s, self.base_s * 2 ** (self.failures - 1))
        self.next_at = now + delay
        return delay
