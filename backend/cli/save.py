"""`lfops save`: commit a config on a new branch and open a change request for it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.cli.common import Subparsers, workspace_and_actor
from backend.errors import LfopsError


def cmd_save(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    if args.update is not None:
        if args.name or args.branch:
            raise LfopsError("--update: the change request keeps its file and branch; leave out --name and --branch")
        result = ws.changes.update(actor, args.update, data, args.message)
        print(f"change request #{result.change_request} updated (open again: the new head needs an approval)")
    else:
        if not args.name:
            raise LfopsError("--name: give the config a name (configs/<name>.yaml), or --update N", field="name")
        result = ws.changes.save(actor, data, args.name, args.message, branch=args.branch)
        print(f"change request #{result.change_request} opened")
    print(f"  branch  {result.branch}\n  commit  {result.commit}\n  config  {result.config_path}")
    print(f"  config hash      {result.config_hash}\n  dataset version  {result.dataset_version}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    for note in result.preflight:
        print(f"  {note}")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("save", help="commit a config on a new branch and open a change request (or --update one)")
    p.add_argument("file", help="config YAML, or - for standard input")
    p.add_argument("--name", help="config name: configs/<name>.yaml (required unless --update)")
    p.add_argument("--update", type=int, metavar="N", help="add the config as a new revision of change request #N")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--branch", help="branch name (default: <user>/<name>)")
    p.set_defaults(func=cmd_save)
