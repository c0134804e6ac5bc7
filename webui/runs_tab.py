"""The Runs & lineage tab: runs with filters, one run's facts and curves (and Cancel), a comparison of runs, and
where a model came from, drawn as a graph. Each section is a thin view over `Workspace.runs`, `.lineage` and
`.registry`; a new backend question becomes one more `_build_*` section here."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from backend.runners.base import RunState
from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.paging import PAGE, page_offset
from webui.plots import curves_figure, lineage_figure
from webui.render import md_code, md_text

if TYPE_CHECKING:
    from backend.runs import RunView

RUN_HEADERS = ["#", "status", "config", "commit", "change request", "submitted by", "final loss", "started", "seconds"]
CURVE_KEYS = ("loss", "eval_loss")


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


class RunsTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Runs & lineage", id="runs", elem_id="lfops-tab-runs"):
            self._build_runs()
            self._build_compare()
            self._build_lineage()

    def _build_runs(self) -> None:
        with gr.Row(equal_height=True):
            self.status = gr.Dropdown(["all", *(s.value for s in RunState)], value="all", label="Status", scale=1)
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
            headers=RUN_HEADERS, interactive=False, wrap=True, label="Runs", elem_id="lfops-runs-table"
        )
        with gr.Row(equal_height=True):
            self.run_id = gr.Number(label="Run #", value=None, precision=0, scale=1, elem_id="lfops-run-id")
            self.show_btn = gr.Button("Show", scale=0, elem_id="lfops-run-show")
            self.cancel_btn = gr.Button("Cancel run", variant="stop", scale=0, elem_id="lfops-run-cancel")
        self.run_info = gr.Markdown(elem_id="lfops-run-info")
        self.run_plot = gr.Plot(label="Training curves", elem_id="lfops-run-plot")
        listing = dict(
            fn=self.on_list,
            inputs=[self.status, self.config, self.submitter, self.page, self.params, self.order],
            outputs=[self.table],
        )
        self.refresh.click(**listing, api_name="runs_list")
        self.status.change(**listing)
        self.config.submit(**listing)
        self.submitter.submit(**listing)
        self.page.submit(**listing)
        self.params.submit(**listing)
        self.order.change(**listing)
        self.ctx.on_tab_load(**listing)
        show = dict(fn=self.on_show, inputs=[self.run_id], outputs=[self.run_info, self.run_plot])
        self.show_btn.click(**show, api_name="run_show")
        self.run_id.submit(**show)
        self.table.select(self.on_select, [self.table], [self.run_id]).then(**show)
        self.cancel_btn.click(self.on_cancel, [self.run_id], [self.run_info], api_name="run_cancel").then(**show).then(
            **listing
        )
        self.ctx.gate(self.cancel_btn, "run.cancel")

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
        runs = self.ctx.ws.runs.list(
            self.ctx.auth.actor(request),
            status=None if status in (None, "", "all") else status,
            config=(config or "").strip() or None,
            submitted_by=(submitter or "").strip() or None,
            params=[f for f in re.split(r"[,\s]+", params or "") if f],
            order=order or "newest",
            limit=PAGE,
            offset=page_offset(page),
        )
        return [self._row(r) for r in runs]

    @staticmethod
    def _row(r: RunView) -> list[Any]:
        started = f"{r.started_at:%Y-%m-%d %H:%M}" if r.started_at else ""
        return [
            r.id,
            r.status,
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
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return int(table.iloc[row, 0])
        except (AttributeError, IndexError, ValueError, TypeError):
            return gr.update()

    @shows_errors(as_message(lambda run_id, **_: f"Run #{int(run_id)}", None))
    def on_show(self, run_id: float | None, request: gr.Request) -> tuple[str, Any]:
        if not run_id:
            return "Choose a run from the list, or type its number.", None
        actor = self.ctx.auth.actor(request)
        run = self.ctx.ws.runs.get(actor, int(run_id))
        curves = self.ctx.ws.runs.metrics(actor, int(run_id), keys=CURVE_KEYS)
        lines = [
            f"### Run #{run.id} — {run.status}" + (f": {md_text(run.reason)}" if run.reason else ""),
            f"config {md_code(run.config_path)} at commit {md_code(run.commit[:12])}"
            + (f" (change request #{run.change_request_id})" if run.change_request_id else "")
            + f" · submitted by **{md_text(run.submitted_by)}** · {md_text(run.backend)} runner",
            f"config hash {md_code(run.config_hash[:12])} · dataset version {md_code(run.dataset_version[:19])} · "
            f"base model {md_code(run.base_model)}",
        ]
        if run.override_reason:
            lines.append(f"launched by admin override: {md_text(run.override_reason)}")
        if run.final_metrics:
            lines.append("final: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(run.final_metrics.items())))
        return "\n\n".join(lines), curves_figure(curves, f"run #{run.id}")

    @shows_errors(as_message("Not cancelled"))
    def on_cancel(self, run_id: float | None, request: gr.Request) -> str:
        if not run_id:
            raise invalid("run", "choose one first")
        run = self.ctx.ws.runs.cancel(self.ctx.auth.actor(request), int(run_id))
        return f"**Run #{run.id} {run.status}**"

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
