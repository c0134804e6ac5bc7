"""Helpers shared by the tests and the benches, each defined once: polling, free ports, Git, the `lfops` command as a
user runs it, and skipping when a service is missing.

Standard library only at import time: bench/lineage.py imports bench/common.py (which imports this) inside MLflow's
own virtualenv, where neither pytest nor lfops is installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from backend.serving.httpserver import free_port  # noqa: F401 - one source, re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]
LFOPS = str(Path(sys.executable).with_name("lfops"))  # the console script of the venv running the tests
REQUIRE_SERVICES = os.environ.get("LFOPS_REQUIRE_SERVICES") == "1"

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 120.0, interval: float = 0.1, what: str = "") -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    It is called at least once, and once more at the deadline; then AssertionError names `what` (so a test that
    waits says what never happened). A predicate may itself raise to stop waiting early (a process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def need_service(
    name: str, available: bool, required: bool = REQUIRE_SERVICES, why: str = "scripts/services.sh starts it"
) -> None:
    """Skip when a service is missing on a developer machine; fail where it is required (CI sets
    LFOPS_REQUIRE_SERVICES=1, and scripts/services.sh starts the services)."""
    import pytest  # here, not at the top: the benches import this module where pytest is not installed

    if available:
        return
    if required:
        pytest.fail(f"{name} is required but not available ({why})")
    pytest.skip(f"{name} not available ({why})")


# ---- Git ------------------------------------------------------------------------------------------------------------


def git(repo: Path | str, *args: str, input: str | None = None) -> str:
    """`git -C repo ARGS`; its standard output (a failure raises CalledProcessError)."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, input=input
    ).stdout


def git_clone(url: Path | str, dest: Path, user: str | None = None, email: str | None = None) -> Path:
    """A working clone of `url` at `dest`; with `user`, commits made in it are authored by that user."""
    subprocess.run(["git", "clone", "-q", str(url), str(dest)], check=True, capture_output=True)
    if user:
        git(dest, "config", "user.name", user)
        git(dest, "config", "user.email", email or f"{user}@lfops.invalid")
    return dest


# ---- the `lfops` command --------------------------------------------------------------------------------------------


def lfops_env(
    workspace: Path | None = None, user: str | None = None, password: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of an `lfops` process: this one's, without the caller's own LFOPS_* settings (a developer's
    LFOPS_DATABASE_URL must not leak into a test), plus the workspace, the user and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFOPS_") or k.startswith("LFOPS_TEST_")}
    if workspace is not None:
        env["LFOPS_WORKSPACE"] = str(workspace)
    if user:
        env |= {"LFOPS_USER": user, "LFOPS_PASSWORD": password or ""}
    return env | extra


def run_lfops(
    *args: str,
    workspace: Path | None = None,
    user: str | None = None,
    password: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """`lfops ARGS` run as a user runs it, to the end; text output captured, never raises on a non-zero exit."""
    return subprocess.run(
        [LFOPS, *args],
        capture_output=True,
        text=True,
        env=lfops_env(workspace, user, password, **(env or {})),
        input=stdin,
        timeout=timeout,
        cwd=cwd,
    )


def printed_passwords(output: str) -> dict[str, str]:
    """The demo users' passwords from what `lfops init` (or the first `lfops webui`) prints once: name -> password."""
    return dict(re.findall(r"^\s+(\w+)\s+(?:analyst|reviewer|admin)\s+(\S+)$", output, re.M))


def first_start_passwords(workspace: Path) -> dict[str, str]:
    """The demo users' passwords a first `lfops webui` without a terminal wrote to its 0600 file (never to the log)."""
    from webui.serve import PASSWORDS_FILE

    return printed_passwords((workspace / PASSWORDS_FILE).read_text())
