"""`lfops webui`: check the address, create the embedded defaults on first start, then serve the WebUI.

Light imports at the top: a refused address fails before Gradio and LLaMA-Factory load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backend import logconfig
from backend.settings import Settings
from backend.workspace import Workspace
from webui.auth import NONE, PROXY, Authenticator, check_bind, is_loopback

if TYPE_CHECKING:
    from backend.monitoring.scheduler import PeriodicMonitor
    from backend.reconcile.periodic import PeriodicReconcile


def serve(host: str = "127.0.0.1", port: int = 7860, no_auth: bool = False, workspace: str | None = None) -> int:
    ws = Workspace(Settings.from_env(workspace))
    logconfig.configure(ws.settings.log_format, ws.settings.log_level)
    auth = Authenticator.for_workspace(ws, no_auth=no_auth)
    check_bind(host, auth.mode)
    if auth.mode == PROXY and not is_loopback(host):
        print(
            f"warning: trusting the {auth.header} header on {host}: only the authenticating proxy may reach this port",
            file=sys.stderr,
        )
    result = ws.init()
    if result.credentials:
        announce_passwords(ws.settings.workspace, result.credentials)
    from backend.reconcile.periodic import PeriodicReconcile

    reconciler = PeriodicReconcile(ws)  # Git is the truth: what a crash left half-done is repaired before serving
    for finding in reconciler.run_once():
        print(f"reconcile: {finding}", file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls to outside hosts

    import uvicorn

    from webui.app import asgi_app, build_app
    from webui.context import AppContext
    from webui.workdir import Workdir

    workdir = Workdir(ws)
    workdir.prepare()
    os.chdir(workdir.root)  # once, before any thread starts: LlamaBoard's relative folders land in the workspace
    ctx = AppContext(ws, auth, workdir)
    app = asgi_app(ctx, build_app(ctx))
    # The run monitor and the periodic repair run in one replica only: the elected one (backend.leader)
    duties = LeaderDuties(ws)
    leadership = ws.leadership
    leadership.on_elected, leadership.on_lost = duties.start, duties.stop
    leadership.start()
    ws.notifications.start_notifier()  # audited events -> webhooks, chat, e-mail (safe on every replica)
    sign_in = {NONE: "none (this machine only)", PROXY: f"proxy header {auth.header}"}.get(auth.mode, "password")
    print(f"lfops WebUI on http://{host}:{port}  workspace {ws.settings.workspace}  sign-in: {sign_in}", flush=True)
    print(f"  REST API http://{host}:{port}/api/v1 (docs at /api/v1/docs), /healthz /readyz /metrics", flush=True)
    # log_config=None: logging stays as logconfig set it; requests are counted and logged by backend.api.
    # A browser keeps a Gradio stream open: on SIGTERM wait at most a few seconds for it.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    leadership.stop()  # a clean exit hands the lead over at once (a killed process: when its connection ends)
    return 0


class LeaderDuties:
    """What the elected replica runs: the run monitor (runs advance: status, metrics, registration), the serving
    supervisor (local deployments restarted on crash, re-attached after a restart; missed follows caught up) and the
    periodic repair of change requests and the drift checks of the deployments' sampled prompts; all stop when the
    lead is lost."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.reconciler: PeriodicReconcile | None = None
        self.drift_checks: PeriodicMonitor | None = None

    def start(self) -> None:
        from backend.monitoring.scheduler import PeriodicMonitor
        from backend.reconcile.periodic import PeriodicReconcile

        self.ws.runs.start_monitor()
        self.ws.serving.start_supervisor()
        self.reconciler = PeriodicReconcile(self.ws)
        self.reconciler.start()
        self.drift_checks = PeriodicMonitor(self.ws.monitoring)  # every 5 minutes
        self.drift_checks.start()

    def stop(self) -> None:
        self.ws.runs.stop_monitor()
        self.ws.serving.stop_supervisor()
        if self.reconciler is not None:
            self.reconciler.stop()
            self.reconciler = None
        if self.drift_checks is not None:
            self.drift_checks.stop()
            self.drift_checks = None


PASSWORDS_FILE = "first-start-passwords.txt"


def announce_passwords(workspace: Path, credentials: dict[str, tuple[str, str]]) -> None:
    """The generated first-start passwords: printed on an interactive terminal; otherwise (a pod, a service) written
    to a file only its owner can read in the workspace, and only its path is logged, so no password lands in a log."""
    lines = [f"  {name:8} {role:9} {password}" for name, (role, password) in credentials.items()]
    if sys.stdout.isatty():
        print("first start: users created (passwords are shown only this once):", *lines, sep="\n")
        return
    path = workspace / PASSWORDS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode on open: make sure
        fh.write("# lfops first-start users; change the passwords (or delete this file) after signing in\n")
        fh.write("\n".join(lines) + "\n")
    print(f"first start: users created; their passwords are in {path} (readable by its owner only)", flush=True)
