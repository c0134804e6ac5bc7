"""`lfops notify targets add|list|remove | mute | unmute | mutes | deliveries | dispatch`: notifications of reviews,
runs and models to signed webhooks and to chat or e-mail through apprise."""

from __future__ import annotations

import argparse
import sys
import time

from backend.cli.common import Subparsers, page_arguments, workspace_and_actor


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def cmd_notify(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    notifications = ws.notifications
    targets = notifications.targets
    if args.action == "targets":
        if args.targets_action == "add":
            kind, url = ("webhook", args.webhook) if args.webhook else ("apprise", args.apprise)
            if url == "-":  # a URL with a token in it stays out of the shell history and the process list
                url = sys.stdin.readline().strip()
            added = targets.add(actor, args.name, kind, url, kinds=args.kind, user=args.user)
            t = added.target
            print(f"target {t.name!r} ({t.kind}) {t.address}: {', '.join(t.kinds) or 'every kind'}")
            if added.signing_secret:
                print("its signing secret is shown only this once (verify X-Lfops-Signature with it):")
                print(added.signing_secret)
            return 0
        if args.targets_action == "list":
            print(f"{'name':20} {'kind':8} {'user':10} {'kinds':40} address")
            for t in targets.list(actor):
                print(f"{t.name:20} {t.kind:8} {t.user or '-':10} {','.join(t.kinds) or 'all':40} {t.address}")
            return 0
        targets.remove(actor, args.name)
        print(f"target {args.name!r} removed")
        return 0
    if args.action in ("mute", "unmute"):
        mutes = getattr(targets, args.action)(actor, args.kind)
        print(f"{actor.name} mutes: {', '.join(mutes) or 'nothing'}")
        return 0
    if args.action == "mutes":
        print(f"{actor.name} mutes: {', '.join(targets.mutes(actor)) or 'nothing'}")
        return 0
    if args.action == "deliveries":
        rows = targets.deliveries(actor, args.target, args.status, limit=args.limit, offset=args.offset)
        print(f"{'id':>6} {'target':16} {'kind':17} {'subject':26} {'status':9} {'tries':>5} {'http':>4} last error")
        for d in rows:
            print(
                f"{d.id:>6} {d.target:16} {d.kind:17} {d.subject:26} {d.status:9} {d.attempts:>5} "
                f"{d.last_status or '-':>4} {d.last_error}"
            )
        return 0
    if args.once:  # dispatch
        result = notifications.dispatcher.run_once()
        print(
            f"{result.created} deliveries created, {result.delivered} delivered, {result.retried} to retry, "
            f"{result.failed} failed"
        )
        return 0
    notifier = notifications.start_notifier()
    print("dispatching notifications (Ctrl-C to stop)", flush=True)
    try:
        while notifier.alive:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    notifier.stop()
    return 0


def register(sub: Subparsers) -> None:
    # kinds and URLs are checked by backend.notifications (not imported here: `lfops --help` stays light)
    p = sub.add_parser("notify", help="notifications: targets (admins), your mutes, the delivery log, dispatch")
    nsub = p.add_subparsers(dest="action", required=True)
    t = nsub.add_parser("targets", help="admin: where notifications go")
    tsub = t.add_subparsers(dest="targets_action", required=True)
    q = tsub.add_parser("add", help="a signed webhook (its secret printed once) or an apprise URL (chat, e-mail)")
    q.add_argument("name")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--webhook", metavar="URL", help="POST signed JSON here")
    where.add_argument(
        "--apprise", metavar="URL", help="an apprise URL (slack://, mailto://, json://...); - reads stdin"
    )
    q.add_argument("--kind", action="append", default=[], help="an event kind to send (repeatable; default: all)")
    q.add_argument("--user", help="the user this target belongs to (their mutes apply)")
    tsub.add_parser("list", help="the targets")
    tsub.add_parser("remove", help="stop sending to a target").add_argument("name")
    nsub.add_parser("mute", help="no more KIND to your own targets").add_argument("kind")
    nsub.add_parser("unmute", help="KIND to your own targets again").add_argument("kind")
    nsub.add_parser("mutes", help="the kinds you muted")
    q = nsub.add_parser("deliveries", help="admin: the delivery log, newest first")
    q.add_argument("--target")
    q.add_argument("--status", help="pending, delivered or failed")
    page_arguments(q)
    q = nsub.add_parser("dispatch", help="send notifications (the WebUI does this itself while it runs)")
    q.add_argument("--once", action="store_true", help="one pass, then exit")
    p.set_defaults(func=cmd_notify)
