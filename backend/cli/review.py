"""`lfops review list | show | approve | request-changes | merge | close`: change requests.

On the database, or through a remote lfops' API when LFOPS_URL is set (backend.cli.remote): the same output.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from backend.cli.common import Subparsers, page_arguments, print_more, workspace_and_actor
from backend.cli.remote import Remote
from backend.review_status import ChangeRequestStatus

if TYPE_CHECKING:
    from backend.paging import Page
    from backend.review import ChangeRequestDetail, ChangeRequestView


class _OnDatabase:
    """The verbs of `lfops review` on the workspace's database, as the signed-in user."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ws, self.actor = workspace_and_actor(args)

    def change_requests(self, status: str | None, author: str | None, limit: int, offset: int) -> list[Any]:
        return self.ws.changes.list(self.actor, status=status, author=author, limit=limit, offset=offset)

    def change_request_detail(self, cr_id: int) -> ChangeRequestDetail:
        return self.ws.changes.show(self.actor, cr_id)

    def decide(self, cr_id: int, action: str, comment: str = "") -> ChangeRequestView:
        changes = self.ws.changes
        if action == "approve":
            return changes.approve(self.actor, cr_id, comment)
        if action == "request-changes":
            return changes.request_changes(self.actor, cr_id, comment)
        return changes.merge(self.actor, cr_id) if action == "merge" else changes.close(self.actor, cr_id)


def _print_request(view: ChangeRequestView) -> None:
    approvers = ", ".join(view.approvers) or "-"
    print(f"#{view.id} [{view.status.label}] {view.title}")
    print(f"  author {view.author}  branch {view.branch}  config {view.config_path}")
    print(f"  head {view.head_commit}  approved by {approvers}")
    if view.merged_commit:
        print(f"  merged as {view.merged_commit} by {view.merged_by}")
    pr = getattr(view, "pull_request", None)  # remote views (the API's) carry none
    if pr is not None:
        print(f"  pull request #{pr.number} on {pr.forge}: {pr.label}  {pr.url}")


def _print_list(page: Page) -> None:
    for view in page.items:
        print(f"#{view.id:<4} {view.status.label:18} {view.author:10} {view.config_path:32} {view.title}")
    print_more(page)


def _print_detail(detail: ChangeRequestDetail) -> None:
    _print_request(detail.request)
    for review in detail.request.reviews:
        print(f"  {review.at:%Y-%m-%d %H:%M} {review.reviewer} {review.decision.label}: {review.comment}")
    print("\nvalidation:\n  " + "\n  ".join(detail.validation))
    print(f"\nhyperparameters (before = {detail.baseline}):")
    for row in detail.params:
        if row.change != "unchanged":
            print(f"  {row.key:32} {row.before!s:>20} -> {row.after!s}")
    print("\n" + detail.yaml_diff)


def cmd_review(args: argparse.Namespace) -> int:
    from backend.paging import Page

    source = Remote.from_env() or _OnDatabase(args)
    if args.action == "list":
        fetch = lambda limit, offset: source.change_requests(args.status, args.author, limit, offset)  # noqa: E731
        _print_list(Page.of(fetch, args.limit, args.offset))
    elif args.action == "show":
        _print_detail(source.change_request_detail(args.id))
    else:
        _print_request(source.decide(args.id, args.action, getattr(args, "comment", None) or ""))
    sys.stdout.flush()
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("review", help="change requests (through $LFOPS_URL's API when it is set)")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list")
    q.add_argument("--status", choices=[s.value for s in ChangeRequestStatus.listed()])
    q.add_argument("--author")
    page_arguments(q)
    for action in ("show", "approve", "request-changes", "merge", "close"):
        q = rsub.add_parser(action)
        q.add_argument("id", type=int)
        if action in ("approve", "request-changes"):
            q.add_argument("-c", "--comment")
    p.set_defaults(func=cmd_review)
