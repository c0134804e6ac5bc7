"""`lfops deploy | deployments`: serve registry versions behind the lfops gateway, locally or on a cluster profile.

`deployments list | show` also work through a remote lfops' API (LFOPS_URL, backend.cli.remote), printing the same.

Exit codes: 0 done, 2 error (refused, not found, failed to start: nothing was left half-made).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from backend.cli.common import Subparsers, workspace_and_actor
from backend.cli.remote import Remote
from backend.errors import LfopsError

if TYPE_CHECKING:
    from backend.serving.service import DeploymentDetail, DeploymentInfo, KeyInfo


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def print_deployment(d: DeploymentInfo) -> None:
    follows = f"  follows {d.follows_config}" if d.follows_config else "  pinned"
    where = f"{d.target}/{d.namespace}" if d.namespace else d.target
    print(f"{d.name} [{d.status}] {d.model} on {where}{follows}")
    if d.status != "stopped":
        print(f"  endpoint {d.endpoint}")
    if d.live is not None:
        live = f"  now: {d.live.state}" + (f", serving {d.live.model_version}" if d.live.model_version else "")
        print(live + (f" ({d.live.detail})" if d.live.detail else "") + (f": {d.live.reason}" if d.live.reason else ""))
    print(
        f"  deployed by {d.created_by or '-'} at {_when(d.created_at)}"
        + (f", stopped {_when(d.stopped_at)}" if d.stopped_at else "")
    )
    if d.reason:
        print(f"  reason: {d.reason}")


def print_key(k: KeyInfo) -> None:
    state = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
    print(f"  key {k.key_id}  {state}  {k.label or '-'}  created by {k.created_by} at {_when(k.created_at)}")


def cmd_deploy(args: argparse.Namespace) -> int:
    ws, actor = workspace_and_actor(args)
    done = ws.serving.deploy(
        actor,
        args.model,
        target=args.target,
        name=args.name,
        follow=args.follow,
        port=args.port,
        ready_timeout_s=args.ready_timeout,
    )
    print_deployment(done.deployment)
    print(f"API key (shown only now; `deployments keys {done.deployment.name} create` makes more):")
    print(f"  {done.api_key}")
    print(f"  e.g. openai.OpenAI(base_url={done.deployment.endpoint!r}, api_key=KEY), model={done.deployment.name!r}")
    return 0


def print_detail(detail: DeploymentDetail) -> None:
    print_deployment(detail.deployment)
    for r in detail.rollouts:
        took = f" in {r.switch_s:.1f} s" if r.switch_s is not None else ""
        why = f": {r.reason}" if r.reason else ""
        print(
            f"  {_when(r.started_at)} {r.trigger:8} {r.from_model or '-'} -> {r.to_model or '-'} "
            f"by {r.actor} [{r.status}]{took}{why}"
        )
    for k in detail.keys:
        print_key(k)


def cmd_deployments(args: argparse.Namespace) -> int:
    remote = Remote.from_env() if args.action in ("list", "show") else None  # these two also work through the API
    if remote is not None:
        if args.action == "list":
            for d in remote.deployments(live=args.live, include_stopped=args.all):
                print_deployment(d)
        else:
            print_detail(remote.deployment_detail(args.name))
        return 0
    ws, actor = workspace_and_actor(args)
    serving = ws.serving
    if args.action == "list":
        for d in serving.list(actor, live=args.live, include_stopped=args.all):
            print_deployment(d)
        return 0
    if args.action == "show":
        print_detail(serving.show(actor, args.name))
        return 0
    if args.action == "undeploy":
        print_deployment(serving.undeploy(actor, args.name))
        return 0
    if args.action == "rollout":
        print_deployment(serving.rollout(actor, args.name, args.model))
        return 0
    if args.action == "keys":
        if args.key_action == "list":
            for k in serving.keys(actor, args.name):
                print_key(k)
            return 0
        if args.key_action == "create":
            key, info = serving.create_key(actor, args.name, args.label or "")
            print(f"API key {info.key_id} for {args.name} (shown only now):\n  {key}")
            return 0
        if args.key_action == "revoke":
            print_key(serving.revoke_key(actor, args.name, args.key_id))
            return 0
    raise LfopsError(f"deployments: unknown action {args.action}")


def register_deploy(sub: Subparsers) -> None:
    p = sub.add_parser("deploy", help="serve a registry version behind the lfops gateway (OpenAI API, keys, metrics)")
    p.add_argument("model", help="NAME (newest version) or NAME:vN")
    p.add_argument("--target", default="local", help="local (default) or a cluster profile")
    p.add_argument("--name", help="deployment name (default: from the model name)")
    p.add_argument("--port", type=int, help="local: the gateway's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--follow", action="store_true", help="roll to each version later registered from the same config")
    p.add_argument("--ready-timeout", type=float, help="seconds to wait for the model to load (default: 300)")
    p.set_defaults(func=cmd_deploy)


def register_deployments(sub: Subparsers) -> None:
    p = sub.add_parser("deployments", help="served models: list, show, undeploy, rollout, keys")
    gsub = p.add_subparsers(dest="action", required=True)
    q = gsub.add_parser("list")
    q.add_argument("--all", action="store_true", help="undeployed ones too")
    q.add_argument("--live", action="store_true", help="ask each target for its state now")
    for action in ("show", "undeploy"):
        gsub.add_parser(action).add_argument("name")
    q = gsub.add_parser("rollout", help="serve another version with no failed request")
    q.add_argument("name")
    q.add_argument("model", nargs="?", help="NAME:vN (default: the newest of the followed config or model)")
    q = gsub.add_parser("keys", help="API keys: list, create (shown once), revoke")
    q.add_argument("name")
    ksub = q.add_subparsers(dest="key_action", required=True)
    ksub.add_parser("list")
    ksub.add_parser("create").add_argument("--label", help="what the key is for (shown in listings)")
    ksub.add_parser("revoke").add_argument("key_id", help="the 8-digit id in lfk_<id>_...")
    p.set_defaults(func=cmd_deployments)
