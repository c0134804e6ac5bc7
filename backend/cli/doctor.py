"""`lfops doctor [--repair]`: check that the database agrees with Git (and runs with their processes), and repair.

Prints one line per finding; exit 0 when nothing is left broken, 1 when something is (found without --repair, or a
finding the repair leaves to a person).
"""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace


def cmd_doctor(args: argparse.Namespace) -> int:
    from backend.reconcile import reconcile

    findings = reconcile(workspace(args), repair=args.repair)
    for finding in findings:
        print(finding)
    left = [f for f in findings if not f.repaired]
    if not findings:
        print("ok: the database agrees with Git")
    elif args.repair:
        print(f"{len(findings) - len(left)} repaired, {len(left)} left to a person")
    else:
        print(f"{len(findings)} found; `lfops doctor --repair` repairs what it can")
    return 1 if left else 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="check the database against Git (and runs); --repair fixes what it can")
    p.add_argument("--repair", action="store_true", help="repair what can be repaired (each repair is audited)")
    p.set_defaults(func=cmd_doctor)
