"""`lfops log`: the history of main with each commit's trailers."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace


def cmd_log(args: argparse.Namespace) -> int:
    ws = workspace(args)
    ws.repo.fetch()
    for entry in ws.repo.log(f"refs/remotes/origin/{ws.settings.main_branch}", args.path, args.limit):
        print(f"{entry['commit'][:12]} {entry['date'][:19]} {entry['author']}: {entry['subject']}")
        for key, values in entry["trailers"].items():
            for value in values:
                print(f"    {key}: {value}")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("log", help="history of main with trailers")
    p.add_argument("path", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_log)
