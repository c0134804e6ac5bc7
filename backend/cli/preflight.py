"""`lfops preflight CONFIG [--profile P]`: which launch targets can run a config, and the memory it needs per device.

The same verdicts as the save note, the review and the launch refusal (backend.preflight): this machine (the local
runner) and every cluster profile, or the one named. Exit 0 when the target (any target, without --profile) can run
the config as it is, 1 when not, 2 when the config or the profile is wrong.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.common import Subparsers


def cmd_preflight(args: argparse.Namespace) -> int:
    from backend.config import DirFiles, TrainConfig
    from backend.errors import LfopsError, ValidationFailed
    from backend.preflight import Preflight
    from backend.settings import Settings

    settings = Settings.from_env(args.workspace)
    Preflight(settings).check_profile(args.profile, named="--profile")  # before the config is read
    try:
        config = TrainConfig.load(args.config)
    except OSError as exc:
        raise LfopsError(f"config: {args.config}: {exc.strerror}", field="config") from None
    files = DirFiles(_repo_root(Path(args.config)))
    errors = [p for p in config.check_args(files) if p.severity == "error"]
    if errors:
        raise ValidationFailed(errors, args.config)
    report = Preflight(settings).report(config, files, args.profile)
    print(report.table())
    for verdict in report.verdicts:
        if verdict.memory is not None and args.verbose:
            notes = "; ".join(verdict.memory.notes)
            print(f"\n{verdict.target.label}: {verdict.memory.summary()}\n  {notes}")
    return 0 if any(v.runnable for v in report.verdicts) else 1


def _repo_root(path: Path) -> Path:
    """The nearest folder above the config holding data/dataset_info.json (its DeepSpeed file is relative to it)."""
    for parent in [path.resolve().parent, *path.resolve().parents]:
        if (parent / "data" / "dataset_info.json").exists():
            return parent
    return Path.cwd()


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "preflight", help="which launch targets can run a config (precision, kernels, GPUs, memory per device)"
    )
    p.add_argument("config", help="config YAML")
    p.add_argument("--profile", help="only this target: a cluster profile, or 'local' for this machine")
    p.add_argument("-v", "--verbose", action="store_true", help="also the memory estimate's parts and assumptions")
    p.set_defaults(func=cmd_preflight)
