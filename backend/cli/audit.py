"""`lfops audit list`: the audit log, newest first, filtered by actor, action, subject and time (admins)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from backend.cli.common import Subparsers, page_arguments, print_more, workspace_and_actor


def _time(text: str) -> datetime:
    """ISO 8601 (2026-12-01, 2026-12-01T10:00, ...Z or +02:00); without a zone it is UTC."""
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 2026-12-01T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_audit(args: argparse.Namespace) -> int:
    from backend import audit

    ws, actor = workspace_and_actor(args)
    where = audit.AuditFilter(
        actor=args.actor or "", action=args.action or "", subject=args.subject or "", since=args.since, until=args.until
    )
    page = audit.search(ws.store, actor, where, args.limit, args.offset)
    if args.json:
        for e in page.items:
            print(
                json.dumps(
                    {
                        "id": e.id,
                        "at": e.at.isoformat(),
                        "actor": e.actor,
                        "action": e.action,
                        "subject": e.subject,
                        "detail": e.detail,
                    },
                    sort_keys=True,
                )
            )
    else:
        print(f"{'id':>6} {'at (UTC)':19} {'actor':12} {'action':24} {'subject':28} detail")
        for e in page.items:
            detail = json.dumps(e.detail, sort_keys=True) if e.detail else ""
            print(f"{e.id:>6} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:12} {e.action:24} {e.subject:28} {detail}")
    print_more(page)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("audit", help="the audit log (admin)")
    asub = p.add_subparsers(dest="what", required=True)
    q = asub.add_parser("list", help="events, newest first")
    q.add_argument("--actor", help="who acted (exactly)")
    q.add_argument("--action", help="an action (user.role), or all under a prefix ending in '.' (user.)")
    q.add_argument("--subject", help="what was acted on (user:alice, cr:12, token:0a1b2c3d4e5f)")
    q.add_argument("--since", type=_time, help="from this time (ISO 8601; UTC unless a zone is given)")
    q.add_argument("--until", type=_time, help="before this time")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    page_arguments(q)
    p.set_defaults(func=cmd_audit)
