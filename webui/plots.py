"""Pictures for the Runs & lineage tab: a run's progress bar (HTML), its curves as data for an interactive plot, the
curves of compared runs and a model's lineage graph (matplotlib, no pyplot state)."""

from __future__ import annotations

import html
import textwrap
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from backend.runs import RunProgress

CURVE_COLUMNS = ["step", "value", "metric"]
_BAR_COLOURS = {"succeeded": "#16a34a", "failed": "#dc2626", "cancelled": "#9ca3af", "lost": "#9ca3af"}

# Left to right: what a model is made from, then what was made of it.
_KIND_COLOURS = {
    "dataset": "#dbeafe",
    "base_model": "#e0e7ff",
    "change_request": "#fef3c7",
    "commit": "#fde68a",
    "run": "#dcfce7",
    "model": "#fce7f3",
    "deployment": "#ede9fe",
}


def progress_html(progress: RunProgress | None) -> str:
    """A progress bar with the run's status, step of the total, elapsed and remaining time (RunProgress's words)."""
    if progress is None:
        return "<div id='lfops-progress-empty'></div>"
    fraction = progress.fraction
    width = 0.0 if fraction is None else fraction * 100
    colour = _BAR_COLOURS.get(progress.status, "#2563eb")
    step = "" if progress.step is None else str(progress.step)
    total = "" if progress.total_steps is None else str(progress.total_steps)
    return (
        f"<div class='lfops-progress' data-status='{html.escape(progress.status)}' data-step='{step}' "
        f"data-total='{total}' role='progressbar' aria-valuemin='0' aria-valuemax='100' aria-valuenow='{width:.0f}'>"
        "<div style='height:10px;border-radius:5px;background:var(--border-color-primary, #e5e7eb);overflow:hidden'>"
        f"<div style='height:100%;width:{width:.1f}%;background:{colour};transition:width .4s'></div></div>"
        "<div class='lfops-progress-text' style='margin-top:4px;font-size:14px'>"
        f"{html.escape(progress.summary())}</div></div>"
    )


def curves_frame(curves: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    """Curves as the long table an interactive line plot takes: one row per (step, value, metric)."""
    rows = [(step, value, name) for name, points in curves.items() for step, value in points]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.astype({"step": "int64", "value": "float64", "metric": "str"})


def curves_caption(curves: dict[str, list[tuple[int, float]]]) -> str:
    """The last point of each curve ("loss 5.842 at step 16"); it changes with every new point, which is also what
    makes Gradio's line plot draw the new data with fresh scales (it keeps those of its first drawing otherwise)."""
    last = [f"{name} {points[-1][1]:.4g} at step {points[-1][0]}" for name, points in curves.items() if points]
    return " · ".join(last) or "no points yet"


def curves_figure(curves: dict[str, list[tuple[int, float]]], title: str = "") -> Figure | None:
    """One line per series name; None when there is nothing to draw yet."""
    series = {name: points for name, points in curves.items() if points}
    if not series:
        return None
    fig = Figure(figsize=(7, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="." if len(points) < 40 else None)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def lineage_figure(graph: dict[str, list[dict[str, str]]]) -> Figure | None:
    """Nodes in columns by their distance from the sources (data, base model, review), edges as labelled arrows."""
    nodes = {n["id"]: n for n in graph.get("nodes", [])}
    edges = [e for e in graph.get("edges", []) if e["from"] in nodes and e["to"] in nodes]
    if not nodes:
        return None
    depth = {node_id: 0 for node_id in nodes}
    for _ in range(len(nodes)):  # longest path layering; the graph is small and acyclic
        changed = False
        for e in edges:
            if depth[e["to"]] < depth[e["from"]] + 1:
                depth[e["to"]] = depth[e["from"]] + 1
                changed = True
        if not changed:
            break
    targets = {e["to"] for e in edges}
    for node_id in nodes:  # a source sits just left of its nearest successor (the base model beside the config)
        succ = [depth[e["to"]] for e in edges if e["from"] == node_id]
        if node_id not in targets and succ:
            depth[node_id] = min(succ) - 1
    columns: dict[int, list[str]] = {}
    for node_id in nodes:
        columns.setdefault(depth[node_id], []).append(node_id)
    rows = max(len(c) for c in columns.values())
    fig = Figure(figsize=(max(6.0, 2.6 * len(columns)), max(2.4, 1.3 * rows)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    pos: dict[str, tuple[float, float]] = {}
    for col, ids in columns.items():
        for i, node_id in enumerate(ids):
            pos[node_id] = (col, (len(ids) - 1) / 2 - i)  # each column centred on y = 0
    for e in edges:
        (x1, y1), (x2, y2) = pos[e["from"]], pos[e["to"]]
        ax.annotate(
            "",
            xy=(x2 - 0.33, y2),
            xytext=(x1 + 0.33, y1),
            arrowprops={"arrowstyle": "->", "color": "#6b7280", "lw": 1.2},
        )
        ax.text((x1 + x2) / 2, (y1 + y2) / 2 + 0.12, e.get("label", ""), ha="center", fontsize=7, color="#6b7280")
    for node_id, node in nodes.items():
        x, y = pos[node_id]
        ax.text(
            x,
            y,
            textwrap.fill(node["label"], 26),
            ha="center",
            va="center",
            fontsize=7.5,
            bbox={"boxstyle": "round,pad=0.4", "fc": _KIND_COLOURS.get(node["kind"], "#f3f4f6"), "ec": "#9ca3af"},
        )
    ax.set_xlim(min(columns) - 0.6, max(columns) + 0.6)
    ax.set_ylim(-rows / 2 - 0.1, rows / 2 + 0.1)
    return fig
