"""What the crash scenarios share: a workspace to crash in, worker processes to kill, the invariants, the reconcile.

A worker is a process forked for one job from a warm fork server (lfops and LLaMA-Factory's checks imported,
nothing open): it opens the workspace, signs in, says "ready" and runs its operation. It is killed either at a
named step boundary (LFOPS_CRASH_AT: it `os._exit`s there, see backend.failpoints) or at a random moment by SIGKILL
to its whole process group (its git children die with it, as in a machine or container that goes away).

The invariants are checked here independently of the reconcile's own code, on origin itself and the database:
1. no branch on origin but main without a change request under review at that head;
2. no change request under review without its branch (at its head);
3. a change request's status equals what Git says (merged exactly when its head is on main, with its merge on main);
4. nothing half-made: no hidden `saving` row left over.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from backend import failpoints  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.workspace import Workspace  # noqa: E402

PG_URL_ENV = "LFOPS_CRASH_PG_URL"  # an admin URL: scenarios then run on a fresh PostgreSQL database
CRASHED = "crashed"  # died at its crash point
KILLED = "killed"  # SIGKILLed at a random moment
DONE = "done"  # finished before the kill came
FAILED = "failed"  # the operation raised (the line says what)


@dataclass
class Target:
    """A workspace the scenarios crash operations in, with the demo users' passwords."""

    ws: Workspace
    passwords: dict[str, str]

    def actor(self, name: str) -> Any:
        return self.ws.login(name, self.passwords[name])

    @property
    def origin(self) -> Path:
        return Path(self.ws.settings.repo_url)

    def settings_env(self) -> dict[str, str]:
        """The LFOPS_* variables that open this workspace (and its database) in another process."""
        settings = self.ws.settings
        return {
            "LFOPS_WORKSPACE": str(settings.workspace),
            "LFOPS_DATABASE_URL": settings.database_url,
            "LFOPS_REPO_URL": settings.repo_url,
            "LFOPS_MAIN_BRANCH": settings.main_branch,
        }

    def example_yaml(self, seed: int) -> bytes:
        """The repository's example config with its own `seed:`, so each save is a distinct change."""
        text = self.ws.repo.read(self.ws.repo.sync_main(), "configs/example.yaml").decode()
        return text.replace("seed: 42", f"seed: {seed}").encode()


@contextmanager
def scratch_target() -> Iterator[Target]:
    """A new workspace in a temporary folder: SQLite, or a fresh PostgreSQL database when $LFOPS_CRASH_PG_URL is set."""
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="lfops-crash-") as tmp:
        ws = Workspace(Settings.from_env(Path(tmp) / "ws"))
        passwords = {name: pw for name, (_role, pw) in ws.init().credentials.items()}
        admin_url = os.environ.get(PG_URL_ENV)
        if not admin_url:
            yield Target(ws, passwords)
            ws.store.dispose()
            return
        name = f"lfops_crash_{uuid.uuid4().hex[:10]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            from backend.auth import ROLES, add_user

            pg = Workspace(ws.settings.model_copy(update={"database_url": admin_url.rsplit("/", 1)[0] + "/" + name}))
            pg.store.upgrade()
            with pg.store.session() as s:
                roles = {"admin": "admin", "alice": "analyst", "rita": "reviewer"}
                for user, password in passwords.items():
                    add_user(s, user, roles.get(user, ROLES[0]), password)
            yield Target(pg, passwords)
            pg.store.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


# ---- workers ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # CRASHED | KILLED | DONE | FAILED
    seconds: float
    error: str = ""


class Workers:
    """A fork server: one warm process (lfops and LLaMA-Factory's checks imported, nothing open) that forks a fresh
    worker per job. Each worker opens the workspace of `target` (which may be changed between jobs), signs in, says
    "ready" and runs its job in its own process group, so a kill takes its git children too. A context manager."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._stderr = tempfile.TemporaryFile()
        self._server: subprocess.Popen | None = None
        self._buffer = b""

    def __enter__(self) -> Workers:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "bench.crash_scenarios._harness"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.target.settings_env()},
            cwd=REPO_ROOT,
        )
        line = self._line(timeout=600)
        if line != "warm":
            self._stderr.seek(0)
            raise RuntimeError(f"the fork server did not start: {line!r} {self._stderr.read().decode()[-2000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.kill()
            self._server.wait()
        self._stderr.close()

    def _line(self, timeout: float | None) -> str | None:
        """The server's next stdout line, or None when none came within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            # a selector, not select.select: a long test session may hold file descriptors above 1024
            with selectors.DefaultSelector() as waiting:
                waiting.register(self._server.stdout, selectors.EVENT_READ)
                if not waiting.select(left):
                    return None
            chunk = os.read(self._server.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the fork server exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def run(self, job: dict, crash_at: str | None = None, kill_after: float | None = None) -> Outcome:
        """Run one job in a fresh worker: crash it at `crash_at`, or SIGKILL it `kill_after` seconds in."""
        target = {"env": self.target.settings_env(), "password": self.target.passwords[job["user"]]}
        self._server.stdin.write((json.dumps({**job, **target, "crash_at": crash_at}) + "\n").encode())
        self._server.stdin.flush()
        ready = self._line(timeout=300) or ""
        if not ready.startswith("ready "):
            raise RuntimeError(f"worker did not start: {ready!r}")
        pid = int(ready.split()[1])
        started = time.monotonic()
        error = ""
        line = self._line(timeout=kill_after if kill_after is not None else 300)
        if line is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            line = self._line(timeout=60)
            _remote_recovers(self.target.origin)
        seconds = time.monotonic() - started
        while line is not None and line.startswith("error "):
            error = line.split(" ", 2)[2]
            line = self._line(timeout=60)
        if line is None or not line.startswith(f"exit {pid} "):
            raise RuntimeError(f"lost track of worker {pid}: {line!r}")
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # anything of its group still running (a git child) goes too
        code = int(line.split()[2])
        if code == failpoints.EXIT_CODE and crash_at:
            return Outcome(CRASHED, seconds)
        if code == -signal.SIGKILL:
            return Outcome(KILLED, seconds)
        if code == 0:
            return Outcome(DONE, seconds)
        return Outcome(FAILED, seconds, error or f"exit {code}")


def _remote_recovers(origin: Path) -> None:
    """What a real remote does for itself: the kill took the local origin's receive-pack along (same process group,
    which a server's never is), so a ref lock it held is removed as the server's own recovery would. lfops never
    touches origin's files; the mirror's stale locks are lfops' own to clear (backend.gitstore)."""
    for lock in [origin / "packed-refs.lock", *(origin / "refs").rglob("*.lock")]:
        lock.unlink(missing_ok=True)


def _serve() -> None:
    """The fork server: warm up, then fork one worker per job line and report its end."""
    from backend import config as cfgmod
    from backend.gitstore import GitStore

    warm = Workspace(Settings.from_env())
    main = warm.repo.sync_main()
    cfgmod.parse_and_validate(warm.repo.read(main, "configs/example.yaml"), warm.repo.files(main), "example.yaml")
    warm.store.dispose()  # nothing open is inherited by the workers: no connection, no git process
    for repo in GitStore._local.__dict__.pop("repos", {}).values():
        repo.close()
    del warm
    print("warm", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.setsid()
            os._exit(_work(job))
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


def _work(job: dict) -> int:
    """One worker: open the job's workspace, sign in, say ready, run the job (crashing where told)."""
    try:
        os.environ.update(job["env"])
        ws = Workspace(Settings.from_env())
        actor = ws.login(job["user"], job["password"])
        print(f"ready {os.getpid()}", flush=True)
        if job.get("crash_at"):
            os.environ[failpoints.ENV] = job["crash_at"]
        if job["op"] == "save":
            ws.changes.save(actor, job["yaml"].encode(), job["name"], job["message"])
        elif job["op"] == "update":
            ws.changes.update(actor, job["id"], job["yaml"].encode(), job["message"])
        elif job["op"] == "merge":
            ws.changes.merge(actor, job["id"])
        elif job["op"] == "close":
            ws.changes.close(actor, job["id"])
        else:
            raise ValueError(f"unknown job {job['op']}")
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which counts it
        print(f"error {os.getpid()} {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
        return 1


# ---- invariants and repair --------------------------------------------------------------------------------------


def violations(target: Target) -> list[str]:
    """Every broken invariant (see the module's list), judged on origin itself and the database."""
    from sqlalchemy import select

    from backend.review_status import UNDER_REVIEW, ChangeRequestStatus
    from backend.store.models import ChangeRequest

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(target.origin), *args], capture_output=True, text=True)

    main_branch = target.ws.settings.main_branch
    heads = dict(
        line.split(" ", 1)[::-1]
        for line in git("for-each-ref", "--format=%(objectname) %(refname:lstrip=2)", "refs/heads").stdout.split("\n")
        if line
    )
    main = heads.pop(main_branch)
    with target.ws.store.session() as s:
        rows = s.execute(
            select(
                ChangeRequest.id,
                ChangeRequest.branch,
                ChangeRequest.head_commit,
                ChangeRequest.status,
                ChangeRequest.merged_commit,
            )
        ).all()
    found = []
    reviewing = {(r.branch, r.head_commit) for r in rows if r.status in UNDER_REVIEW}
    for branch, sha in sorted(heads.items()):
        if (branch, sha) not in reviewing:
            found.append(f"branch {branch} has no change request under review at {sha[:12]}")
    for r in rows:
        status = ChangeRequestStatus(r.status)
        if status == ChangeRequestStatus.SAVING:
            found.append(f"change request #{r.id} is a half-made save")
            continue
        if status in UNDER_REVIEW and heads.get(r.branch) != r.head_commit:
            found.append(f"change request #{r.id} is {status} without its branch {r.branch}")
        on_main = git("merge-base", "--is-ancestor", r.head_commit, main).returncode == 0
        if (status == ChangeRequestStatus.MERGED) != on_main:
            found.append(f"change request #{r.id} is {status}, but its head {'is' if on_main else 'is not'} on main")
        elif status == ChangeRequestStatus.MERGED and (
            not r.merged_commit or git("merge-base", "--is-ancestor", r.merged_commit, main).returncode != 0
        ):
            found.append(f"change request #{r.id} is recorded as merged by a commit not on main")
    return found


def repair(target: Target) -> list:
    """The reconcile of change requests, as `lfops doctor --repair` runs it (nothing is in flight: no grace)."""
    from backend.reconcile import change_requests

    return change_requests.check(target.ws, repair=True, stale_after=0)


@dataclass
class Tally:
    """Kills and the violations found right after each (before) and after the reconcile that follows it (after)."""

    kills: int = 0
    violations_before: int = 0
    violations_after: int = 0
    finished: int = 0  # random kills that came after the operation had finished
    boundary: int = 0
    random: int = 0
    failures: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def record(self, target: Target, outcome: Outcome) -> None:
        if outcome.kind == FAILED:
            self.failures.append(outcome.error)
        elif outcome.kind == DONE:
            self.finished += 1
        else:
            self.kills += 1
            self.boundary += outcome.kind == CRASHED
            self.random += outcome.kind == KILLED
        self.violations_before += len(violations(target))
        repair(target)
        after = violations(target)
        self.violations_after += len(after)
        self.left += after

    def result(self) -> dict:
        notes = f"{self.boundary} at step boundaries, {self.random} at random moments"
        if self.finished:
            notes += f"; {self.finished} random kills came after the operation finished"
        if self.failures:
            notes += f"; {len(self.failures)} operations failed: {self.failures[0]}"
        if self.left:
            notes += f"; left: {self.left[0]}"
        return {
            "kills": self.kills,
            "violations_before": self.violations_before,
            "violations_after": self.violations_after,
            "notes": notes,
        }


def kill_plan(
    steps: tuple[str, ...], kills: int, seed: int, duration: float
) -> Iterator[tuple[str | None, float | None]]:
    """Half the kills at each step boundary in turn, half at a random moment within the operation's usual time."""
    import random

    rng = random.Random(seed)
    for i in range(kills):
        if i % 2 == 0 or duration <= 0:
            yield steps[(i // 2) % len(steps)], None
        else:
            yield None, rng.uniform(0.0, duration * 0.9)


def drive(
    target: Target,
    steps: tuple[str, ...],
    job: Callable[[int], dict],
    kills: int,
    seed: int,
    random_kills: bool = True,
    workers: Workers | None = None,
) -> dict:
    """Kill `kills` jobs by `kill_plan` (random moments scaled to one uncrashed job's time), reconciling after each."""
    tally = Tally()
    with nullcontext(workers) if workers else Workers(target) as running:
        duration = 0.0
        if random_kills:  # the fastest of three uncrashed runs: random kills then land inside the operation
            timings = [running.run(job(-1 - n)) for n in range(3)]
            failed = [t.error for t in timings if t.kind != DONE]
            if failed:
                raise RuntimeError(f"the uncrashed {steps[0].split('.')[0]} failed: {failed[0]}")
            duration = min(t.seconds for t in timings)
        for i, (point, delay) in enumerate(kill_plan(steps, kills, seed, duration)):
            tally.record(target, running.run(job(i), crash_at=point, kill_after=delay))
    return tally.result()


if __name__ == "__main__":
    _serve()
