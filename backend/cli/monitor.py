"""`lfops monitor`: traffic, drift scores and the latest drift report of a deployment; the drift checks; sampling.

    lfops monitor DEPLOYMENT [--hours H] [--bucket MIN]   (= lfops monitor show DEPLOYMENT)
    lfops monitor check [DEPLOYMENT]        run the drift checks now (what the app's schedule and the CronJob run)
    lfops monitor sampling DEPLOYMENT [--on | --off] [--rate R] [--max-samples N] [--retention-days D]
    lfops monitor cronjob --namespace NS [--image IMAGE] [--schedule CRON]   print the CronJob for `kubectl apply -f -`

Exit codes: 0 done, 1 `check` declared a drift, 2 error.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from backend.cli.common import Subparsers, workspace, workspace_and_actor
from backend.errors import LfopsError

if TYPE_CHECKING:
    from backend.monitoring.report import DriftReport
    from backend.monitoring.samples import Policy

ACTIONS = ("show", "check", "sampling", "cronjob")


def _when(value: object, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return f"{value:{fmt}}" if value else "-"


def policy_line(p: Policy) -> str:
    if not p.enabled:
        return "sampling: off"
    return f"sampling: on, {p.rate:.0%} of requests, at most {p.max_samples} kept for {p.retention_days:g} days"


def print_report(r: DriftReport) -> None:
    print(f"drift report #{r.id} ({_when(r.created_at)}): {r.state}" + (f" — {r.reason}" if r.reason else ""))
    print(
        f"  window {_when(r.window_start, '%Y-%m-%d %H:%M:%S')} .. {_when(r.window_end, '%H:%M:%S')}, "
        f"{r.n_prompts} prompts against {r.n_reference} training prompts of {r.model_version}"
        + (f" (dataset version {r.dataset_version[:12]})" if r.dataset_version else "")
    )
    for name, score in r.scores.items():
        threshold = r.thresholds.get(name)
        over = "  OVER" if threshold is not None and score > threshold else ""
        print(f"  {name:11} {score:8.4f}  threshold {threshold:.4f}{over}")
    if r.top_terms:
        print("  top terms: " + ", ".join(r.top_terms))
    if r.unknown_words:
        print("  unknown words: " + ", ".join(r.unknown_words))
    if r.sample_prompts:
        print("  sample prompts:")
        for prompt in r.sample_prompts:
            print("    - " + prompt.replace("\n", " ")[:160])


def cmd_show(args: argparse.Namespace, name: str) -> int:
    ws, actor = workspace_and_actor(args)
    view = ws.monitoring.overview(actor, name, hours=args.hours, bucket_minutes=args.bucket)
    print(f"{view.deployment} [{view.status}] {view.model_version}")
    print(f"  {policy_line(view.policy)}; {view.samples_stored} samples stored")
    print(f"traffic, last {args.hours:g} h in {args.bucket:g}-minute buckets (estimated from the samples):")
    if not view.traffic:
        print("  no sampled requests")
    else:
        print(f"  {'time':16} {'req/min':>8} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'tok in':>8} {'tok out':>8}")
        for t in view.traffic:
            print(
                f"  {_when(t.start):16} {t.requests_per_min:8.2f} {t.error_rate:7.1%} {t.latency_p50_ms:8.1f} "
                f"{t.latency_p95_ms:8.1f} {t.prompt_tokens:8.0f} {t.completion_tokens:8.0f}"
            )
    print("drift scores (score/threshold), oldest first:")
    if not view.reports:
        print("  no drift report yet (a check needs at least a full window of new prompts)")
    for r in reversed(view.reports):
        cells = "  ".join(f"{k} {v:.3f}/{r.thresholds.get(k, 0):.3f}" for k, v in r.scores.items())
        print(f"  {_when(r.created_at)} {r.n_prompts:5} prompts  {cells or '-':60} {r.state}")
    if view.latest is not None:
        print_report(view.latest)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    monitoring = workspace(args).monitoring
    made = [monitoring.check(args.name)] if args.name else monitoring.check_all()
    made = [r for r in made if r is not None]
    if not made:
        print("no new window to check (too few new prompts)")
    for r in made:
        print(f"{r.deployment}: {r.state} over {r.n_prompts} prompts" + (f" — {r.reason}" if r.reason else ""))
    return 1 if any(r.declared for r in made) else 0


def cmd_sampling(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    changes = {
        "enabled": args.enabled,
        "rate": args.rate,
        "max_samples": args.max_samples,
        "retention_days": args.retention_days,
    }
    if all(v is None for v in changes.values()):
        policy = ws.monitoring.sampling(actor, args.name)
    else:
        policy = ws.monitoring.set_sampling(actor, args.name, **changes)
    print(f"{args.name}: {policy_line(policy)}")
    return 0


def cmd_cronjob(args: argparse.Namespace) -> int:
    import yaml

    from backend.monitoring.cronjob import MonitorCronJob, monitor_cronjob

    if not args.namespace:
        raise LfopsError("namespace: give --namespace (where the app runs)", field="namespace")
    spec = MonitorCronJob(namespace=args.namespace, image=args.image, schedule=args.schedule)
    print(yaml.safe_dump(monitor_cronjob(spec), sort_keys=False), end="")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    action = args.action
    if action not in ACTIONS:  # `lfops monitor NAME`
        if args.name:
            raise LfopsError(f"monitor: unknown action {action!r} (one of {', '.join(ACTIONS)})", field="action")
        return cmd_show(args, action)
    if action == "check":
        return cmd_check(args)
    if action == "cronjob":
        return cmd_cronjob(args)
    if not args.name:
        raise LfopsError(f"deployment: `lfops monitor {action}` needs a deployment name", field="deployment")
    if action == "show":
        return cmd_show(args, args.name)
    return cmd_sampling(args)


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value

    return parse


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "monitor",
        help="traffic, drift scores and drift reports of a deployment; run the drift checks; sampling",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", metavar="DEPLOYMENT|show|check|sampling|cronjob")
    p.add_argument("name", nargs="?", help="the deployment (show, sampling; check: only this one)")
    p.add_argument("--hours", type=_positive(float), default=24.0, help="show: how far back (default 24)")
    p.add_argument("--bucket", type=_positive(float), default=5.0, help="show: minutes per row (default 5)")
    on_off = p.add_mutually_exclusive_group()
    on_off.add_argument("--on", dest="enabled", action="store_const", const=True, help="sampling: turn it on")
    on_off.add_argument("--off", dest="enabled", action="store_const", const=False, help="sampling: turn it off")
    p.add_argument("--rate", type=float, help="sampling: share of requests sampled, 0 to 1")
    p.add_argument("--max-samples", type=int, help="sampling: samples kept per deployment (the oldest go)")
    p.add_argument("--retention-days", type=float, help="sampling: days a sample is kept")
    p.add_argument("--namespace", help="cronjob: the app's namespace")
    p.add_argument("--image", default="ghcr.io/lfops/lfops:0.1.0", help="cronjob: the app's image")
    p.add_argument("--schedule", default="*/10 * * * *", help="cronjob: when to check (cron; default every 10 min)")
    p.set_defaults(func=cmd_monitor)
