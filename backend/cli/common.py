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
from typing import TYPE_CHECKING, Any

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
    from backend.cli.remote import URL_VARIABLE, remote_url
    from backend.settings import Settings
    from backend.workspace import Workspace

    if remote_url():  # never act on a local database while the user means a remote lfops
        raise LfopsError(
            f"{URL_VARIABLE}: `lfops {args.command}` works on the database only; unset {URL_VARIABLE} to run it",
            field=URL_VARIABLE,
        )
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


def _page_number(field: str) -> Callable[[str], int]:
    """An argparse type for --limit / --offset, bounded as every list is (backend.paging)."""

    def parse(text: str) -> int:
        from backend.paging import MAX_LIMIT, MAX_OFFSET

        low, high = (1, MAX_LIMIT) if field == "limit" else (0, MAX_OFFSET)
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def page_arguments(parser: argparse.ArgumentParser, default_limit: int = 50) -> None:
    """--limit and --offset: which page of a list to print (newest first)."""
    parser.add_argument("--limit", type=_page_number("limit"), default=default_limit, help="rows per page (1-200)")
    parser.add_argument("--offset", type=_page_number("offset"), default=0, help="rows to skip (default 0)")


def print_more(page: Any) -> None:
    """Under a page of a list: how to ask for the next one (on standard error: the list itself stays as it was)."""
    if page.next_offset is not None:
        print(f"(more: --offset {page.next_offset})", file=sys.stderr)


def fmt_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
