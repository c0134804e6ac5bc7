"""`lfops forge status` (each change request's pull request and its forge state) and `lfops forge sync [NUMBER]`
(re-read one pull request, or all open ones and publish the missing: what the periodic reconcile does)."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace
from backend.errors import SettingsError
from backend.forge_sync import ForgeSync


def _sync(args: argparse.Namespace) -> ForgeSync:
    sync = workspace(args).forge_sync
    if sync is None:
        raise SettingsError(
            "LFOPS_FORGE: no forge is configured (none); set LFOPS_FORGE and its settings", field="LFOPS_FORGE"
        )
    return sync


def cmd_status(args: argparse.Namespace) -> int:
    sync = _sync(args)
    print(f"forge: {sync.forge.kind} {getattr(sync.forge, 'repo', '')}")
    for pr in sync.pull_requests():
        validated = "validated" if pr.validated_commit == pr.head_commit else "not validated yet"
        print(
            f"#{pr.change_request:<5} PR #{pr.number:<5} {pr.label:<10} "
            f"head {pr.head_commit[:12]} ({validated})  {pr.url}"
        )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    sync = _sync(args)
    if args.number is not None:
        view = sync.sync(args.number)
        print(
            f"PR #{args.number}: "
            + (f"{view.label}, change request #{view.change_request}" if view else "not lfops', its head validated")
        )
        return 0
    findings = sync.reconcile(repair=True)
    for finding in findings:
        print(finding)
    print(f"ok: {len(sync.pull_requests())} pull requests in step with the forge")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("forge", help="pull requests on the forge (LFOPS_FORGE): status, sync")
    forge_sub = p.add_subparsers(dest="forge_command", required=True)
    status = forge_sub.add_parser("status", help="each change request's pull request and its forge state")
    status.set_defaults(func=cmd_status)
    sync = forge_sub.add_parser("sync", help="re-read pull requests from the forge (webhooks missed, forge was down)")
    sync.add_argument("number", nargs="?", type=int, help="one pull request's number (default: all open ones)")
    sync.set_defaults(func=cmd_sync)
