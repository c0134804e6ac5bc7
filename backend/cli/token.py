"""`lfops token create | list | revoke`: personal API tokens for the REST API (and for a remote `lfops`)."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, page_arguments, workspace_and_actor


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


def cmd_token(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    tokens = ws.tokens
    if args.action == "create":
        new = tokens.create(actor, args.name, scope=args.scope, expires_in_days=args.days)
        view = new.view
        print(f"token #{view.id} {view.name!r} of {view.owner}: scope {view.scope}, expires {_when(view.expires_at)}")
        print("the token is shown only this once (send it as 'Authorization: Bearer <token>'):")
        print(new.token)
        return 0
    if args.action == "list":
        views = tokens.list(actor, everyone=args.all, limit=args.limit, offset=args.offset)
        print(f"{'id':>4} {'prefix':20} {'owner':10} {'scope':6} {'state':8} {'expires':16} {'last used':16} name")
        for v in views:
            print(
                f"{v.id:>4} {v.prefix:20} {v.owner:10} {v.scope:6} {v.state:8} {_when(v.expires_at):16} "
                f"{_when(v.last_used_at):16} {v.name}"
            )
        return 0
    view = tokens.revoke(actor, args.id)
    print(f"token #{view.id} {view.name!r} of {view.owner} revoked by {view.revoked_by}")
    return 0


def register(sub: Subparsers) -> None:
    # scope and days are checked by backend.tokens (not imported here: `lfops --help` stays light)
    p = sub.add_parser("token", help="personal API tokens: create (shown once), list, revoke")
    tsub = p.add_subparsers(dest="action", required=True)
    q = tsub.add_parser("create", help="a new token of yours, printed once")
    q.add_argument("name", help="what the token is for (e.g. ci, notebook)")
    q.add_argument("--scope", default="read", help="read (default: reading only) or write (all your role may do)")
    q.add_argument("--days", type=int, help="days until it expires (default 30, at most 365)")
    q = tsub.add_parser("list", help="your tokens (admins: --all for everyone's)")
    q.add_argument("--all", action="store_true", help="admin only: every user's tokens")
    page_arguments(q)
    tsub.add_parser("revoke", help="revoke a token (yours; admins: anyone's)").add_argument("id", type=int)
    p.set_defaults(func=cmd_token)
