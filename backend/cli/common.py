"""What the command groups share: the workspace and the acting user from the global options, and number printing.

Backend modules are imported inside the functions so that `lfops --help` and `lfops validate` start without loading
the store, Git or Kubernetes clients.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.errors import LfopsError

if TYPE_CHECKING:
    from backend.auth import Actor
    from backend.workspace import Workspace

# A command's handler: the parsed arguments in, the exit code out (0 done, 1 the thing asked about is not OK, 2 error).
Handler = Callable[[argparse.Namespace], int]
# What `ArgumentParser.add_subparsers` returns: each command group's `register` adds its commands to it.
Subparsers = argparse._SubParsersAction
Register = Callable[[Subparsers], None]


def workspace(args: argparse.Namespace) -> Workspace:
    """The workspace named by `--workspace` (else $LFOPS_WORKSPACE, else ./.lfops)."""
    from backend.settings import Settings
    from backend.workspace import Workspace

    return Workspace(Settings.from_env(args.workspace))


def actor(args: argparse.Namespace, ws: Workspace) -> Actor:
    """Who acts: `--user` or $LFOPS_USER, signed in with $LFOPS_PASSWORD or a password prompt."""
    name = args.user or os.environ.get("LFOPS_USER")
    if not name:
        raise LfopsError("user: pass --user NAME or set LFOPS_USER", field="user")
    password = os.environ.get("LFOPS_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise LfopsError("password: set LFOPS_PASSWORD (no terminal to ask on)", field="password")
        password = getpass.getpass(f"password for {name}: ")
    return ws.login(name, password)


def workspace_and_actor(args: argparse.Namespace) -> tuple[Workspace, Actor]:
    ws = workspace(args)
    return ws, actor(args, ws)


def fmt_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
