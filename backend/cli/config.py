"""`lfops config diff`: the hyperparameter table and YAML diff of two configs (files or REF:PATH)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backend.cli.common import Subparsers, workspace
from backend.errors import LfopsError

if TYPE_CHECKING:
    from backend.config import TrainConfig


def _load(args: argparse.Namespace, spec: str) -> TrainConfig:
    """A config file, or REF:PATH read from the config repository (a branch of origin, or a commit)."""
    from backend.config import TrainConfig

    if ":" in spec and not Path(spec).exists():
        ref, _, path = spec.partition(":")
        ws = workspace(args)
        ws.repo.fetch()
        raw = ws.repo.read(f"refs/remotes/origin/{ref}" if "/" not in ref and len(ref) < 40 else ref, path)
        if raw is None:
            raise LfopsError(f"{spec}: no such file at that ref", field=spec)
        return TrainConfig.parse(raw, spec)
    return TrainConfig.parse(Path(spec).read_bytes(), spec)


def cmd_config_diff(args: argparse.Namespace) -> int:
    from backend.review import param_table

    old, new = _load(args, args.old), _load(args, args.new)
    rows, _ = param_table(old.normalised_args(), new.normalised_args())
    for row in rows:
        if row.change != "unchanged":
            print(f"{row.change:9} {row.key:32} {row.before!s:>20} -> {row.after!s}")
    sys.stdout.writelines(
        difflib.unified_diff(
            old.canonical_yaml().splitlines(True), new.canonical_yaml().splitlines(True), args.old, args.new
        )
    )
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("config", help="configs")
    csub = p.add_subparsers(dest="action", required=True)
    q = csub.add_parser("diff", help="hyperparameter table and YAML diff of two configs (paths or REF:PATH)")
    q.add_argument("old")
    q.add_argument("new")
    p.set_defaults(func=cmd_config_diff)
