"""`lfops launch | reproduce | runs`: start training runs and follow them.

Exit codes: 0 done / succeeded, 1 the run asked about did not succeed, 2 error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import TYPE_CHECKING, TextIO

from backend.cli.common import Subparsers, fmt_loss, page_arguments, print_more, workspace_and_actor
from backend.cli.remote import Remote
from backend.errors import LfopsError
from backend.runners.base import RunState

if TYPE_CHECKING:
    from backend.auth import Actor
    from backend.registry import ModelVersionView
    from backend.runners.base import Resources
    from backend.runs import RunProgress, RunView
    from backend.workspace import Workspace


def print_run(view: RunView) -> None:
    cr = f"#{view.change_request_id}" if view.change_request_id else "-"
    status = RunState(view.status).label
    print(f"run #{view.id} [{status}] {view.config_path} @ {view.commit[:12]} (change request {cr})")
    print(f"  submitted by {view.submitted_by}  backend {view.backend} {view.external_id}")
    print(f"  config hash {view.config_hash}\n  dataset version {view.dataset_version}")
    if view.override_reason:
        print(f"  launched by override: {view.override_reason}")
    if view.reproduces_run_id:
        print(f"  reproduces run #{view.reproduces_run_id}")
    times = f"created {view.created_at:%Y-%m-%d %H:%M:%S}"
    if view.started_at:
        times += f", started {view.started_at:%H:%M:%S}"
    if view.finished_at:
        times += f", finished {view.finished_at:%H:%M:%S}"
    print(f"  {times}")
    if view.reason:
        print(f"  reason: {view.reason}")
    if view.final_loss is not None:
        print(f"  final train loss {fmt_loss(view.final_loss)}")


class ProgressLine:
    """The run's progress while `--wait` waits: one line redrawn in place on a terminal; on anything else (a log, CI)
    a plain line each time the status or the step changes. The text is RunProgress's, as the WebUI shows it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._drawn = 0  # characters of the line now on the terminal
        self._last: tuple[str, int | None] | None = None

    def __call__(self, progress: RunProgress) -> None:
        text = f"run #{progress.run_id} {progress.bar()} {progress.summary()}"
        if self.tty:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn with \r
            text = text[:width]
            self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
            self._drawn = len(text)
            if progress.finished:
                self.stream.write("\n")
                self._drawn = 0
            self.stream.flush()
        elif (progress.status, progress.step) != self._last:
            self._last = (progress.status, progress.step)
            print(text, file=self.stream, flush=True)

    def end(self) -> None:
        """Stopped mid-line (a timeout, Ctrl-C): what is printed next starts on its own line."""
        if self._drawn:
            self.stream.write("\n")
            self._drawn = 0


def wait_and_report(ws: Workspace, actor: Actor, run_id: int, timeout: float | None) -> int:
    monitor = ws.runs.start_monitor()
    line = ProgressLine()
    try:
        view = ws.runs.wait(actor, run_id, timeout=timeout, on_progress=line)
    finally:
        monitor.stop()
        line.end()
    print_run(view)
    model = ws.registry.for_run(run_id)
    if model is not None:
        print(f"  registered as {model.ref} ({model.kind}) at {model.artifact_uri}")
    return 0 if view.status == "succeeded" else 1


def launch_resources(args: argparse.Namespace, ws: Workspace) -> Resources:
    """`--profile`, `--gpus` and `--nodes` as the resources of a launch."""
    from backend.runners.base import Resources

    if args.profile and args.profile not in ws.settings.cluster_profiles:
        known = ", ".join(sorted(ws.settings.cluster_profiles)) or "none configured (LFOPS_CLUSTER_PROFILES)"
        raise LfopsError(f"profile: {args.profile!r} is not a cluster profile; known: {known}")
    return Resources.from_user(
        gpus_per_node=args.gpus,
        nodes=args.nodes,
        profile=args.profile,
        names={"gpus_per_node": "--gpus", "nodes": "--nodes", "profile": "--profile"},
    )


def cmd_launch(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    view = ws.runs.launch(
        actor, args.target, config_path=args.config, override_reason=args.override, resources=launch_resources(args, ws)
    )
    print_run(view)
    print(f"  follow it: lfops runs logs {view.id} -f")
    if args.wait:
        return wait_and_report(ws, actor, view.id, args.timeout)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    view = ws.runs.reproduce(actor, args.model, override_reason=args.override)
    print_run(view)
    if args.wait:
        return wait_and_report(ws, actor, view.id, args.timeout)
    return 0


class _OnDatabase:
    """`runs list` and `runs show` on the workspace's database (advancing runs first: no monitor may be running)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ws, self.actor = workspace_and_actor(args)

    def runs(self, limit: int, offset: int, **filters: object) -> list[RunView]:
        return self.ws.runs.list(self.actor, limit=limit, offset=offset, **filters)

    def run(self, run_id: int) -> RunView:
        self.ws.runs.advance_run(run_id)
        return self.ws.runs.get(self.actor, run_id)

    def run_metrics(self, run_id: int, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        return self.ws.runs.metrics(self.actor, run_id, keys)

    def run_model(self, run_id: int) -> ModelVersionView | None:
        return self.ws.registry.for_run(run_id)


def _list(source: _OnDatabase | Remote, args: argparse.Namespace) -> None:
    from backend.paging import Page

    filters = {
        "status": args.status,
        "commit": args.commit,
        "config": args.config,
        "config_hash": args.config_hash,
        "dataset_version": args.dataset_version,
        "submitted_by": args.submitted_by,
        "change_request": args.change_request,
        **({"params": args.param} if args.param else {}),
        **({"order": args.order} if args.order != "newest" else {}),
    }
    page = Page.of(lambda limit, offset: source.runs(limit, offset, **filters), args.limit, args.offset)
    print(f"{'id':>5} {'status':10} {'user':10} {'config':28} {'commit':12} {'final loss':>11} created")
    for v in page.items:
        print(
            f"{v.id:>5} {v.status:10} {v.submitted_by:10} {v.config_path:28} {v.commit[:12]:12} "
            f"{fmt_loss(v.final_loss):>11} {v.created_at:%Y-%m-%d %H:%M}"
        )
    print_more(page)


def _show(source: _OnDatabase | Remote, run_id: int) -> None:
    view = source.run(run_id)
    print_run(view)
    curve = source.run_metrics(run_id, ("loss",))["loss"]
    if curve:
        print(f"  loss: {len(curve)} steps, first {curve[0][1]:.4f}, last {curve[-1][1]:.4f} (step {curve[-1][0]})")
    for key, value in sorted(view.final_metrics.items()):
        print(f"  {key} = {value:g}")
    model = source.run_model(run_id)
    if model is not None:
        print(f"  registered as {model.ref} ({model.kind})")


def cmd_runs(args: argparse.Namespace) -> int:
    if args.action in ("list", "show"):  # these two also work through a remote lfops' API ($LFOPS_URL)
        source = Remote.from_env()
        if source is None:
            source = _OnDatabase(args)
            if args.action == "list":
                source.ws.runs.advance()  # show current states even when no monitor is running
        if args.action == "list":
            _list(source, args)
        else:
            _show(source, args.id)
        return 0
    ws, actor = workspace_and_actor(args)
    runs = ws.runs
    if args.action == "logs":
        monitor = runs.start_monitor() if args.follow else None
        try:
            for line in runs.logs(actor, args.id, follow=args.follow):
                print(line, flush=args.follow)
        finally:
            if monitor is not None:
                monitor.stop()
        return 0
    if args.action == "cancel":
        print_run(runs.cancel(actor, args.id))
        return 0
    if args.action == "wait":
        return wait_and_report(ws, actor, args.id, args.timeout)
    if args.action == "compare":
        comparison = ws.lineage.compare(actor, args.ids)
        ids = [v.id for v in comparison.runs]
        print(f"{'hyperparameter':32} " + " ".join(f"{'#' + str(i):>16}" for i in ids))
        for row in comparison.differing:
            print(f"{row.key:32} " + " ".join(f"{str(v):>16}" for v in row.values))
        print(f"{'final train loss':32} " + " ".join(f"{fmt_loss(v.final_loss):>16}" for v in comparison.runs))
        steps = sorted({step for i in ids for step, _ in comparison.curves[i]["loss"]})
        if steps:
            print("\nloss by step")
            for step in steps:
                values = [dict(comparison.curves[i]["loss"]).get(step) for i in ids]
                print(f"{step:>32} " + " ".join(f"{fmt_loss(v):>16}" for v in values))
        return 0
    raise LfopsError(f"runs: unknown action {args.action}")


def register_launch(sub: Subparsers) -> None:
    p = sub.add_parser("launch", help="train an approved, merged config (a change request number or a merge commit)")
    p.add_argument("target", help="change request number (12 or #12) or commit id")
    p.add_argument("--config", help="config path in the repository (default: the change request's)")
    p.add_argument("--override", metavar="REASON", help="admin only: launch without the approval policy, audited")
    p.add_argument("--profile", help="run as a Kubernetes Job with this cluster profile (default: on this machine)")
    p.add_argument("--gpus", type=int, help="GPUs per node (default: 1 on a cluster, none on this machine)")
    p.add_argument("--nodes", type=int, default=1, help="nodes on a cluster; more than 1 is a torchrun Indexed Job")
    p.add_argument("--wait", action="store_true", help="wait until the run ends; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=float, help="seconds to wait at most")
    p.set_defaults(func=cmd_launch)


def register_runs(sub: Subparsers) -> None:
    p = sub.add_parser("runs", help="training runs: list, show (also through $LFOPS_URL), logs, cancel, wait, compare")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list")
    q.add_argument("--status")
    q.add_argument("--commit")
    q.add_argument("--config", help="config name or path")
    q.add_argument("--config-hash")
    q.add_argument("--dataset-version")
    q.add_argument("--submitted-by", metavar="USER")
    q.add_argument("--change-request", type=int)
    q.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="hyperparameter filter, repeatable (ANDed): lora_rank=16, a range learning_rate=1e-4..3e-4",
    )
    q.add_argument("--order", choices=("newest", "loss"), default="newest", help="loss: best final loss first")
    page_arguments(q)
    for action in ("show", "cancel"):
        rsub.add_parser(action).add_argument("id", type=int)
    q = rsub.add_parser("logs")
    q.add_argument("id", type=int)
    q.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    q = rsub.add_parser("wait")
    q.add_argument("id", type=int)
    q.add_argument("--timeout", type=float)
    q = rsub.add_parser("compare", help="hyperparameter differences and loss curves of two or more runs")
    q.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=cmd_runs)


def register_reproduce(sub: Subparsers) -> None:
    p = sub.add_parser("reproduce", help="train a registered model's exact commit and config again")
    p.add_argument("model", help="NAME or NAME:vN")
    p.add_argument("--override", metavar="REASON", help="admin only: when the commit is no longer launchable")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float)
    p.set_defaults(func=cmd_reproduce)
