"""The Runs & lineage tab: runs with filters, one run live (status, progress, curves, log; Cancel while it may be
cancelled), a comparison of runs, and where a model came from, drawn as a graph. Each section is a thin view over
`Workspace.runs`, `.lineage` and `.registry`; a new backend question becomes one more `_build_*` section here.

Live without polling: the browser long-polls (webui.live) until a run appears, changes status or logs a step, then
clicks the tab's hidden wake button, which renders what the page shows at that moment (its filters, its run); while
nothing runs, the page waits without any Gradio event pending.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from backend.places import RUNS_TAB
from backend.runners.base import RunState
from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.fields import chosen_number
from webui.live import FOLLOW_JS, WAKE_ID, ChangeWaiter, PageView, PageViews
from webui.paging import PAGE, page_offset
from webui.plots import curves_caption, curves_figure, curves_frame, lineage_figure, progress_html
from webui.render import md_code, md_text

if TYPE_CHECKING:
    from backend.auth import Actor
    from backend.runs import Moved, RunView

RUN_HEADERS = ["#", "status", "config", "commit", "change request", "submitted by", "final loss", "started", "seconds"]
DEFAULT_CURVES = ("loss", "eval_loss")
LOG_LINES = 200


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _compare_failed(lines: list[str], **_arguments: Any) -> tuple[pd.DataFrame, None]:
    """A comparison that cannot be made: a warning, and the reasons in the table."""
    gr.Warning("; ".join(lines))
    return pd.DataFrame({"problem": lines}), None


def _plot(curves: dict[str, list[tuple[int, float]]]) -> Any:
    """The line plot's update: the points, and a caption with the last of each (a new caption redraws the plot)."""
    return gr.update(value=curves_frame(curves), caption=curves_caption(curves))


def _no_run(message: str) -> tuple:
    """The run panel with no run in it (`message` in place of the run's facts)."""
    return (
        message,
        progress_html(None),
        gr.update(choices=[], value=[]),
        _plot({}),
        "",
        gr.update(visible=False),
        gr.update(visible=False),
        "",
    )


class RunsTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.views = PageViews()
        self.waiter = ChangeWaiter(ctx.ws.runs.changes)

    def build(self) -> None:
        with gr.Tab("Runs & lineage", id=RUNS_TAB, elem_id="lfops-tab-runs"):
            self._build_runs()
            self._build_compare()
            self._build_lineage()
        self.lineage_link.click(
            self.on_run_lineage, [self.model_ref], [self.term, self.lineage_info, self.lineage_plot]
        )

    def _build_runs(self) -> None:
        self.seen = gr.State(-1)  # the revision of the runs (backend.runs.changes) this page shows
        self.model_ref = gr.State("")  # the model version the shown run registered
        # Clicked by the page's own long poll (webui.live.FOLLOW_JS) when it has something to show; hidden by CSS
        # (webui.render), as an invisible component is not in the page at all.
        self.wake = gr.Button("Update", elem_id=WAKE_ID)
        with gr.Row(equal_height=True):
            self.status = gr.Dropdown(
                [("all", "all"), *((s.label, s.value) for s in RunState)], value="all", label="Status", scale=1
            )
            self.config = gr.Textbox(label="Config", placeholder="name or configs/<name>.yaml", scale=1)
            self.submitter = gr.Textbox(label="Submitted by", placeholder="user name", scale=1)
            self.page = gr.Number(
                label=f"Page ({PAGE} a page)", value=1, precision=0, minimum=1, scale=0, elem_id="lfops-runs-page"
            )
            self.refresh = gr.Button("Refresh", scale=0, elem_id="lfops-runs-refresh")
        with gr.Row(equal_height=True):  # hyperparameter search (backend.runs.params): filters ANDed
            self.params = gr.Textbox(
                label="Hyperparameters",
                placeholder="lora_rank=16, learning_rate=1e-4..3e-4",
                scale=3,
                elem_id="lfops-runs-params",
            )
            self.order = gr.Dropdown(["newest", "loss"], value="newest", label="Order", scale=1)
        self.table = gr.Dataframe(
            headers=RUN_HEADERS, interactive=False, wrap=True, label="Runs (click a row)", elem_id="lfops-runs-table"
        )
        with gr.Row(equal_height=True):
            self.run_id = chosen_number("Run #", "lfops-run-id", scale=1)
            self.show_btn = gr.Button("Show", scale=0, elem_id="lfops-run-show")
            self.cancel_btn = gr.Button(
                "Cancel run", variant="stop", scale=0, visible=False, elem_id="lfops-run-cancel"
            )
        self.run_info = gr.Markdown(elem_id="lfops-run-info")
        self.progress = gr.HTML(progress_html(None), elem_id="lfops-run-progress")
        self.lineage_link = gr.Button("Lineage of this model", visible=False, size="sm", elem_id="lfops-run-lineage")
        self.curves_pick = gr.Dropdown(
            choices=[], value=[], multiselect=True, label="Curves", elem_id="lfops-run-curves"
        )
        self.run_plot = gr.LinePlot(
            curves_frame({}),
            x="step",
            y="value",
            color="metric",
            label="Training curves",
            tooltip="all",
            elem_id="lfops-run-plot",
        )
        self.run_log = gr.Textbox(
            label=f"Log (last {LOG_LINES} lines)",
            lines=12,
            max_lines=12,
            interactive=False,
            autoscroll=True,
            show_copy_button=True,
            elem_id="lfops-run-log",
        )
        panel = [
            self.run_info,
            self.progress,
            self.curves_pick,
            self.run_plot,
            self.run_log,
            self.cancel_btn,
            self.lineage_link,
            self.model_ref,
        ]
        filters = [self.status, self.config, self.submitter, self.page, self.params, self.order]
        listing = dict(fn=self.on_list, inputs=filters, outputs=[self.table])
        self.refresh.click(**listing, api_name="runs_list")
        self.status.change(**listing)
        self.config.submit(**listing)
        self.submitter.submit(**listing)
        self.page.submit(**listing)
        self.params.submit(**listing)
        self.order.change(**listing)
        self.ctx.on_tab_load(fn=self.on_open, inputs=filters, outputs=[self.seen, self.table])
        show = dict(fn=self.on_show, inputs=[self.run_id, self.curves_pick], outputs=panel)
        self.show_btn.click(**show, api_name="run_show")
        self.run_id.submit(**show)
        self.table.select(self.on_select, [self.table], [self.run_id]).then(**show)
        self.curves_pick.input(self.on_curves, [self.run_id, self.curves_pick], [self.run_plot])
        self.cancel_btn.click(self.on_cancel, [self.run_id], [self.run_info], api_name="run_cancel").then(**show).then(
            **listing
        )
        # The page's long poll is plain HTTP (webui.live): no Gradio event is pending while it waits. Its wake renders
        # the page (quickly; only while it renders are the outputs busy).
        self.ctx.on_tab_load(fn=None, js=FOLLOW_JS)
        self.wake.click(
            self.on_pulse,
            [self.seen],
            [self.seen, self.table, *panel],
            show_progress="hidden",
            concurrency_limit=None,
        )

    def _build_compare(self) -> None:
        gr.Markdown("### Compare runs")
        with gr.Row(equal_height=True):
            self.compare_ids = gr.Textbox(label="Run numbers", placeholder="e.g. 3, 5", scale=3)
            self.compare_btn = gr.Button("Compare", scale=0, elem_id="lfops-compare-btn")
        self.compare_table = gr.Dataframe(
            headers=["parameter", "run", "run"], interactive=False, wrap=True, elem_id="lfops-compare-table"
        )
        self.compare_plot = gr.Plot(label="Loss of the compared runs")
        self.compare_btn.click(
            self.on_compare, [self.compare_ids], [self.compare_table, self.compare_plot], api_name="runs_compare"
        )

    def _build_lineage(self) -> None:
        gr.Markdown("### Lineage — where a model came from, or what came from a commit or dataset version")
        with gr.Row(equal_height=True):
            self.term = gr.Dropdown(
                label="Model (name:vN), commit or dataset version (sha256:...)",
                choices=[],
                allow_custom_value=True,
                scale=3,
                elem_id="lfops-lineage-term",
            )
            self.lineage_btn = gr.Button("Show lineage", scale=0, elem_id="lfops-lineage-btn")
        self.lineage_info = gr.Markdown(elem_id="lfops-lineage-info")
        self.lineage_plot = gr.Plot(label="Lineage", elem_id="lfops-lineage-plot")
        models = dict(fn=self.on_models, inputs=None, outputs=[self.term])
        self.ctx.on_tab_load(**models)
        self.term.focus(**models)
        self.lineage_btn.click(self.on_lineage, [self.term], [self.lineage_info, self.lineage_plot], api_name="lineage")

    # ---- runs ---------------------------------------------------------------------------------------------------

    @shows_errors(as_warning([]))
    def on_list(
        self,
        status: str,
        config: str,
        submitter: str,
        request: gr.Request,
        page: float | None = 1,
        params: str = "",
        order: str = "newest",
    ) -> list[list[Any]]:
        filters = dict(status=status, config=config, submitter=submitter, page=page, params=params, order=order)
        self.views.update(_session(request), **filters)
        return self._rows(self.ctx.auth.actor(request), PageView(**filters))

    def on_open(
        self,
        status: str,
        config: str,
        submitter: str,
        page: float | None,
        request: gr.Request,
        params: str = "",
        order: str = "newest",
    ) -> tuple:
        """Page load: the list, and the revision it is as of (taken first: a change in between is shown next)."""
        revision = self.ctx.ws.runs.changes.revision
        return revision, self.on_list(status, config, submitter, request, page, params, order)

    def _rows(self, actor: Actor | None, view: PageView) -> list[list[Any]]:
        runs = self.ctx.ws.runs.list(
            actor,
            status=None if view.status in (None, "", "all") else view.status,
            config=(view.config or "").strip() or None,
            submitted_by=(view.submitter or "").strip() or None,
            params=[f for f in re.split(r"[,\s]+", view.params or "") if f],
            order=view.order or "newest",
            limit=PAGE,
            offset=page_offset(view.page),
        )
        return [self._row(r) for r in runs]

    @staticmethod
    def _row(r: RunView) -> list[Any]:
        started = f"{r.started_at:%Y-%m-%d %H:%M}" if r.started_at else ""
        return [
            r.id,
            RunState(r.status).label,
            r.config_path,
            r.commit[:10],
            f"#{r.change_request_id}" if r.change_request_id else "",
            r.submitted_by,
            _fmt(r.final_loss),
            started,
            _fmt(round(r.duration_s)) if r.duration_s is not None else "",
        ]

    @staticmethod
    def on_select(table: Any, evt: gr.SelectData) -> Any:
        """A click anywhere on a row picks that row's run."""
        if isinstance(evt.row_value, (list, tuple)) and evt.row_value:
            try:
                return int(evt.row_value[0])
            except (ValueError, TypeError):
                pass
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return int(table.iloc[row, 0])
        except (AttributeError, IndexError, ValueError, TypeError):
            return gr.update()

    @shows_errors(as_message(lambda run_id, **_: f"Run #{_fmt(run_id)}", *_no_run("")[1:]))
    def on_show(self, run_id: float | None, curves: list[str] | None, request: gr.Request) -> tuple:
        """The run panel: facts, progress, curves, log, and Cancel / Lineage where they apply."""
        run = int(run_id) if run_id else None
        self.views.update(_session(request), run_id=run, metrics=tuple(curves or ()))
        if run is None:
            return _no_run("Choose a run from the list, or type its number.")
        return self._panel(self.ctx.auth.actor(request), run, tuple(curves or ()))

    def _panel(self, actor: Actor | None, run_id: int, curves: tuple[str, ...]) -> tuple:
        runs = self.ctx.ws.runs
        run = runs.get(actor, run_id)
        progress = runs.progress(actor, run_id)
        keys = runs.metric_keys(actor, run_id)
        chosen = [k for k in curves if k in keys] or [k for k in DEFAULT_CURVES if k in keys]
        lines = "\n".join(runs.log_tail(actor, run_id, max_lines=LOG_LINES))
        model = self.ctx.ws.registry.for_run(run_id) if run.status == RunState.SUCCEEDED else None
        info = self._facts(run, model.ref if model else "", model.kind if model else "")
        return (
            info,
            progress_html(progress),
            gr.update(choices=keys, value=chosen),
            _plot(runs.metrics(actor, run_id, tuple(chosen)) if chosen else {}),
            lines,
            gr.update(visible=runs.may_cancel(actor, run)),
            gr.update(visible=model is not None, value=f"Lineage of {model.ref}" if model else "Lineage"),
            model.ref if model else "",
        )

    @staticmethod
    def _facts(run: RunView, model_ref: str, model_kind: str) -> str:
        label = RunState(run.status).label
        lines = [
            f"### Run #{run.id} — {label}" + (f": {md_text(run.reason)}" if run.reason else ""),
            f"config {md_code(run.config_path)} at commit {md_code(run.commit[:12])}"
            + (f" (change request #{run.change_request_id})" if run.change_request_id else "")
            + f" · submitted by **{md_text(run.submitted_by)}** · {md_text(run.backend)} runner",
            f"config hash {md_code(run.config_hash[:12])} · dataset version {md_code(run.dataset_version[:19])} · "
            f"base model {md_code(run.base_model)}",
        ]
        if run.reproduces_run_id:
            lines.append(f"reproduces run #{run.reproduces_run_id}")
        if run.override_reason:
            lines.append(f"launched by admin override: {md_text(run.override_reason)}")
        if run.final_metrics:
            lines.append("final: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(run.final_metrics.items())))
        if model_ref:
            lines.append(f"registered as model version {md_code(model_ref)} ({md_text(model_kind)})")
        return "\n\n".join(lines)

    @shows_errors(as_warning(gr.skip()))
    def on_curves(self, run_id: float | None, curves: list[str] | None, request: gr.Request) -> Any:
        """Other curves picked: the plot again (the rest of the panel stays)."""
        self.views.update(_session(request), metrics=tuple(curves or ()))
        if not run_id or not curves:
            return _plot({})
        return _plot(self.ctx.ws.runs.metrics(self.ctx.auth.actor(request), int(run_id), tuple(curves)))

    @shows_errors(as_message("Not cancelled"))
    def on_cancel(self, run_id: float | None, request: gr.Request) -> str:
        if not run_id:
            raise invalid("Run #", "choose one first")
        run = self.ctx.ws.runs.cancel(self.ctx.auth.actor(request), int(run_id))
        return f"**Run #{run.id} {RunState(run.status).label}**"

    # ---- live ---------------------------------------------------------------------------------------------------

    def on_pulse(self, seen: int, request: gr.Request) -> tuple:
        """Render what moved on this page since `seen`: the list, the run panel; or, while its run is unfinished
        and nothing was logged, the elapsed time."""
        if seen is None or seen < 0:  # the page's first load has not said what it shows yet
            return (gr.skip(),) * 10
        view = self.views.get(_session(request)) or PageView()
        moved = self.ctx.ws.runs.changes.moved(seen, view.run_id)
        if moved.anything:
            return self._moved(moved, view, request)
        if view.run_id is None or not self.ctx.ws.runs.changes.unfinished(view.run_id):
            return (gr.skip(),) * 10
        return (gr.skip(), gr.skip(), gr.skip(), self._progress_only(view.run_id, request), *(gr.skip(),) * 6)

    # A live update that fails (e.g. signed out meanwhile) leaves the page as it is; the next click says why, and an
    # unexpected error is logged once with its reference (webui.errors).
    @shows_errors(lambda _lines, moved, **_: (moved.revision, *(gr.skip(),) * 9))
    def _moved(self, moved: Moved, view: PageView, request: gr.Request) -> tuple:
        """The outputs of a pulse: the new revision, the list if it moved, the run panel if its run moved."""
        actor = self.ctx.auth.actor(request)
        rows = self._rows(actor, view) if moved.runs else gr.skip()
        if moved.run and view.run_id:
            return (moved.revision, rows, *self._panel(actor, view.run_id, view.metrics))
        return (moved.revision, rows, *(gr.skip(),) * 8)

    @shows_errors(lambda _lines, **_: gr.skip())
    def _progress_only(self, run_id: int, request: gr.Request) -> Any:
        return progress_html(self.ctx.ws.runs.progress(self.ctx.auth.actor(request), run_id))

    # ---- comparison ---------------------------------------------------------------------------------------------

    @shows_errors(_compare_failed)
    def on_compare(self, ids_text: str, request: gr.Request) -> tuple[Any, Any]:
        ids = [int(x) for x in re.findall(r"\d+", ids_text or "")]
        comparison = self.ctx.ws.lineage.compare(self.ctx.auth.actor(request), ids, keys=("loss",))
        columns = {"parameter": [p.key for p in comparison.differing]}
        for i, run in enumerate(comparison.runs):
            columns[f"run #{run.id}"] = [_fmt(p.values[i]) for p in comparison.differing]
        for run in comparison.runs:
            final = comparison.final_metrics.get(run.id, {})
            columns[f"run #{run.id}"].append(_fmt(final.get("train_loss")))
        columns["parameter"].append("final train_loss")
        curves = {f"run #{run_id} loss": c.get("loss", []) for run_id, c in comparison.curves.items()}
        return pd.DataFrame(columns), curves_figure(curves, "loss")

    # ---- lineage ------------------------------------------------------------------------------------------------

    def on_run_lineage(self, model_ref: str, request: gr.Request) -> tuple:
        """The shown run's model version in the lineage section (on_lineage shows its own errors)."""
        info, graph = self.on_lineage(model_ref, request)
        return gr.update(value=model_ref), info, graph

    @shows_errors(lambda lines, **_: gr.update())  # a list to choose from: nothing to say when it cannot be had
    def on_models(self, request: gr.Request) -> Any:
        versions = self.ctx.ws.registry.list(self.ctx.auth.actor(request))
        return gr.update(choices=[v.ref for v in versions])

    @shows_errors(as_message("Lineage", None))
    def on_lineage(self, term: str, request: gr.Request) -> tuple[str, Any]:
        from backend.lineage import Derived, graph

        if not (term or "").strip():
            return "Choose a model, or type a commit or a dataset version.", None
        found = self.ctx.ws.lineage.lookup(self.ctx.auth.actor(request), term)
        if isinstance(found, Derived):
            lines = [f"### What came from {found.kind.replace('_', ' ')} {md_code(found.key[:19])}"]
            lines += [f"- config {md_code(c['path'])} at {md_code(c['commit'][:12])}" for c in found.configs]
            lines += [f"- run #{r.id} {r.status}, final loss {_fmt(r.final_loss)}" for r in found.runs]
            lines += [f"- model {md_code(m.ref)} ({m.kind})" for m in found.models]
            lines += [f"- deployed to {md_text(d.target)} ({d.status})" for d in found.deployments]
            return "\n".join(lines), None
        cr = found.change_request
        lines = [
            f"### {md_code(found.model.ref)} ({found.model.kind})",
            f"trained by run #{found.run.id} ({found.run.status})" if found.run else "no training run recorded",
            f"config {md_code(found.config_path)} at commit {md_code(found.commit[:12])}, "
            f"hash {md_code(found.config_hash[:12])}",
            f"dataset version {md_code(found.dataset_version[:19])} · base model {md_code(found.base_model)} "
            f"@ {md_code(found.base_model_revision)}",
        ]
        if cr is not None:
            lines.append(
                f"change request #{cr.id} {md_text(cr.title)} by {md_text(cr.author)}, approved by "
                f"{md_text(', '.join(cr.approvers) or '-')}, merged by {md_text(cr.merged_by or '-')}"
            )
        if found.final_metrics:
            lines.append("final: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(found.final_metrics.items())))
        for p in found.served:
            until = "now" if p.until is None else f"{p.until:%Y-%m-%d %H:%M}"
            lines.append(
                f"served by {md_code(p.deployment)} on {md_text(p.target)} from {p.since:%Y-%m-%d %H:%M} to {until}"
                f" ({md_text(p.trigger)} by {md_text(p.actor)})"
            )
        return "\n\n".join(lines), lineage_figure(graph(found))


def _session(request: gr.Request | None) -> str | None:
    """The page (one Gradio session per page load) an event came from; None outside a browser (tests, the API)."""
    return getattr(request, "session_hash", None) if request is not None else None
