"""WebUI sign-in sessions in the store, with a real `lfops webui`: a session outlives a restart of the app, and
signing out (or deactivating the user) ends it."""

from __future__ import annotations

import httpx

from tests.replica_fixtures import Replica, sign_in, whoami
from tests.webui_fixtures import start_webui


def test_a_session_survives_a_restart_and_ends_on_sign_out(env, tmp_path):
    workspace = env.ws.settings.workspace
    first = Replica("first", start_webui(workspace, tmp_path / "first.log"))
    try:
        rita = sign_in(first, "rita", env.passwords["rita"])
        alice = sign_in(first, "alice", env.passwords["alice"])
        assert whoami(first, rita) == "rita"
    finally:
        first.server.stop()
    again = Replica("again", start_webui(workspace, tmp_path / "again.log"))
    try:
        assert whoami(again, rita) == "rita"  # the restarted app knows the session
        assert httpx.get(again.url + "/config", cookies=rita, timeout=30).status_code == 200  # Gradio's own routes too
        signed_out = httpx.get(again.url + "/logout", cookies=rita, timeout=30)
        assert signed_out.status_code == 302
        assert whoami(again, rita) == 401
        assert httpx.get(again.url + "/config", cookies=rita, timeout=30).status_code == 401
        env.ws.users.set_active(env.actor("admin"), "alice", False)
        assert whoami(again, alice) == 401  # deactivated: the session ended at once
    finally:
        again.server.stop()
