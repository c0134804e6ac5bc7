"""The Monitoring tab: a deployment's traffic (request rate, error rate, latency p50/p95, tokens) and its drift scores
over time as plots, with the latest drift report (scores, thresholds, top terms, sample prompts) and the sampling
policy. A thin view over `Workspace.monitoring`, which checks every rule again (only reviewers and admins change
sampling; everyone may read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.render import md_code, md_text

if TYPE_CHECKING:
    from backend.monitoring.report import DriftReport
    from backend.monitoring.service import Overview

EMPTY_TRAFFIC = pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns, UTC]"), "value": [], "series": []})


def _long(rows: list[tuple[Any, str, float]]) -> pd.DataFrame:
    if not rows:
        return EMPTY_TRAFFIC.copy()
    return pd.DataFrame(rows, columns=["time", "series", "value"])


def traffic_frames(view: Overview) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(requests per minute, error rate, latency p50/p95, tokens) in long form for gr.LinePlot."""
    t = view.traffic
    rate = _long([(p.start, "requests/min", p.requests_per_min) for p in t])
    errors = _long([(p.start, "error rate", p.error_rate) for p in t])
    latency = _long(
        [(p.start, "p50 ms", p.latency_p50_ms) for p in t] + [(p.start, "p95 ms", p.latency_p95_ms) for p in t]
    )
    tokens = _long(
        [(p.start, "prompt tokens", p.prompt_tokens) for p in t]
        + [(p.start, "completion tokens", p.completion_tokens) for p in t]
    )
    return rate, errors, latency, tokens


def drift_frame(view: Overview) -> pd.DataFrame:
    """Each score divided by its threshold (1 = the threshold), per report."""
    rows = [
        (r.created_at, name, score / r.thresholds[name] if r.thresholds.get(name) else 0.0)
        for r in reversed(view.reports)
        for name, score in r.scores.items()
    ]
    return _long(rows)


def render_report(view: Overview) -> str:
    p = view.policy
    sampling = (
        f"sampling **on**: {p.rate:.0%} of requests, at most {p.max_samples} kept for {p.retention_days:g} days"
        if p.enabled
        else "sampling **off**"
    )
    lines = [
        f"### {md_text(view.deployment)} — {md_text(view.status)}, serving {md_code(view.model_version)}",
        f"{sampling} · {view.samples_stored} samples stored",
    ]
    r = view.latest
    if r is None:
        lines.append("No drift report yet: a check needs a full window of new prompts (30 by default).")
        return "\n\n".join(lines)
    lines.append(render_drift_report(r))
    return "\n\n".join(lines)


def render_drift_report(r: DriftReport) -> str:
    head = f"#### Drift report #{r.id} — **{md_text(r.state)}** ({r.created_at:%Y-%m-%d %H:%M})"
    lines = [
        head,
        f"window {r.window_start:%Y-%m-%d %H:%M:%S} – {r.window_end:%H:%M:%S}: {r.n_prompts} prompts against "
        f"{r.n_reference} training prompts of {md_code(r.model_version)}",
    ]
    if r.reason:
        lines.append(md_text(r.reason))
    if r.scores:
        table = ["| score | value | threshold | |", "|---|---:|---:|---|"]
        for name, score in r.scores.items():
            threshold = r.thresholds.get(name, 0.0)
            table.append(f"| {name} | {score:.4f} | {threshold:.4f} | {'over' if score > threshold else ''} |")
        lines.append("\n".join(table))
    if r.top_terms:
        lines.append("**Top terms:** " + ", ".join(md_code(t) for t in r.top_terms))
    if r.unknown_words:
        lines.append("**Unknown words:** " + ", ".join(md_code(t) for t in r.unknown_words))
    if r.sample_prompts:
        lines.append("**Sample prompts:**\n" + "\n".join(f"- {md_text(p[:300])}" for p in r.sample_prompts))
    return "\n\n".join(lines)


class MonitoringTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Monitoring", id="monitoring", elem_id="lfops-tab-monitoring"):
            with gr.Row(equal_height=True):
                self.deployment = gr.Dropdown(
                    label="Deployment", choices=[], allow_custom_value=True, scale=2, elem_id="lfops-monitor-name"
                )
                self.hours = gr.Number(label="Hours back", value=24, minimum=1, maximum=24 * 90, scale=1)
                self.show_btn = gr.Button("Show", scale=0, elem_id="lfops-monitor-show")
            self.info = gr.Markdown(elem_id="lfops-monitor-info")
            with gr.Row():
                self.rate_plot = gr.LinePlot(x="time", y="value", color="series", title="Requests per minute")
                self.error_plot = gr.LinePlot(x="time", y="value", color="series", title="Error rate")
            with gr.Row():
                self.latency_plot = gr.LinePlot(x="time", y="value", color="series", title="Latency (ms)")
                self.tokens_plot = gr.LinePlot(x="time", y="value", color="series", title="Tokens")
            self.drift_plot = gr.LinePlot(
                x="time", y="value", color="series", title="Drift scores ÷ their thresholds (over 1: over)"
            )
            with gr.Row(equal_height=True) as self.sampling_row:
                self.enabled = gr.Checkbox(label="sample requests", value=True, scale=1)
                self.rate = gr.Number(label="Share sampled (0–1)", value=0.1, minimum=0, maximum=1, scale=1)
                self.apply_btn = gr.Button("Apply sampling", scale=0, elem_id="lfops-monitor-sampling")
        outputs = [self.info, self.rate_plot, self.error_plot, self.latency_plot, self.tokens_plot, self.drift_plot]
        show = dict(fn=self.on_show, inputs=[self.deployment, self.hours], outputs=outputs)
        self.show_btn.click(**show, api_name="monitor_show")
        self.deployment.change(**show)
        self.ctx.on_tab_load(fn=self.on_choices, inputs=None, outputs=[self.deployment])
        self.apply_btn.click(
            self.on_sampling, [self.deployment, self.enabled, self.rate], [self.info], api_name="monitor_sampling"
        ).then(**show)
        self.ctx.gate(self.sampling_row, "deploy.manage")

    # ---- handlers -----------------------------------------------------------------------------------------------

    @shows_errors(as_warning(gr.update()))
    def on_choices(self, request: gr.Request) -> Any:
        names = [d.name for d in self.ctx.ws.serving.list(self.ctx.auth.actor(request))]
        return gr.update(choices=names)

    @shows_errors(as_message(lambda name, **_: f"Monitoring {name or ''}".strip(), *([None] * 5)))
    def on_show(self, name: str | None, hours: float | None, request: gr.Request) -> tuple[Any, ...]:
        if not name or not name.strip():
            raise invalid("Deployment", "choose a deployment")
        view = self.ctx.ws.monitoring.overview(self.ctx.auth.actor(request), name.strip(), hours=float(hours or 24))
        return (render_report(view), *traffic_frames(view), drift_frame(view))

    @shows_errors(as_message("Sampling not changed"))
    def on_sampling(self, name: str | None, enabled: bool, rate: float | None, request: gr.Request) -> str:
        if not name or not name.strip():
            raise invalid("Deployment", "choose a deployment")
        if rate is None:
            raise invalid("Share sampled", "give a number from 0 to 1")
        actor = self.ctx.auth.actor(request)
        policy = self.ctx.ws.monitoring.set_sampling(actor, name.strip(), enabled=bool(enabled), rate=float(rate))
        state = f"on at {policy.rate:.0%}" if policy.enabled else "off"
        return f"Sampling of {md_text(name.strip())} is now {state}."
