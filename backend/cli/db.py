"""`lfops db upgrade`: the one command (with `init` and the WebUI start) that changes the database schema."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace


def cmd_db(args: argparse.Namespace) -> int:
    from backend.store import redact_url

    ws = workspace(args)
    before, after = ws.store.upgrade()
    where = redact_url(ws.settings.database_url)
    if before == after:
        print(f"database {where}: schema already at {after}")
    else:
        print(f"database {where}: schema upgraded from {before or 'none (empty)'} to {after}")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("db", help="the metadata database")
    dsub = p.add_subparsers(dest="action", required=True)
    dsub.add_parser("upgrade", help="bring the schema to what this lfops needs (safe to run again, or at once)")
    p.set_defaults(func=cmd_db)
