"""The Admin tab (shown to admins; every verb is authorised again in backend/): users (add, change role, deactivate,
reactivate, reset password), everyone's API tokens (revoke any), and the audit log with filters and pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import gradio as gr

from backend import audit
from backend.auth import ROLES
from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.fields import chosen_number
from webui.paging import PAGE, page_offset
from webui.render import md_text

USER_HEADERS = ["name", "role", "active", "email", "since"]
TOKEN_HEADERS = ["id", "prefix", "owner", "name", "scope", "state", "expires", "last used"]
AUDIT_HEADERS = ["id", "at (UTC)", "actor", "action", "subject", "detail"]
SHOWN_TO = "user.manage"  # the permission the tab is shown for; the backend checks each verb again


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


def _time(text: str | None, field: str) -> datetime | None:
    """A filter's time: ISO 8601 (2026-12-01 or 2026-12-01T10:00), UTC unless a zone is given; empty: none."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"{text!r} is not a time like 2026-12-01T10:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class AdminTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Admin", id="admin", elem_id="lfops-tab-admin") as self.tab:
            gr.Markdown("#### Users")
            self.users = gr.Dataframe(headers=USER_HEADERS, interactive=False, label="Users", elem_id="lfops-users")
            with gr.Row(equal_height=True):
                self.name = gr.Textbox(label="User name", scale=2, elem_id="lfops-admin-name")
                self.role = gr.Dropdown(label="Role", choices=list(ROLES), value="analyst", scale=1)
                self.add_btn = gr.Button("Add", variant="primary", scale=0, elem_id="lfops-user-add")
                self.role_btn = gr.Button("Change role", scale=0, elem_id="lfops-user-role")
                self.deactivate_btn = gr.Button("Deactivate", variant="stop", scale=0, elem_id="lfops-user-off")
                self.activate_btn = gr.Button("Activate", scale=0, elem_id="lfops-user-on")
                self.reset_btn = gr.Button("Reset password", scale=0, elem_id="lfops-user-reset")
            self.password = gr.Textbox(
                label="New password — shown only now: hand it over", interactive=False, elem_id="lfops-new-password"
            )
            self.user_info = gr.Markdown(elem_id="lfops-admin-user-info")

            gr.Markdown("#### API tokens (everyone's)")
            self.tokens = gr.Dataframe(
                headers=TOKEN_HEADERS, interactive=False, label="Tokens", elem_id="lfops-admin-tokens"
            )
            with gr.Row(equal_height=True):
                self.token_id = chosen_number("Token id", "lfops-token-id", scale=1)
                self.revoke_btn = gr.Button("Revoke", variant="stop", scale=0, elem_id="lfops-token-revoke")
            self.token_info = gr.Markdown(elem_id="lfops-admin-token-info")

            gr.Markdown("#### Audit log")
            with gr.Row(equal_height=True):
                self.f_actor = gr.Textbox(label="Actor", scale=1, elem_id="lfops-audit-actor")
                self.f_action = gr.Textbox(
                    label="Action", placeholder="user.role, or user. for all", scale=1, elem_id="lfops-audit-action"
                )
                self.f_subject = gr.Textbox(label="Subject", placeholder="user:alice, cr:3", scale=1)
                self.f_since = gr.Textbox(label="Since", placeholder="2026-12-01T10:00 (UTC)", scale=1)
                self.f_until = gr.Textbox(label="Until", scale=1)
                self.f_page = gr.Number(label="Page", value=1, precision=0, minimum=1, scale=0)
                self.search_btn = gr.Button("Search", scale=0, elem_id="lfops-audit-search")
            self.events = gr.Dataframe(
                headers=AUDIT_HEADERS, interactive=False, wrap=True, label="Events", elem_id="lfops-audit"
            )
            self.audit_info = gr.Markdown(elem_id="lfops-audit-info")

        users = dict(fn=self.on_users, inputs=None, outputs=[self.users])
        tokens = dict(fn=self.on_tokens, inputs=None, outputs=[self.tokens])
        filters = [self.f_actor, self.f_action, self.f_subject, self.f_since, self.f_until, self.f_page]
        search = dict(fn=self.on_audit, inputs=filters, outputs=[self.events, self.audit_info])
        self.ctx.on_tab_load(**users)
        self.ctx.on_tab_load(**tokens)
        self.ctx.on_tab_load(**search)
        self.search_btn.click(**search, api_name="audit_list")
        self.users.select(self.on_select_user, [self.users], [self.name, self.role])
        self.add_btn.click(
            self.on_add, [self.name, self.role], [self.user_info, self.password], api_name="user_add"
        ).then(**users)
        self.role_btn.click(self.on_role, [self.name, self.role], [self.user_info], api_name="user_role").then(**users)
        self.deactivate_btn.click(self.on_deactivate, [self.name], [self.user_info], api_name="user_deactivate").then(
            **users
        )
        self.activate_btn.click(self.on_activate, [self.name], [self.user_info], api_name="user_activate").then(**users)
        self.reset_btn.click(self.on_reset, [self.name], [self.user_info, self.password], api_name="user_reset")
        self.revoke_btn.click(self.on_revoke, [self.token_id], [self.token_info], api_name="token_revoke").then(
            **tokens
        )
        self.ctx.gate(self.tab, SHOWN_TO)

    # ---- handlers -----------------------------------------------------------------------------------------------

    def _actor(self, request: gr.Request) -> Any:
        return self.ctx.auth.actor(request)

    def _hidden_from(self, request: gr.Request) -> bool:
        """The tab is not shown to this user: its lists, filled on every page load, stay empty rather than raise a
        refusal notice on everyone else's page (the backend would refuse them)."""
        actor = self._actor(request)
        return actor is None or not actor.can(SHOWN_TO)

    @shows_errors(as_warning([]))
    def on_users(self, request: gr.Request) -> list[list[Any]]:
        if self._hidden_from(request):
            return []
        users = self.ctx.ws.users.list(self._actor(request))
        return [[u.name, u.role, "yes" if u.active else "no", u.email, _when(u.created_at)] for u in users]

    @shows_errors(as_warning([]))
    def on_tokens(self, request: gr.Request) -> list[list[Any]]:
        if self._hidden_from(request):
            return []
        views = self.ctx.ws.tokens.list(self._actor(request), everyone=True)
        return [
            [v.id, v.prefix, v.owner, v.name, v.scope, v.state, _when(v.expires_at), _when(v.last_used_at)]
            for v in views
        ]

    @shows_errors(lambda lines, **_: ([], "**Not searched:** " + md_text("; ".join(lines))))
    def on_audit(
        self,
        actor: str | None,
        action: str | None,
        subject: str | None,
        since: str | None,
        until: str | None,
        page: float | None,
        request: gr.Request,
    ) -> tuple[list[list[Any]], str]:
        where = audit.AuditFilter(
            actor=(actor or "").strip(),
            action=(action or "").strip(),
            subject=(subject or "").strip(),
            since=_time(since, "since"),
            until=_time(until, "until"),
        )
        offset = page_offset(page)
        found = audit.search(self.ctx.ws.store, self._actor(request), where, PAGE, offset)
        rows = [
            [e.id, f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.subject, json.dumps(e.detail, sort_keys=True)]
            for e in found.items
        ]
        more = " · more on the next page" if found.next_offset is not None else ""
        return rows, f"page {offset // PAGE + 1}: {len(rows)} events{more}"

    @staticmethod
    def on_select_user(table: Any, evt: gr.SelectData) -> tuple[Any, Any]:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return str(table.iloc[row, 0]), str(table.iloc[row, 1])
        except (AttributeError, IndexError, ValueError, TypeError):
            return gr.update(), gr.update()

    @staticmethod
    def _name(name: str | None) -> str:
        if not (name or "").strip():
            raise invalid("user name", "type one or choose a user in the list")
        return (name or "").strip()

    @shows_errors(as_message("User not added", ""))
    def on_add(self, name: str | None, role: str | None, request: gr.Request) -> tuple[str, str]:
        view, password = self.ctx.ws.users.add(self._actor(request), self._name(name), role or "")
        return f"**{md_text(view.name)}** added as {md_text(view.role)}", password

    @shows_errors(as_message("Role not changed"))
    def on_role(self, name: str | None, role: str | None, request: gr.Request) -> str:
        view = self.ctx.ws.users.set_role(self._actor(request), self._name(name), role or "")
        return f"**{md_text(view.name)}** is now {md_text(view.role)}"

    @shows_errors(as_message("Not deactivated"))
    def on_deactivate(self, name: str | None, request: gr.Request) -> str:
        view = self.ctx.ws.users.set_active(self._actor(request), self._name(name), False)
        return f"**{md_text(view.name)}** deactivated: sign-in refused, sessions ended, API tokens refused"

    @shows_errors(as_message("Not activated"))
    def on_activate(self, name: str | None, request: gr.Request) -> str:
        view = self.ctx.ws.users.set_active(self._actor(request), self._name(name), True)
        return f"**{md_text(view.name)}** active again"

    @shows_errors(as_message("Password not reset", ""))
    def on_reset(self, name: str | None, request: gr.Request) -> tuple[str, str]:
        name = self._name(name)
        password = self.ctx.ws.users.reset_password(self._actor(request), name)
        return f"password of **{md_text(name)}** reset; their sessions ended", password

    @shows_errors(as_message("Not revoked"))
    def on_revoke(self, token_id: float | None, request: gr.Request) -> str:
        if token_id is None or int(token_id) < 1:
            raise invalid("token id", "type the id of a token from the list")
        view = self.ctx.ws.tokens.revoke(self._actor(request), int(token_id))
        return f"token #{view.id} {md_text(view.name)} of {md_text(view.owner)} revoked"
