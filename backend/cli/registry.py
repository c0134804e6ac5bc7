"""`lfops registry list | show | verify | export | push`: registered model versions.

Exit codes: `verify` exits 1 when it finds problems.
"""

from __future__ import annotations

import argparse
import json

from backend.cli.common import Subparsers, page_arguments, print_more, workspace_and_actor
from backend.errors import LfopsError


def cmd_registry(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    reg = ws.registry
    if args.action == "list":
        from backend.paging import Page

        page = Page.of(lambda limit, offset: reg.list(actor, args.name, limit, offset), args.limit, args.offset)
        for v in page.items:
            hub = f"  hub {v.hub_repo}@{v.hub_revision}" if v.hub_repo else ""
            parent = f"  parent #{v.parent_id}" if v.parent_id else ""
            print(f"{v.ref:28} {v.kind:8} run #{v.run_id}  {v.created_at:%Y-%m-%d %H:%M}{parent}{hub}")
        print_more(page)
        return 0
    if args.action == "show":
        manifest = reg.manifest(actor, args.model)
        files = manifest.pop("files", {})
        print(json.dumps(manifest, indent=1, default=str))
        print(f"files ({len(files)}):")
        for rel, meta in files.items():
            print(f"  {meta['sha256'][:16]} {meta['size']:>12} {rel}")
        return 0
    if args.action == "verify":
        report = reg.verify(actor, args.model)
        for problem in report.problems:
            print(f"{report.ref}: {problem}")
        print(f"{report.ref}: {'ok' if report.ok else 'FAILED'} ({report.files_checked} files checked)")
        return 0 if report.ok else 1
    if args.action == "export":
        view = reg.export(actor, args.model)
        print(f"exported {view.ref} (full model, parent #{view.parent_id}) at {view.artifact_uri}")
        return 0
    if args.action == "push":
        view = reg.push(actor, args.model, repo_id=args.repo)
        print(f"pushed {view.ref} to {view.hub_repo} at revision {view.hub_revision}")
        return 0
    raise LfopsError(f"registry: unknown action {args.action}")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("registry", help="model versions: list, show, verify, export, push")
    gsub = p.add_subparsers(dest="action", required=True)
    q = gsub.add_parser("list")
    q.add_argument("name", nargs="?")
    page_arguments(q)
    for action in ("show", "verify", "export"):
        gsub.add_parser(action).add_argument("model", help="NAME (newest version) or NAME:vN")
    q = gsub.add_parser("push", help="upload to a Hugging Face Hub repo (token from HF_TOKEN)")
    q.add_argument("model")
    q.add_argument("--repo", help="OWNER/NAME (default: $LFOPS_HUB_REPO)")
    p.set_defaults(func=cmd_registry)
