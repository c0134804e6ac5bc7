"""`lfops webui`: the WebUI's command, added to `lfops` through the `lfops.commands` entry point (pyproject.toml).

Only argparse here: Gradio and LLaMA-Factory load when the command runs, not when `lfops` builds its parser.
"""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers


def cmd_webui(args: argparse.Namespace) -> int:
    from webui.serve import serve

    return serve(host=args.host, port=args.port, no_auth=args.no_auth, workspace=args.workspace)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("webui", help="the WebUI: LlamaBoard with Save to repo, Review, Runs & lineage (sign-in)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-auth", action="store_true", help="no sign-in (refused unless the host is loopback)")
    p.set_defaults(func=cmd_webui)
