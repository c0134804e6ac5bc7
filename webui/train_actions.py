"""The Train tab's own rows: "Open from repo" (fill LlamaBoard's form from a config on main or a change request's head),
"Save to repo" (the form as a reviewed config: a new change request, or a new revision of one) and "Launch" (an
approved, merged one)."""

from __future__ import annotations

import json
import posixpath
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
from webui.errors import as_message, as_warning, invalid, problems, shows_errors
from webui.render import error_md, md_code, md_text

if TYPE_CHECKING:
    from backend.auth import Actor


LOCAL = "this machine (local runner)"
NEW_REQUEST = "a new change request"


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


def _unchanged(choices: list, shown: list | None) -> bool:
    return shown is not None and [list(c) for c in choices] == [list(c) for c in shown]


def _listed(choices: list, shown: list | None, current: Any = None) -> Any:
    """A dropdown's choices as its focus answers them: unchanged when the page already lists them; new ones with no
    option chosen otherwise. (Gradio filters new choices by the chosen option's label, so a list refreshed while an
    option is chosen would show only that option: e.g. Launch's list after a first launch, without the new request.)
    With `current`, a chosen option is kept when it is still offered (a first load, before anything was listed)."""
    if _unchanged(choices, shown):
        return gr.update()
    ids = [c[1] for c in choices]
    keep = shown is None and current is not None and current in ids
    return gr.update(choices=choices, value=current if keep else None)


def _opened(value: str | dict | None) -> dict | None:
    """The opened config's record (the hidden field's JSON); None when nothing was opened or it is unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            return None
    return value if isinstance(value, dict) and {"path", "commit", "yaml", "form"} <= set(value) else None


class TrainActions:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.board: lb.LlamaBoard | None = None

    def build(self, board: lb.LlamaBoard) -> None:
        """Rows under LlamaBoard's Train form (not registered in its Manager: its relabelling would clobber them)."""
        self.board = board
        with gr.Group(elem_id="lfops-open"):
            gr.Markdown(
                "### Open from repo — fill the form from a config on main or a change request; what you change is "
                "reviewed against it"
            )
            with gr.Row(equal_height=True):
                self.open_choice = gr.Dropdown(
                    label="Config to open", choices=[], scale=5, filterable=False, elem_id="lfops-open-choice"
                )
                self.open_btn = gr.Button("Open", scale=1, elem_id="lfops-open-btn")
            self.open_result = gr.Markdown(elem_id="lfops-open-result")
        # What was opened, as JSON: its key, path, commit, text and the form as it was filled (the baseline of the
        # edit). A hidden field rather than a gr.State, so the form's draft keeps it over a reload (webui.places).
        self.opened = gr.Textbox(visible=False, elem_id="lfops-opened")
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
            self.target = gr.Dropdown(
                label="Save as",
                choices=[(NEW_REQUEST, "")],
                value="",
                filterable=False,
                elem_id="lfops-save-target",
                info="a new change request, or a new revision of one of yours under review (the same request, "
                "its review history kept; it needs a new approval)",
            )
            self.result = gr.Markdown(elem_id="lfops-save-result")
            self.saved_yaml = gr.Code(label="Saved config", language="yaml", visible=False, elem_id="lfops-saved")
        form = sorted(board.train_inputs, key=lambda c: c._id)
        self.open_btn.click(
            self.on_open,
            set(form) | {self.open_choice},
            [*form, self.opened, self.open_result, self.target, self.name],
            api_name="open_from_repo",
        ).then(self.on_reopen, [self.opened], form)  # after LlamaBoard's own model-name change filled in its guesses
        choosers = [self.open_choice, self.target]
        self.listed_openable = gr.State(None)  # the choices the page lists (see _listed)
        openable = dict(
            fn=self.on_openable,
            inputs=[self.listed_openable],
            outputs=[*choosers, self.listed_openable],
        )
        self.ctx.on_tab_load(**openable)
        self.open_choice.focus(**openable)
        self.target.focus(**openable)
        self.save_btn.click(
            self.on_save,
            board.train_inputs | {self.name, self.message, self.opened, self.target},
            [self.result, self.saved_yaml],
            concurrency_limit=8,  # two analysts saving at once are not queued behind each other
            api_name="save_to_repo",
        )
        with gr.Group(elem_id="lfops-launch"):
            gr.Markdown("### Launch — train an approved config exactly as it was merged")
            with gr.Row(equal_height=True):
                self.launch_choice = gr.Dropdown(
                    label="Approved and merged change request",
                    choices=[],
                    scale=4,
                    filterable=False,  # filtering by the chosen entry's text hid every other entry
                    elem_id="lfops-launch-choice",
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
        self.listed_launchable = gr.State(None)  # the choices the page lists (see _listed)
        offer = dict(
            fn=self.on_offer,
            inputs=[self.launch_choice, self.listed_launchable],
            outputs=[self.launch_choice, self.launch_btn, self.launch_result, self.listed_launchable],
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

    def on_offer(self, current: int | None, shown: list | None, request: gr.Request) -> tuple[Any, Any, str, list]:
        """What this user may launch: merged change requests; the button stays off, with the reason, otherwise."""
        choices, reason = self._offer(request)
        return (
            _listed(choices, shown, current),
            gr.update(interactive=not reason),
            md_text(reason) if reason else "",
            choices,
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

    # ---- Open from repo -----------------------------------------------------------------------------------------

    @shows_errors(as_warning(gr.update(), gr.update(), None))  # None: the next focus lists afresh
    def on_openable(self, shown: list | None, request: gr.Request) -> tuple[Any, Any, list]:
        """The configs this user can open, and the change requests of theirs that a save can revise."""
        actor = self.ctx.auth.actor(request)
        sources = [(s.label, s.key) for s in (self.ctx.ws.changes.openable(actor) if actor else [])]
        targets = [(NEW_REQUEST, ""), *([] if actor is None else self._own_requests(actor))]
        # This runs on focus: the value is set only along with new choices (see _listed), never on its own, where
        # it would race the user's pick of an option.
        was_sources, was_targets = shown if shown else (None, None)
        target = gr.update() if _unchanged(targets, was_targets) else gr.update(choices=targets)
        return _listed(sources, was_sources), target, [sources, targets]  # "Save as" keeps "a new change request"

    def _own_requests(self, actor: Actor) -> list[tuple[str, str]]:
        views = self.ctx.ws.changes.list(actor, author=actor.name)
        return [(f"update change request #{v.id} ({v.config_path})", str(v.id)) for v in views if v.status.under_review]

    @shows_errors(
        lambda lines, self, **_: {self.open_result: error_md("Not opened", lines)}  # the form stays as it was
    )
    def on_open(self, data: dict, request: gr.Request) -> dict:
        """Fill the form from the chosen config; remember it, so the save is reviewed against it."""
        assert self.board is not None
        actor = self.ctx.auth.actor(request)
        key = data.get(self.open_choice)
        if not key:
            raise invalid("config to open", "choose one from the list")
        source, config = self.ctx.ws.changes.open_config(actor, str(key))
        values = lb.form_from_args(config.args)
        if not data.get(self.board.elem("train.output_dir")):  # LlamaBoard needs one; the config keeps its own
            values["train.output_dir"] = posixpath.splitext(posixpath.basename(source.path))[0]
        form = {**lb.form_ids(self.board, data), **values}
        opened = {"key": source.key, "path": source.path, "commit": source.commit, "yaml": config.canonical_yaml()}
        opened["form"] = form
        opened["filled"] = sorted(values)  # the fields Open set (on_reopen sets only those again)
        out: dict = {self.board.elem(elem_id): value for elem_id, value in values.items()}
        out[self.opened] = json.dumps(opened)
        own = (
            actor is not None
            and source.change_request is not None
            and any(t[1] == str(source.change_request) for t in self._own_requests(actor))
        )
        out[self.target] = gr.update(value=str(source.change_request)) if own else gr.update(value="")
        out[self.name] = gr.update() if own else posixpath.splitext(posixpath.basename(source.path))[0] + "-new"
        out[self.open_result] = (
            f"Opened {md_code(source.path)} at {md_code(source.commit[:12])}"
            + (f" (change request #{source.change_request})" if source.change_request else "")
            + ". Change what you want and save: the review compares with this config; what the form does not show "
            "is kept as it is."
        )
        return out

    def on_reopen(self, opened: str | None) -> list[Any]:
        """The opened values again, over whatever LlamaBoard's model-name change guessed (model path, template)."""
        assert self.board is not None
        form = sorted(self.board.train_inputs, key=lambda c: c._id)
        opened = _opened(opened)
        if not opened:
            return [gr.update() for _ in form]
        values = {k: v for k, v in opened["form"].items() if k in opened.get("filled", ())}
        manager = self.board.engine.manager  # setting a field to what it has still fires its change (model name!)
        return [values.get(manager.get_id_by_elem(elem), gr.update()) for elem in form]

    # ---- Save ---------------------------------------------------------------------------------------------------

    @shows_errors(as_message("Not saved", gr.update(visible=False)))
    def on_save(self, data: dict, request: gr.Request) -> tuple[str, Any]:
        name = str(data.get(self.name) or "").strip()
        message = str(data.get(self.message) or "").strip()
        target = str(data.get(self.target) or "").strip()
        actor = self.ctx.auth.actor(request)
        result, config, notes = self.save(
            actor, data, name, message, opened=_opened(data.get(self.opened)), update=int(target) if target else None
        )
        verb = "Updated" if target else "Saved"
        lines = [
            f"**{verb}: change request #{result.change_request}** — a reviewer approves and merges it in the "
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
        self,
        actor: Actor | None,
        data: dict,
        name: str,
        message: str,
        opened: dict | None = None,
        update: int | None = None,
    ) -> tuple[SaveResult, TrainConfig, list[str]]:
        """The form, read as LlamaBoard reads it, saved as configs/<name>.yaml on a new branch with a change request
        (or, with `update`, as a new revision of that change request). With `opened`, the config it was opened from
        with what the form changed since."""
        assert self.board is not None
        if update is not None:
            view = self.ctx.ws.changes.get(actor, update)  # type: ignore[arg-type]
            name = posixpath.splitext(posixpath.basename(view.config_path))[0]
        if not name:
            raise invalid("config name", "give the config a name (it becomes configs/<name>.yaml)")
        check_name(name, "config name")
        if not message:
            raise invalid("message", "say what changes and why")
        if opened:
            # LlamaBoard wants a model name; an opened config names its model by path. (Setting the name in the form
            # would fire LlamaBoard's own name change, which replaces the path with its guess.)
            model_name = self.board.elem("top.model_name")
            data = {**data, model_name: data.get(model_name) or "Custom"}
            opened = {**opened, "form": {"top.model_name": "Custom", **opened["form"]}}
            if not opened["form"]["top.model_name"]:
                opened["form"]["top.model_name"] = "Custom"
            base = TrainConfig.parse(opened["yaml"], opened["path"])
            converted = lb.edited_args(self.board, opened["form"], data, base.args, name, self.ctx.workdir.root)
            metadata = {**base.metadata, "derived_from": opened["path"], "derived_from_commit": opened["commit"]}
        else:
            converted = lb.repo_args(self.board, data, name, self.ctx.workdir.root)
            metadata = {"source": "lfops webui (LlamaBoard form)"}
        if converted.problems:
            raise ValidationFailed(converted.problems)
        config = TrainConfig(converted.args, metadata)
        if update is not None:
            result = self.ctx.ws.changes.update(actor, update, config, message)  # type: ignore[arg-type]
        else:
            result = self.ctx.ws.changes.save(actor, config, name, message)  # type: ignore[arg-type]
        return result, config, converted.notes
