"""The local runner: `llamafactory-cli train` as a detached process on this machine, one directory per run.

A run directory holds everything about one run, so the app can die and come back without losing it:

    runs/run-000012/
      checkout/       the config repository exactly at the run's commit (`git archive`, never a shared working copy)
      train.yaml      what `llamafactory-cli train` reads: the config without metadata, output_dir -> output/
      output/         LLaMA-Factory's output_dir (adapter, trainer_log.jsonl, all_results.json, trainer_state.json)
      train.log       stdout and stderr of the training process tree
      .submit.lock    held (flock) while a submit prepares the directory and starts the process
      trainer.json    the marker: written by the wrapper shell BEFORE it execs the trainer (run id, the wrapper's and
                      the trainer's pid and start time), so a launch that dies right after starting the process still
                      leaves the trainer findable, and a trainer that outlives its wrapper is still followed
      process.json    pid and psutil create time of the process group leader (the wrapper), written by the app after
                      the start; with the command and working directory
      exit_code       written by the wrapper shell when training ends (how a restarted app learns the outcome)
      cancelled       written before a cancel signals the process group

A run's outcome: the exit code when the wrapper wrote one; when the wrapper was killed (only SIGKILL does: it ignores
the others) the run stays running while the trainer lives, and then succeeds if the training's results are complete
(all_results.json with train_runtime, written by LLaMA-Factory after the model is saved), else it is lost.

The child runs in its own session (backend.runners.lfprocess, detached): it survives the app. Cancel signals the whole
process tree: the process group, the leader's descendants (torchrun starts its workers in groups of their own) and
any process carrying the run's LFOPS_RUN_DIR marker in its environment. The child gets its own `cwd=` and an
environment without the app's secrets; the app's working directory is never changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

from backend import yamlio
from backend.config import METADATA_KEY
from backend.errors import GitFailure, NotFound
from backend.filelock import file_lock, is_locked
from backend.gitstore import GitStore
from backend.redaction import redact_url
from backend.runners import lfprocess
from backend.runners.base import Resources, Runner, RunSpec, RunState, RunStatus
from backend.runners.lfprocess import ProcessId, failure_reason, llamafactory_cli, read_marker

_ID_RE = re.compile(r"^run-\d{6,}$")
_MARKER = "LFOPS_RUN_DIR"
MARKER_FILE = "trainer.json"


def external_id_for(run_id: int) -> str:
    return f"run-{run_id:06d}"


class LocalRunner(Runner):
    """Runs training as local processes; status comes from the process, its exit code and its files."""

    name = "local"

    def __init__(self, runs_dir: Path, repo: GitStore, cli: Path | None = None, cancel_grace_s: float = 10.0) -> None:
        self.runs_dir = Path(runs_dir)
        self.repo = repo
        self.cli = Path(cli) if cli else llamafactory_cli()
        self.cancel_grace_s = cancel_grace_s
        self._children: dict[str, subprocess.Popen] = {}  # started by this process: reaped so no zombie lingers
        self._lock = threading.Lock()

    # ---- paths --------------------------------------------------------------------------------------------------

    def run_dir(self, external_id: str) -> Path:
        if not isinstance(external_id, str) or not _ID_RE.match(external_id):
            raise NotFound(f"run: {external_id!r} is not a local run id (run-NNNNNN)")
        return self.runs_dir / external_id

    def output_dir(self, external_id: str) -> str:
        return str(self.run_dir(external_id) / "output")

    def log_path(self, external_id: str) -> Path:
        return self.run_dir(external_id) / "train.log"

    # ---- submit -------------------------------------------------------------------------------------------------

    def submit(self, spec: RunSpec) -> str:
        external_id = external_id_for(spec.run_id)
        run_dir = self.run_dir(external_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        with _flocked(run_dir / ".submit.lock"):
            if self._started(run_dir):
                return external_id  # submitted before: never start a second process for one run
            checkout = run_dir / "checkout"
            if checkout.exists():  # a submit that died half-way: start the checkout again
                shutil.rmtree(checkout)
            self._checkout(spec.commit, checkout)
            yaml_path = run_dir / "train.yaml"
            yaml_path.write_text(self.training_yaml(spec, run_dir))
            (run_dir / "output").mkdir(exist_ok=True)
            self._start(spec, run_dir, checkout, yaml_path)
        return external_id

    def training_yaml(self, spec: RunSpec, run_dir: Path) -> str:
        """The spec's training YAML with output_dir in the run directory; relative paths stay relative to checkout/."""
        args = yamlio.load_mapping(spec.training_yaml, spec.config_path)
        args.pop(METADATA_KEY, None)
        args["output_dir"] = str(run_dir / "output")
        return yamlio.dump(args)

    def _checkout(self, commit: str, dest: Path) -> None:
        if not self.repo.has_commit(commit):
            self.repo.fetch()
            if not self.repo.has_commit(commit):
                raise GitFailure(f"commit: {commit} is not in the config repository")
        self.repo.extract(commit, dest)

    def _env(self, spec: RunSpec, run_dir: Path) -> dict[str, str]:
        """What lfops adds to the child's scrubbed environment; RUN_DIR marks every process of the run, even ones that
        leave the process group (torchrun's workers)."""
        return {"PYTHONUNBUFFERED": "1", "LFOPS_RUN_ID": str(spec.run_id), _MARKER: str(run_dir)}

    def _started(self, run_dir: Path) -> bool:
        """A process was started for this run directory (recorded by the app, marked by the wrapper, or still carrying
        the run's marker in its environment before its wrapper wrote the file)."""
        return (
            (run_dir / "process.json").exists()
            or read_marker(run_dir / MARKER_FILE) is not None
            or bool(self._marked_processes(run_dir))
        )

    def _start(self, spec: RunSpec, run_dir: Path, checkout: Path, yaml_path: Path) -> None:
        proc = lfprocess.start(
            "train",
            yaml_path,
            cwd=checkout,
            log_path=run_dir / "train.log",
            cli=self.cli,
            env=self._env(spec, run_dir),
            exit_code_file=run_dir / "exit_code",
            marker_file=run_dir / MARKER_FILE,
            detached=True,  # own session and process group: survives the app, killpg reaches all
        )
        with self._lock:
            self._children[external_id_for(spec.run_id)] = proc
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:  # ended already (e.g. the CLI crashed at once); the exit code tells the rest
            create_time = 0.0
        info = {
            "pid": proc.pid,
            "create_time": create_time,
            "command": lfprocess.command("train", yaml_path, self.cli),
            "cwd": str(checkout),
            "started_at": datetime.now(UTC).isoformat(),
        }
        try:
            _write_atomic(run_dir / "process.json", json.dumps(info, indent=1))
        except OSError:
            # e.g. a full disk: a run that failed to start must not train on unseen
            _kill_group(proc.pid)
            raise

    # ---- preview and close --------------------------------------------------------------------------------------

    def preview(self, spec: RunSpec) -> str:
        """What submit would run: the command, its working directory, the names of its environment variables (values
        can be secrets) and the train.yaml it would write; nothing is written or started."""
        run_dir = self.run_dir(external_id_for(spec.run_id))
        yaml_path = run_dir / "train.yaml"
        added = self._env(spec, run_dir)
        env = lfprocess.child_env(added, self.cli)
        process = {
            "runner": self.name,
            "run_dir": str(run_dir),
            "checkout": f"git archive of {spec.commit} from {redact_url(spec.repo_url)}",
            "cwd": str(run_dir / "checkout"),
            "command": lfprocess.command("train", yaml_path, self.cli),
            "log": str(run_dir / "train.log"),
            "env": {
                "set": added,
                "path_first": str(self.cli.parent),
                "removed": sorted(k for k in os.environ if lfprocess.is_secret(k) and k not in added),
                "inherited": sorted(k for k in env if k not in added and k != "PATH"),
            },
        }
        header = yaml.safe_dump(process, sort_keys=False, default_flow_style=False)
        return f"{header}---\n# {yaml_path}\n{self.training_yaml(spec, run_dir)}"

    def close(self) -> None:
        """Reap the children that have ended and forget the handles of the others: runs go on without the app."""
        with self._lock:
            children, self._children = self._children, {}
        for proc in children.values():
            proc.poll()

    # ---- status -------------------------------------------------------------------------------------------------

    def process_info(self, external_id: str) -> dict | None:
        """The process group leader (the wrapper shell): as the app recorded it after the start, else as the wrapper's
        marker names it (the app died before recording it); None when no process was started."""
        run_dir = self.run_dir(external_id)
        try:
            return json.loads((run_dir / "process.json").read_text())
        except (FileNotFoundError, ValueError):
            pass
        marker = read_marker(run_dir / MARKER_FILE)
        if marker is None:
            return None
        return {"pid": marker.wrapper.pid, "create_time": marker.wrapper.create_time}

    def trainer(self, external_id: str) -> ProcessId | None:
        """The trainer process (llamafactory-cli) as the wrapper marked it before starting it."""
        marker = read_marker(self.run_dir(external_id) / MARKER_FILE)
        return marker.trainer if marker is not None else None

    def find_submitted(self, run_id: int, resources: Resources) -> str | None:
        """The run directory is made first by a submit: when it exists the submit reached this runner, and `status`
        says what became of it (queued while a submit holds it, running while a process of it lives, else ended)."""
        external_id = external_id_for(run_id)
        return external_id if self.run_dir(external_id).is_dir() else None

    def _reap(self, external_id: str, wait_s: float = 0.0) -> None:
        with self._lock:
            proc = self._children.get(external_id)
        if proc is None:
            return
        if wait_s:
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                return
        else:
            proc.poll()
        if proc.returncode is not None:
            with self._lock:
                self._children.pop(external_id, None)

    def is_alive(self, external_id: str) -> bool:
        """True while the recorded process (same pid and same create time, not a zombie) still exists."""
        self._reap(external_id)
        info = self.process_info(external_id)
        return info is not None and _alive(info)

    def status(self, external_id: str) -> RunStatus:
        run_dir = self.run_dir(external_id)
        if not run_dir.exists():
            return RunStatus(RunState.LOST, f"run directory {run_dir} is missing", external_id)
        info = self.process_info(external_id)
        if info is None:
            return self._not_started(external_id, run_dir)
        code = _read_exit_code(run_dir / "exit_code")
        # With the exit code written the wrapper is exiting: reap it now (no zombie, its CPU time accounted).
        self._reap(external_id, wait_s=2.0 if code is not None else 0.0)
        if code is None:
            trainer = self.trainer(external_id)
            if _alive(info) or (trainer is not None and trainer.alive()):
                return RunStatus(RunState.RUNNING, "", external_id)
            code = _read_exit_code(run_dir / "exit_code")  # written between the two looks, as the wrapper ended
        return self._ended(external_id, run_dir, info, code)

    def _not_started(self, external_id: str, run_dir: Path) -> RunStatus:
        """No process recorded or marked: a submit is under way, the wrapper is about to write its marker, or the
        launch died before it started anything."""
        if _locked(run_dir / ".submit.lock") or self._marked_processes(run_dir):
            return RunStatus(RunState.QUEUED, "", external_id)
        if self.process_info(external_id) is not None:  # the wrapper wrote its marker meanwhile
            return self.status(external_id)
        return RunStatus(
            RunState.LOST,
            f"the launch stopped before the trainer started (no process was started in {run_dir})",
            external_id,
        )

    def _ended(self, external_id: str, run_dir: Path, info: dict, code: int | None) -> RunStatus:
        cancelled = _read_text(run_dir / "cancelled")
        if code == 0:
            return RunStatus(RunState.SUCCEEDED, "", external_id)
        if code is not None:
            if cancelled is not None:
                return RunStatus(RunState.CANCELLED, cancelled, external_id)
            return RunStatus(RunState.FAILED, failure_reason(run_dir / "train.log", code), external_id)
        if cancelled is not None:
            return RunStatus(RunState.CANCELLED, cancelled, external_id)
        trainer = self.trainer(external_id)
        if trainer is not None and training_completed(run_dir / "output"):
            return RunStatus(
                RunState.SUCCEEDED,
                f"trainer {trainer.pid} ended after its wrapper {info['pid']} was killed (no exit code); "
                "its results are complete",
                external_id,
            )
        return RunStatus(
            RunState.LOST,
            f"process {info['pid']} ended without an exit code (killed from outside or the machine restarted)",
            external_id,
        )

    # ---- logs ---------------------------------------------------------------------------------------------------

    def logs(self, external_id: str, follow: bool = False, poll: float = 0.25) -> Iterator[str]:
        path = self.log_path(external_id)
        while follow and not path.exists():
            if self.status(external_id).state.finished:
                return
            time.sleep(poll)
        if not path.exists():
            return
        with open(path, "rb") as fh:
            pending = b""
            while True:
                chunk = fh.read(1 << 16)
                if chunk:
                    pending += chunk
                    *lines, pending = re.split(rb"\r\n|\n|\r", pending)
                    for line in lines:
                        yield line.decode(errors="replace")
                    continue
                if not follow or self.status(external_id).state.finished:
                    rest = fh.read()  # whatever arrived between the last read and the end
                    for line in re.split(rb"\r\n|\n|\r", pending + rest):
                        if line:
                            yield line.decode(errors="replace")
                    return
                time.sleep(poll)

    def log_tail(self, external_id: str, max_lines: int, max_bytes: int) -> list[str]:
        """The end of the log as a terminal shows it: a line redrawn with carriage returns (tqdm's progress bars) is
        its last drawing. Reads at most `max_bytes` from the end of the file; a cut first line is left out."""
        path = self.log_path(external_id)
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - max_bytes)
                fh.seek(start)
                data = fh.read(size - start)
        except FileNotFoundError:
            return []
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
        if start > 0:
            lines = lines[1:]
        shown = [line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode(errors="replace") for line in lines]
        while shown and not shown[-1]:
            shown.pop()
        return shown[-max_lines:]

    # ---- cancel -------------------------------------------------------------------------------------------------

    def cancel(self, external_id: str, reason: str = "cancelled") -> None:
        """Stop the whole process tree: SIGTERM to all of it, SIGKILL to what is left after the grace period."""
        run_dir = self.run_dir(external_id)
        info = self.process_info(external_id)
        if info is None:
            raise NotFound(f"run {external_id} has no process to cancel")
        if _read_exit_code(run_dir / "exit_code") is not None:
            return  # already ended on its own
        _write_atomic(run_dir / "cancelled", reason)
        # Every process ever seen stays a target until it is gone: one that is exiting may no longer be found
        # through its parent or its environment, but it is not gone yet.
        seen: dict[int, psutil.Process] = {}

        def live() -> list[psutil.Process]:
            seen.update({p.pid: p for p in self.processes(external_id)})
            return [p for p in seen.values() if _live(p)]

        for sig, wait_s in ((signal.SIGTERM, self.cancel_grace_s), (signal.SIGKILL, 5.0)):
            targets = live()
            if not targets:
                return
            for proc in targets:
                try:
                    proc.send_signal(sig)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self._reap(external_id)
                if not live():
                    return
                time.sleep(0.1)

    def processes(self, external_id: str) -> list[psutil.Process]:
        """Every live process of a run: the leader's process group, its descendants (torchrun puts its workers in
        groups of their own) and anything else that carries the run's marker in its environment."""
        info = self.process_info(external_id)
        found: dict[int, psutil.Process] = {}
        leaders = [ProcessId(int(info["pid"]), float(info["create_time"]))] if info is not None else []
        trainer = self.trainer(external_id)  # outlives the wrapper when only the wrapper was killed
        leaders += [trainer] if trainer is not None else []
        for leader_id in leaders:
            if not leader_id.alive():
                continue
            leader = psutil.Process(leader_id.pid)
            found[leader.pid] = leader
            try:
                found.update({p.pid: p for p in leader.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
            found.update({p.pid: p for p in map(_process, group_members(leader.pid)) if p is not None})
        found.update({p.pid: p for p in self._marked_processes(self.run_dir(external_id)) if p.pid not in found})
        return [p for p in found.values() if _live(p)]

    @staticmethod
    def _marked_processes(run_dir: Path) -> list[psutil.Process]:
        """Live processes carrying the run's marker in their environment (set at exec, before any of their code)."""
        marker = str(run_dir)
        found = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            try:
                if proc.environ().get(_MARKER) == marker and _live(proc):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found


# ---- helpers --------------------------------------------------------------------------------------------------------


def _alive(info: dict) -> bool:
    """The recorded process (same pid and same start time, not a zombie) still exists."""
    try:
        return ProcessId(int(info["pid"]), float(info["create_time"])).alive()
    except (KeyError, ValueError, TypeError):
        return False


def training_completed(out: Path) -> bool:
    """LLaMA-Factory wrote its train summary (after saving the model): the training itself ended well."""
    for name in ("all_results.json", "train_results.json"):
        try:
            data = json.loads((out / name).read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
        if isinstance(data, dict) and "train_runtime" in data:
            return True
    return False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _read_exit_code(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return -1


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _locked(path: Path) -> bool:
    """Another process holds the flock on `path` (a submit is under way in some process)."""
    return is_locked(path)


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    with file_lock(path):
        yield
