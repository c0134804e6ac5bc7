"""`lfops save`: commit a config on a new branch and open a change request for it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.cli.common import Subparsers, workspace_and_actor


def cmd_save(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
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
    p = sub.add_parser("save", help="commit a config on a new branch and open a change request")
    p.add_argument("file", help="config YAML, or - for standard input")
    p.add_argument("--name", required=True, help="config name: configs/<name>.yaml")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--branch", help="branch name (default: <user>/<name>)")
    p.set_defaults(func=cmd_save)
