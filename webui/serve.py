"""`lfops webui`: check the address, create the embedded defaults on first start, then serve the WebUI.

Light imports at the top: a refused address fails before Gradio and LLaMA-Factory load.
"""

from __future__ import annotations

import os
import sys

from backend import logconfig
from backend.settings import Settings
from backend.workspace import Workspace
from webui.auth import NONE, PROXY, Authenticator, check_bind, is_loopback


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
        print("first start: users created (passwords are shown only this once):")
        for name, (role, password) in result.credentials.items():
            print(f"  {name:8} {role:9} {password}")
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
    ws.runs.start_monitor()  # runs advance (status, metrics, registration) while the WebUI is up
    ws.serving.start_supervisor()  # local deployments restarted on crash, re-attached after this restart
    ws.notifications.start_notifier()  # audited events -> webhooks, chat, e-mail (never inside a request)
    reconciler.start()  # and the repair goes on, every minute
    sign_in = {NONE: "none (this machine only)", PROXY: f"proxy header {auth.header}"}.get(auth.mode, "password")
    print(f"lfops WebUI on http://{host}:{port}  workspace {ws.settings.workspace}  sign-in: {sign_in}", flush=True)
    print(f"  REST API http://{host}:{port}/api/v1 (docs at /api/v1/docs), /healthz /readyz /metrics", flush=True)
    # log_config=None: logging stays as logconfig set it; requests are counted and logged by backend.api.
    # A browser keeps a Gradio stream open: on SIGTERM wait at most a few seconds for it.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    return 0
