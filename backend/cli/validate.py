"""`lfops validate`: check config files as the config repository's CI does; one line per problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.cli.common import Subparsers


def cmd_validate(args: argparse.Namespace) -> int:
    from backend.ci import problem_line
    from backend.config import DirFiles, TrainConfig
    from backend.errors import Problem, ValidationFailed

    failed = 0
    for path in args.paths:
        root = Path(args.repo_root) if args.repo_root else _repo_root(Path(path))
        try:
            config = TrainConfig.load(path)
            report, version = config.validate(DirFiles(root))
        except ValidationFailed as exc:
            for problem in exc.problems:
                print(problem_line(path, problem, args.format))
            failed += 1
            continue
        except OSError as exc:
            print(problem_line(path, Problem("file", str(exc.strerror)), args.format))
            failed += 1
            continue
        for problem in report.problems:
            print(problem_line(path, problem, args.format))
        if report.ok:
            print(f"{path}: ok config_hash={config.config_hash()[:12]} dataset_version={version[:19]}", file=sys.stderr)
        else:
            failed += 1
    return 1 if failed else 0


def _repo_root(path: Path) -> Path:
    """The nearest folder above `path` holding data/dataset_info.json, else the current directory."""
    for parent in [path.resolve().parent, *path.resolve().parents]:
        if (parent / "data" / "dataset_info.json").exists():
            return parent
    return Path.cwd()


def register(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="validate config files (for CI); one line per problem, non-zero on error")
    p.add_argument("paths", nargs="+")
    p.add_argument("--repo-root", help="repository root holding data/ (default: found from each path)")
    p.add_argument(
        "--format", choices=["text", "github"], default="text", help="github: GitHub/Gitea workflow annotations"
    )
    p.set_defaults(func=cmd_validate)
