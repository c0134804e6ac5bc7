"""`lfops init`: create the workspace (bare config repository, database, demo model, users)."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace
from backend.redaction import redact_url


def cmd_init(args: argparse.Namespace) -> int:
    ws = workspace(args)
    result = ws.init(demo_users=not args.no_demo_users)
    print(f"workspace: {result.settings.workspace}")
    print(f"config repository (origin): {redact_url(result.settings.repo_url)}")
    print(f"database: {ws.store.url if 'sqlite' in ws.store.url else '(from LFOPS_DATABASE_URL)'}")
    if result.credentials:
        print("users created (passwords are shown only this once):")
        for name, (role, password) in result.credentials.items():
            print(f"  {name:8} {role:9} {password}")
    elif result.users:
        print(f"users created: {', '.join(result.users)} (password from LFOPS_ADMIN_PASSWORD)")
    else:
        print("workspace already initialised; nothing changed")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("init", help="create the workspace: bare config repo, SQLite, tiny demo model, users")
    p.add_argument("--no-demo-users", action="store_true", help="create only the admin user")
    p.set_defaults(func=cmd_init)
