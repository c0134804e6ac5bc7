"""`lfops`: the parser and the entry point. Each command group lives in its own module with a `register(subparsers)`.

Who acts is `--user` (or LFOPS_USER) with the password from LFOPS_PASSWORD or a prompt; the backend checks roles.
Command groups of other packages (the WebUI's `webui`) are found through the `lfops.commands` entry point group, so
the backend never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points

from backend.cli import (
    audit,
    cluster,
    config,
    db,
    doctor,
    forge,
    lineage,
    log,
    monitor,
    notify,
    preflight,
    registry,
    retrain,
    review,
    runs,
    save,
    serving,
    token,
    user,
    validate,
    workspace,
)
from backend.cli.common import Register
from backend.errors import LfopsError

# Entry points in this group name a `register(subparsers)` function that adds one command group to `lfops`.
COMMAND_GROUP = "lfops.commands"
# Where the command groups of other packages go in `lfops --help`: where `webui` has always been listed.
PLUGINS = None
# The command groups in the order `lfops --help` lists them.
COMMANDS: tuple[Register | None, ...] = (
    workspace.register,
    db.register,
    validate.register,
    preflight.register,
    save.register,
    review.register,
    user.register,
    audit.register,
    token.register,
    notify.register,
    config.register,
    log.register,
    PLUGINS,
    cluster.register,
    runs.register_launch,
    runs.register_runs,
    registry.register,
    serving.register_deploy,
    serving.register_deployments,
    monitor.register,
    lineage.register,
    retrain.register,
    runs.register_reproduce,
    doctor.register,
    forge.register,
)


def plugin_commands(found: Iterable[EntryPoint]) -> list[Register]:
    """The `register` functions the entry points name, by entry point name; one that cannot be imported is left out
    with a warning, so a broken extra never stops `lfops validate` in a config repository's CI."""
    registers = []
    for entry_point in sorted(found, key=lambda ep: ep.name):
        try:
            registers.append(entry_point.load())
        except ImportError as exc:
            print(f"warning: command {entry_point.name} ({entry_point.value}) not available: {exc}", file=sys.stderr)
    return registers


def installed_plugins() -> list[Register]:
    """The command groups that installed packages declare (pyproject.toml: [project.entry-points."lfops.commands"])."""
    return plugin_commands(entry_points(group=COMMAND_GROUP))


def build_parser(plugins: Sequence[Register] | None = None) -> argparse.ArgumentParser:
    """The whole `lfops` parser; `plugins` defaults to the installed command groups."""
    parser = argparse.ArgumentParser(prog="lfops", description="Reviewed, traceable LLaMA-Factory fine-tuning.")
    parser.add_argument("--workspace", help="workspace directory (default: $LFOPS_WORKSPACE or ./.lfops)")
    parser.add_argument("--user", help="who acts (default: $LFOPS_USER); password from $LFOPS_PASSWORD or a prompt")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        if register is PLUGINS:
            for add in installed_plugins() if plugins is None else plugins:
                add(sub)
        else:
            register(sub)
    return parser


def main(argv: list[str] | None = None, plugins: Sequence[Register] | None = None) -> int:
    args = build_parser(plugins).parse_args(argv)
    try:
        return args.func(args)
    except LfopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
