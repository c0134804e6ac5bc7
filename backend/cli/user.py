"""`lfops user add`: users (admins only)."""

from __future__ import annotations

import argparse
import sys

from backend.cli.common import Subparsers, workspace_and_actor


def cmd_user(args: argparse.Namespace) -> int:
    from backend import audit
    from backend.auth import add_user, new_password, require

    ws, actor = workspace_and_actor(args)
    actor = require(actor, "user.manage")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    if not password:
        password = new_password()
        print(f"password for {args.name} (shown once): {password}")
    with ws.store.session() as s:
        user = add_user(s, args.name, args.role, password, args.email or "")
        audit.record(s, actor, "user.add", f"user:{user.name}", role=user.role)
    print(f"user {args.name} ({args.role}) added")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("user", help="users (admin)")
    usub = p.add_subparsers(dest="action", required=True)
    q = usub.add_parser("add")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=["analyst", "reviewer", "admin"])
    q.add_argument("--email")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_user)
