"""`lfops review list | show | approve | request-changes | merge | close`: change requests."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from backend.cli.common import Subparsers, workspace_and_actor
from backend.review_status import ChangeRequestStatus

if TYPE_CHECKING:
    from backend.review import ChangeRequestView


def _print_request(view: ChangeRequestView) -> None:
    approvers = ", ".join(view.approvers) or "-"
    print(f"#{view.id} [{view.status.label}] {view.title}")
    print(f"  author {view.author}  branch {view.branch}  config {view.config_path}")
    print(f"  head {view.head_commit}  approved by {approvers}")
    if view.merged_commit:
        print(f"  merged as {view.merged_commit} by {view.merged_by}")


def cmd_review(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    changes = ws.changes
    if args.action == "list":
        for view in changes.list(actor, status=args.status, author=args.author):
            print(f"#{view.id:<4} {view.status.label:18} {view.author:10} {view.config_path:32} {view.title}")
        return 0
    if args.action == "show":
        detail = changes.show(actor, args.id)
        _print_request(detail.request)
        for review in detail.request.reviews:
            print(f"  {review.at:%Y-%m-%d %H:%M} {review.reviewer} {review.decision.label}: {review.comment}")
        print("\nvalidation:\n  " + "\n  ".join(detail.validation))
        print(f"\nhyperparameters (before = {detail.baseline}):")
        for row in detail.params:
            if row.change != "unchanged":
                print(f"  {row.key:32} {row.before!s:>20} -> {row.after!s}")
        print("\n" + detail.yaml_diff)
        return 0
    if args.action == "approve":
        _print_request(changes.approve(actor, args.id, args.comment or ""))
    elif args.action == "request-changes":
        _print_request(changes.request_changes(actor, args.id, args.comment or ""))
    elif args.action == "merge":
        _print_request(changes.merge(actor, args.id))
    elif args.action == "close":
        _print_request(changes.close(actor, args.id))
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("review", help="change requests")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list")
    q.add_argument("--status", choices=[s.value for s in ChangeRequestStatus.listed()])
    q.add_argument("--author")
    for action in ("show", "approve", "request-changes", "merge", "close"):
        q = rsub.add_parser(action)
        q.add_argument("id", type=int)
        if action in ("approve", "request-changes"):
            q.add_argument("-c", "--comment")
    p.set_defaults(func=cmd_review)
