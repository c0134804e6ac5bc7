"""`lfops user add | list | role | deactivate | activate | reset-password | delete`: users (admins only).

Roles are not checked by argparse: the backend's rule (backend.users) answers an unknown one, as it does for the API
and the WebUI. A generated password is printed once; `--password-stdin` reads one instead."""

from __future__ import annotations

import argparse
import sys

from backend.cli.common import Subparsers, page_arguments, workspace_and_actor


def cmd_user(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    users = ws.users
    password = sys.stdin.readline().rstrip("\n") if getattr(args, "password_stdin", False) else ""
    if args.action == "add":
        view, password_used = users.add(actor, args.name, args.role, password, args.email or "")
        if not password:
            print(f"password for {view.name} (shown once): {password_used}")
        print(f"user {view.name} ({view.role}) added")
    elif args.action == "list":
        print(f"{'name':16} {'role':9} {'active':6} email")
        for v in users.list(actor, args.limit, args.offset):
            print(f"{v.name:16} {v.role:9} {'yes' if v.active else 'no':6} {v.email}")
    elif args.action == "role":
        view = users.set_role(actor, args.name, args.role)
        print(f"user {view.name} is now {view.role}")
    elif args.action in ("deactivate", "activate"):
        view = users.set_active(actor, args.name, args.action == "activate")
        print(f"user {view.name} {'activated' if view.active else 'deactivated (sessions ended, tokens refused)'}")
    elif args.action == "reset-password":
        new = users.reset_password(actor, args.name, password)
        if not password:
            print(f"new password for {args.name} (shown once): {new}")
        print(f"password of {args.name} reset; their WebUI sessions ended")
    else:
        users.delete(actor, args.name)
        print(f"user {args.name} deleted")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("user", help="users (admin): add, list, role, deactivate, activate, reset-password, delete")
    usub = p.add_subparsers(dest="action", required=True)
    q = usub.add_parser("add", help="a new user (a password is generated and printed once unless given)")
    q.add_argument("name")
    q.add_argument("--role", required=True, help="analyst, reviewer or admin")
    q.add_argument("--email")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    page_arguments(usub.add_parser("list", help="every user"), default_limit=200)
    q = usub.add_parser("role", help="change a user's role (never the last active admin's)")
    q.add_argument("name")
    q.add_argument("role", help="analyst, reviewer or admin")
    for action, text in (
        ("deactivate", "sign-in refused, sessions ended, tokens refused (never the last active admin)"),
        ("activate", "let a deactivated user back in"),
        ("delete", "remove a user without change requests, reviews or runs (others: deactivate)"),
    ):
        usub.add_parser(action, help=text).add_argument("name")
    q = usub.add_parser("reset-password", help="a new password (generated unless given); their sessions end")
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true", help="read the new password from standard input")
    p.set_defaults(func=cmd_user)
