"""`lfops retrain check | list`: the dataset trigger, and the retrain signals with what became of them."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace_and_actor


def cmd_check(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    report = ws.retrain.check(actor)
    print(f"checked {report.checked} running deployment(s)")
    for signal, handled in report.handled:
        cr = f" change request #{handled.change_request}" if handled.change_request else ""
        reason = f": {handled.reason}" if handled.reason else ""
        print(f"  {signal.deployment}: {signal.evidence_ref} -> {handled.outcome}{cr}{reason}")
    for problem in report.problems:
        print(f"  problem: {problem}")
    return 1 if report.problems else 0


def cmd_list(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    requests = ws.retrain.requests(actor, limit=args.limit)
    print("requests:" if requests else "requests: none")
    for r in requests:
        cr = f"#{r.change_request}" if r.change_request else "-"
        reason = f" ({r.reason})" if r.reason else ""
        print(f"  {r.id} {r.model_name} [{r.state}] change request {cr} branch {r.branch}{reason}")
    signals = ws.retrain.signals(actor, limit=args.limit, model=args.model)
    print("signals:" if signals else "signals: none")
    for sig in signals:
        cr = f" #{sig.change_request}" if sig.change_request else ""
        reason = f" ({sig.reason})" if sig.reason else ""
        print(
            f"  {sig.id} {sig.received_at:%Y-%m-%d %H:%M} {sig.kind} {sig.model_name} {sig.deployment or '-'} "
            f"{sig.evidence_ref} -> {sig.outcome}{cr}{reason}"
        )
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("retrain", help="retrain change requests: run the dataset trigger, list signals and requests")
    verbs = p.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser(
        "check", help="propose retrains for deployed models whose dataset has a new version on main"
    )
    check.set_defaults(func=cmd_check)
    listing = verbs.add_parser("list", help="retrain requests and the signals behind them, newest first")
    listing.add_argument("--model", help="only this model's signals")
    listing.add_argument("--limit", type=int, default=50, help="at most this many of each (default 50)")
    listing.set_defaults(func=cmd_list)
