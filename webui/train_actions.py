"""The Train tab's own rows: "Save to repo" (the form as a reviewed config) and "Launch" (an approved, merged one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from backend.config import TrainConfig
from backend.errors import LfopsError, ValidationFailed
from backend.gitstore import check_name
from backend.review import SaveResult
from backend.review_status import ChangeRequestStatus
from backend.runners.base import Resources
from webui import llamaboard as lb
from webui.context import AppContext
from webui.errors import as_message, invalid, problems, shows_errors
from webui.render import error_md, md_code, md_text

if TYPE_CHECKING:
    from backend.auth import Actor


LOCAL = "this machine (local runner)"


def _resources(profile: str | None, gpus: float | None, nodes: float | None) -> Resources:
    """The launch form's Where/GPUs/Nodes; on this machine GPUs and nodes do not apply."""
    if not profile:
        return Resources()
    return Resources.from_user(
        gpus_per_node=gpus, nodes=nodes, profile=profile, names={"gpus_per_node": "GPUs per node", "nodes": "Nodes"}
    )


def _form_problems(exc: LfopsError) -> list[str]:
    """A form field's problems as sentences ("GPUs per node must be 0 or more"); other errors as they are."""
    return problems(exc, sentences=True)


class TrainActions:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.board: lb.LlamaBoard | None = None

    def build(self, board: lb.LlamaBoard) -> None:
        """Rows under LlamaBoard's Train form (not registered in its Manager: its relabelling would clobber them)."""
        self.board = board
        with gr.Group(elem_id="lfops-save"):
            gr.Markdown("### Save to repo — the form becomes a config file on a branch, reviewed before it can run")
            with gr.Row(equal_height=True):
                self.name = gr.Textbox(
                    label="Config name", placeholder="e.g. demo-lr-2e-4", scale=1, elem_id="lfops-config-name"
                )
                self.message = gr.Textbox(
                    label="Message", placeholder="what changes and why", scale=3, elem_id="lfops-config-message"
                )
                self.save_btn = gr.Button("Save to repo", variant="primary", scale=1, elem_id="lfops-save-btn")
            self.result = gr.Markdown(elem_id="lfops-save-result")
            self.saved_yaml = gr.Code(label="Saved config", language="yaml", visible=False, elem_id="lfops-saved")
        self.save_btn.click(
            self.on_save,
            board.train_inputs | {self.name, self.message},
            [self.result, self.saved_yaml],
            concurrency_limit=8,  # two analysts saving at once are not queued behind each other
            api_name="save_to_repo",
        )
        with gr.Group(elem_id="lfops-launch"):
            gr.Markdown("### Launch — train an approved config exactly as it was merged")
            with gr.Row(equal_height=True):
                self.launch_choice = gr.Dropdown(
                    label="Approved and merged change request", choices=[], scale=4, elem_id="lfops-launch-choice"
                )
                self.launch_btn = gr.Button("Launch", interactive=False, scale=1, elem_id="lfops-launch-btn")
            profiles = sorted(self.ctx.ws.settings.cluster_profiles)
            with gr.Row(equal_height=True, visible=bool(profiles)):
                self.launch_where = gr.Dropdown(
                    label="Where",
                    choices=[(LOCAL, "")] + [(f"cluster: {p}", p) for p in profiles],
                    value="",
                    scale=2,
                    elem_id="lfops-launch-where",
                )
                self.launch_gpus = gr.Number(label="GPUs per node", value=1, precision=0, minimum=0, scale=1)
                self.launch_nodes = gr.Number(label="Nodes", value=1, precision=0, minimum=1, scale=1)
                self.preview_btn = gr.Button("Preview Kubernetes objects", scale=1, elem_id="lfops-launch-preview")
            self.launch_result = gr.Markdown(elem_id="lfops-launch-result")
            self.manifest = gr.Code(label="What the launch creates", language="yaml", visible=False)
            with gr.Accordion(
                "Admin: launch a commit outside the approval policy (audited)", open=False, elem_id="lfops-override"
            ) as self.override_box:
                with gr.Row(equal_height=True):
                    self.override_commit = gr.Textbox(label="Commit or change request #", scale=2)
                    self.override_path = gr.Textbox(label="Config path", placeholder="configs/<name>.yaml", scale=2)
                    self.override_reason = gr.Textbox(label="Reason", scale=3)
                    self.override_btn = gr.Button("Launch with override", variant="stop", scale=1)
        self.ctx.gate(self.save_btn, "config.save")
        self.ctx.gate(self.override_box, "run.override")
        offer = dict(
            fn=self.on_offer,
            inputs=[self.launch_choice],
            outputs=[self.launch_choice, self.launch_btn, self.launch_result],
        )
        self.ctx.on_tab_load(**offer)
        self.launch_choice.focus(**offer)
        where = [self.launch_where, self.launch_gpus, self.launch_nodes]
        self.launch_btn.click(
            self.on_launch, [self.launch_choice, *where], [self.launch_result], concurrency_limit=4, api_name="launch"
        )
        self.preview_btn.click(
            self.on_preview, [self.launch_choice, *where], [self.manifest, self.launch_result], api_name="preview"
        )
        self.override_btn.click(
            self.on_override,
            [self.override_commit, self.override_path, self.override_reason],
            [self.launch_result],
            concurrency_limit=4,
            api_name="launch_override",
        )

    # ---- Launch -------------------------------------------------------------------------------------------------

    def on_offer(self, current: int | None, request: gr.Request) -> tuple[Any, Any, str]:
        """What this user may launch: merged change requests; the button stays off, with the reason, otherwise."""
        choices, reason = self._offer(request)
        ids = [c[1] for c in choices]
        value = current if current in ids else (ids[0] if ids else None)
        return (
            gr.update(choices=choices, value=value),
            gr.update(interactive=not reason),
            md_text(reason) if reason else "",
        )

    @shows_errors(lambda lines, **_: ([], "; ".join(lines)))
    def _offer(self, request: gr.Request) -> tuple[list[tuple[str, int]], str]:
        """The merged change requests, and why the user cannot launch ("" when they can)."""
        actor = self.ctx.auth.actor(request)
        merged = self.ctx.ws.changes.list(actor, status=ChangeRequestStatus.MERGED)
        choices = [(f"#{v.id} {v.config_path} (merge {v.merged_commit[:10]}) {v.title}", v.id) for v in merged]
        if not actor.can("run.launch"):
            return choices, "Your role may not launch runs."
        if not choices:
            return choices, "Nothing to launch yet: no change request has been approved and merged."
        return choices, ""

    @shows_errors(as_message("Not launched"), sentences=True)
    def on_launch(
        self, cr_id: int | None, profile: str = "", gpus: float = 1, nodes: float = 1, request: gr.Request = None
    ) -> str:
        if not cr_id:
            raise invalid("change request", "choose an approved, merged one")
        return self._launch(request, int(cr_id), resources=_resources(profile, gpus, nodes))

    @shows_errors(lambda lines, **_: (gr.update(visible=False), error_md("No preview", lines)))
    def on_preview(
        self, cr_id: int | None, profile: str, gpus: float, nodes: float, request: gr.Request
    ) -> tuple[Any, str]:
        """The Job (and ConfigMap, Service) a cluster launch would create, shown for review before launching."""
        self.ctx.auth.actor(request)
        if not cr_id:
            raise invalid("change request", "choose an approved, merged one")
        if not profile:
            raise invalid("where", "choose a cluster profile to preview its Kubernetes objects")
        text = self.ctx.ws.runs.preview(int(cr_id), resources=_resources(profile, gpus, nodes))
        return gr.update(value=text, visible=True), ""

    @shows_errors(as_message("Not launched"))
    def on_override(self, target: str, config_path: str, reason: str, request: gr.Request) -> str:
        """An admin's launch without the approval policy: the backend checks the role and the reason, and audits."""
        if not (target or "").strip():
            raise invalid("target", "give a commit or a change request number")
        return self._launch(request, target.strip(), (config_path or "").strip() or None, reason or "")

    def _launch(
        self,
        request: gr.Request,
        target: int | str,
        config_path: str | None = None,
        override: str | None = None,
        resources: Resources | None = None,
    ) -> str:
        run = self.ctx.ws.runs.launch(
            self.ctx.auth.actor(request),
            target,
            config_path=config_path,
            override_reason=override,
            resources=resources,
        )
        return (
            f"**Run #{run.id} {run.status}** on the {md_text(run.backend)} runner: {md_code(run.config_path)} at "
            f"commit {md_code(run.commit[:12])}. Follow it in Runs & lineage."
        )

    # ---- Save ---------------------------------------------------------------------------------------------------

    @shows_errors(as_message("Not saved", gr.update(visible=False)))
    def on_save(self, data: dict, request: gr.Request) -> tuple[str, Any]:
        name = str(data.get(self.name) or "").strip()
        message = str(data.get(self.message) or "").strip()
        actor = self.ctx.auth.actor(request)
        result, config, notes = self.save(actor, data, name, message)
        lines = [
            f"**Saved: change request #{result.change_request}** — a reviewer approves and merges it in the "
            "Review tab.",
            f"- branch {md_code(result.branch)}",
            f"- commit {md_code(result.commit)}",
            f"- file {md_code(result.config_path)}, config hash {md_code(result.config_hash[:12])}",
        ]
        lines += [f"- {note}" for note in notes]
        lines += [f"- warning: {w}" for w in result.warnings]
        lines += [f"- {md_text(note)}" for note in result.preflight]  # a note; Launch refuses what cannot run
        return "\n".join(lines), gr.update(value=config.canonical_yaml(), visible=True)

    def save(
        self, actor: Actor | None, data: dict, name: str, message: str
    ) -> tuple[SaveResult, TrainConfig, list[str]]:
        """The form, read as LlamaBoard reads it, saved as configs/<name>.yaml on a new branch with a change request."""
        assert self.board is not None
        if not name:
            raise invalid("config name", "give the config a name (it becomes configs/<name>.yaml)")
        check_name(name, "config name")
        if not message:
            raise invalid("message", "say what changes and why")
        converted = lb.repo_args(self.board, data, name, self.ctx.workdir.root)
        if converted.problems:
            raise ValidationFailed(converted.problems)
        config = TrainConfig(converted.args, {"source": "lfops webui (LlamaBoard form)"})
        result = self.ctx.ws.changes.save(actor, config, name, message)  # type: ignore[arg-type]
        return result, config, converted.notes
