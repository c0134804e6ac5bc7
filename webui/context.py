"""What the WebUI's tabs share: the workspace, who is signed in, LlamaBoard's working directory, and the page-load
hooks each tab registers while it is built (components offered by role, data loaded with the page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from backend import audit
from backend.auth import ACTIONS, Actor, actor_by_name, require
from backend.workspace import Workspace
from webui.auth import PASSWORD, Authenticator
from webui.errors import as_warning, shows_errors
from webui.render import md_text
from webui.workdir import Workdir

# What LlamaBoard's own actions need, in backend.auth's permission names.
GUARDED = {"chat.load": "read", "llamaboard.export": "run.launch"}


@dataclass
class AppContext:
    ws: Workspace
    auth: Authenticator
    workdir: Workdir
    gates: list[tuple[Any, str, bool]] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)

    def gate(self, component: Any, permission: str, invert: bool = False) -> None:
        """Show `component` only to users with `permission` (or only to those without it). The backend checks again."""
        self.gates.append((component, permission, invert))

    def on_tab_load(self, **event: Any) -> None:
        self.loads.append(event)

    @shows_errors(lambda lines, **_: "refused: " + "; ".join(lines))
    def guard(self, user: str, action: str, detail: dict) -> str:
        """LlamaBoard's Chat and Export: authorised for the signed-in user and audited; a refusal is returned."""
        with self.ws.store.session() as s:
            actor = require(actor_by_name(s, user) if user else None, GUARDED[action])
            audit.record(s, actor, action, f"user:{actor.name}", **{k: str(v) for k, v in detail.items()})
        return ""

    @shows_errors(as_warning(None, title="data/ of main could not be exported"))
    def refresh_data(self) -> None:
        """Export data/ of main again if main moved (a merge, a push), so LlamaBoard lists main's datasets."""
        self.workdir.refresh_data()

    @shows_errors(as_warning(None))
    def signed_in(self, request: gr.Request) -> Actor | None:
        """The user of this event, or None (with a warning when they are no longer active)."""
        return self.auth.actor(request)

    def on_load(self, request: gr.Request) -> list[Any]:
        """Every page load: fresh data/ for LlamaBoard, who is signed in, and what their role is offered."""
        self.refresh_data()  # main may have moved (a merge from the CLI): LlamaBoard lists its datasets
        actor = self.signed_in(request)
        if actor is None:
            who = "Not signed in: Save, Review and Launch need a user."
        else:
            can = [ACTIONS[p] for p in ("config.save", "review.decide", "review.merge", "run.launch") if actor.can(p)]
            who = f"Signed in as **{md_text(actor.name)}** ({actor.role}: may {', '.join(can)})"
        if self.auth.mode == PASSWORD and actor is not None:
            who += " · <a href='logout' id='lfops-signout'>Sign out</a>"
        updates: list[Any] = [who]
        for _component, permission, invert in self.gates:
            allowed = actor is not None and actor.can(permission)
            updates.append(gr.update(visible=allowed != invert))
        return updates
