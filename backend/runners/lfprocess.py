"""`llamafactory-cli` as a child process: the one way lfops starts LLaMA-Factory on this machine.

Training (the local runner) and merging an adapter (`registry.export`) both go through `start`, so every child gets
the same treatment: the `llamafactory-cli` of lfops' own environment (never whichever is first on PATH), its own `cwd=`
(the app's working directory is never changed), output appended to a log file, and an environment without the app's
own credentials: every `LFOPS_*` setting (database URL, passwords), libpq's password and the app's kubeconfig.
Credentials that belong to the training itself (HF_TOKEN for a gated base model) pass through, as they do to a pod.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from backend.errors import LfopsError, TimedOut

# The app's credentials: a training process has no business with its database or its cluster.
SECRET_ENV_PREFIXES = ("LFOPS_",)
SECRET_ENV_NAMES = frozenset({"PGPASSWORD", "KUBECONFIG"})
# Names that carry credentials by convention: HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, PGPASSWORD,
# GOOGLE_APPLICATION_CREDENTIALS ... (TOKEN as a word of the name: TOKENIZERS_PARALLELISM is not one). A model
# *server* loses all of them (it answers requests from outside and needs none); training keeps those that are not
# the app's own (`report_to: wandb` needs WANDB_API_KEY, a gated hub model HF_TOKEN).
_CREDENTIAL_NAME = re.compile(r"PASSW|SECRET|CREDENTIAL|(^|_)(TOKENS?|AUTH)(_|$)|(^|_)KEY$", re.IGNORECASE)
# Waits for the command and records its exit code atomically (how a restarted app learns a detached run's outcome).
_WRAPPER = '"$1" "$2" "$3"; code=$?; printf "%s\\n" "$code" > "$4.tmp" && mv "$4.tmp" "$4"'
# The same, and before the command starts, a marker naming both processes (pid and start time in clock ticks since
# boot, field 22 of /proc/PID/stat): the subshell writes it and then execs the command, so the trainer's pid is known
# before the trainer runs, whoever dies afterwards. The wrapper survives SIGHUP/SIGINT/SIGTERM (a caught signal is reset
# on exec: the trainer still gets them) so that only SIGKILL keeps it from recording the exit code.
_MARKED_WRAPPER = """trap : HUP INT TERM
ticks() { read -r s < "/proc/$1/stat" || return 1; p=${s%% *}; s=${s##*) }; set -- $s; t=${20}; }
(
  ticks $$ && wrapper_pid=$p wrapper_start=$t && ticks self &&
  printf '{"run_id": "%s", "wrapper_pid": %s, "wrapper_start": %s, "trainer_pid": %s, "trainer_start": %s}\\n' \\
    "$LFOPS_RUN_ID" "$wrapper_pid" "$wrapper_start" "$p" "$t" > "$5.tmp" && mv "$5.tmp" "$5" &&
  exec "$1" "$2" "$3"
)
code=$?
printf "%s\\n" "$code" > "$4.tmp" && mv "$4.tmp" "$4"
"""
_ERROR_RE = re.compile(r"\b\w*(Error|Exception|Interrupt)\b:?")


def llamafactory_cli() -> Path:
    """The `llamafactory-cli` of the Python environment lfops runs in (never whichever one is first on PATH)."""
    return Path(sys.executable).parent / "llamafactory-cli"


def is_secret(name: str) -> bool:
    return name.startswith(SECRET_ENV_PREFIXES) or name in SECRET_ENV_NAMES


def is_credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def child_env(
    extra: Mapping[str, str] | None = None,
    cli: Path | None = None,
    *,
    drop_credentials: bool = False,
    keep: Iterable[str] = (),
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The app's environment (`base`, default os.environ) without its secrets and, with `drop_credentials`, without
    anything credential-like except the names in `keep`; the venv's tools first on PATH (torchrun, when LLaMA-Factory
    launches distributed training); unbuffered output; then `extra` (set last: what the caller sets on purpose, such
    as lfops' own markers like LFOPS_RUN_DIR)."""
    kept = set(keep)
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not is_secret(k) and (not drop_credentials or k in kept or not is_credential_name(k))
    }
    tools = (Path(cli) if cli else llamafactory_cli()).parent
    env["PATH"] = os.pathsep.join([str(tools), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def command(subcommand: str, yaml_path: Path, cli: Path | None = None) -> list[str]:
    return [str(Path(cli) if cli else llamafactory_cli()), subcommand, str(yaml_path)]


def start(
    subcommand: str,
    yaml_path: Path,
    *,
    cwd: Path,
    log_path: Path,
    cli: Path | None = None,
    env: Mapping[str, str] | None = None,
    exit_code_file: Path | None = None,
    marker_file: Path | None = None,
    detached: bool = False,
) -> subprocess.Popen:
    """`llamafactory-cli <subcommand> <yaml_path>` in `cwd`, stdout and stderr appended to `log_path`.

    `env`: variables added to the scrubbed environment. `exit_code_file`: a wrapper shell writes the exit code there
    when the command ends; with `marker_file` it also writes its own and the command's pid and start time there before
    the command starts (read it with `read_marker`). `detached`: its own session and process group, so it survives the
    app and one killpg reaches the whole tree.
    """
    argv = command(subcommand, yaml_path, cli)
    if not Path(argv[0]).exists():
        raise LfopsError(f"runner: {argv[0]} does not exist (is llamafactory installed in this environment?)")
    if exit_code_file is not None and marker_file is not None:
        argv = ["/bin/sh", "-c", _MARKED_WRAPPER, "lfops-run", *argv, str(exit_code_file), str(marker_file)]
    elif exit_code_file is not None:
        argv = ["/bin/sh", "-c", _WRAPPER, "lfops-run", *argv, str(exit_code_file)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=child_env(env, cli),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detached,
            close_fds=True,
        )


@dataclass(frozen=True)
class ProcessId:
    """One process for good: a pid is reused by the OS, a pid with its start time is not."""

    pid: int
    create_time: float  # seconds since the epoch, as psutil.Process.create_time() gives it

    def alive(self) -> bool:
        """The same process still exists and is not a zombie."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5:
                return False  # the same pid with another start time is another process
            return proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


@dataclass(frozen=True)
class Marker:
    """What the wrapper wrote before it started the command: the run, the wrapper and the command (the trainer)."""

    run_id: str
    wrapper: ProcessId
    trainer: ProcessId


def read_marker(path: Path) -> Marker | None:
    """The marker `start(..., marker_file=path)` wrote; None while there is none (or it is not one)."""
    try:
        data = json.loads(path.read_text())
        tick = os.sysconf("SC_CLK_TCK")
        boot = psutil.boot_time()  # psutil's create_time is boot time + start ticks / tick rate: the same number

        def process(kind: str) -> ProcessId:
            return ProcessId(int(data[f"{kind}_pid"]), boot + int(data[f"{kind}_start"]) / tick)

        return Marker(str(data.get("run_id", "")), process("wrapper"), process("trainer"))
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        return None


def run(
    subcommand: str,
    yaml_path: Path,
    *,
    cwd: Path,
    log_path: Path,
    timeout_s: float,
    cli: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """`start` and wait for the exit code; past `timeout_s` the process is killed and TimedOut raised."""
    proc = start(subcommand, yaml_path, cwd=cwd, log_path=log_path, cli=cli, env=env)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimedOut(f"llamafactory-cli {subcommand} took longer than {timeout_s:g} s") from None


def failure_reason(log: Path, code: int) -> str:
    """The exit code and the last error line of the log (what a user needs first)."""
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        head = f"killed by {name} (exit code {code})"
    else:
        head = f"exit code {code}"
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, log.stat().st_size - 65536))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return head
    errors = [ln for ln in lines if _ERROR_RE.search(ln)]
    last = errors[-1] if errors else (lines[-1] if lines else "")
    return f"{head}: {last[:500]}" if last else head
