"""The Admin tab's handlers over a real workspace: what an admin can do, what the backend refuses (the last admin,
an unknown role, a non-admin), shown as one line naming the field; and the tab is offered to admins only."""

from __future__ import annotations

from tests.webui_fixtures import plain, request_for
from webui.admin_tab import AdminTab
from webui.auth import Authenticator
from webui.context import AppContext


def _tab(env) -> AdminTab:
    return AdminTab(AppContext(env.ws, Authenticator(env.ws), workdir=None))  # type: ignore[arg-type]


def test_admin_tab_manages_users_tokens_and_reads_the_audit_log(env):
    tab, admin = _tab(env), request_for("admin")
    info, password = tab.on_add("carol", "analyst", admin)
    assert "carol" in plain(info) and len(password) >= 8
    assert env.ws.login("carol", password).name == "carol"
    assert ["carol", "analyst", "yes"] in [row[:3] for row in tab.on_users(admin)]

    refused = plain(tab.on_role("admin", "reviewer", admin))
    assert "Role not changed" in refused and "user: admin is the last active admin" in refused
    assert "role: 'owner' must be one of analyst, reviewer, admin" in plain(tab.on_role("carol", "owner", admin))
    assert "user name: type one" in plain(tab.on_deactivate("  ", admin))

    token = env.ws.tokens.create(env.ws.login("carol", password), "notebook")
    assert [row[2] for row in tab.on_tokens(admin)] == ["carol"]
    assert "revoked" in plain(tab.on_revoke(token.view.id, admin))
    assert tab.on_tokens(admin)[0][5] == "revoked"

    assert "deactivated" in plain(tab.on_deactivate("carol", admin))
    info, new_password = tab.on_reset("carol", admin)
    assert "reset" in plain(info) and new_password not in (password, "")

    rows, summary = tab.on_audit("admin", "user.", "user:carol", "", "", 1, admin)
    assert [r[3] for r in rows] == ["user.password_reset", "user.deactivate", "user.add"]
    assert summary == "page 1: 3 events"
    rows, summary = tab.on_audit("", "", "", "tomorrow", "", 1, admin)
    assert rows == [] and "since: 'tomorrow' is not a time" in plain(summary)
    rows, summary = tab.on_audit("", "", "", "", "", 30_000, admin)
    assert rows == [] and "offset: must be from 0 to 1000000" in plain(summary)


def test_admin_tab_is_for_admins_only_and_the_backend_says_so_too(env):
    import gradio as gr

    tab = _tab(env)
    with gr.Blocks():
        tab.build()
    assert tab.ctx.gates == [(tab.tab, "user.manage", False)]  # the page load hides it from non-admins
    alice = request_for("alice")
    assert "alice (analyst) may not manage users" in plain(tab.on_role("alice", "admin", alice))
    rows, summary = tab.on_audit("", "", "", "", "", 1, alice)
    assert rows == [] and "may not read the audit log" in plain(summary)
    info, password = tab.on_add("mallory", "admin", alice)
    assert "may not manage users" in plain(info) and password == ""
    assert "mallory" not in [u.name for u in env.ws.users.list(env.actor("admin"))]
