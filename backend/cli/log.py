"""`lfops log`: the history of main with each commit's trailers, checked against the database.

Trailers are claims anyone who can push could write: a commit whose lfops trailers the database contradicts gets a
`! not verified:` line under it, and the command exits 1.
"""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace


def cmd_log(args: argparse.Namespace) -> int:
    from backend import provenance

    ws = workspace(args)
    ws.repo.fetch()
    mismatches = 0
    entries = ws.repo.log(f"refs/remotes/origin/{ws.settings.main_branch}", args.path, args.limit)
    with ws.store.session() as s:
        for entry in entries:
            print(f"{entry['commit'][:12]} {entry['date'][:19]} {entry['author']}: {entry['subject']}")
            for key, values in entry["trailers"].items():
                for value in values:
                    print(f"    {key}: {value}")
            for problem in provenance.verify(s, entry["commit"], entry["parents"], entry["trailers"]):
                mismatches += 1
                print(f"    ! not verified: {problem}")
    return 1 if mismatches else 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("log", help="history of main with trailers (checked against the database)")
    p.add_argument("path", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_log)
