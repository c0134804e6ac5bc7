"""`lfops cluster profiles | preview`: cluster profiles, and the Kubernetes objects a launch would create."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, workspace


def cmd_cluster(args: argparse.Namespace) -> int:
    """Cluster profiles (LFOPS_CLUSTER_PROFILES) and the Kubernetes objects a launch would create, for review."""
    from backend.settings import Settings

    settings = Settings.from_env(args.workspace)
    if args.action == "profiles":
        if not settings.cluster_profiles:
            print("no cluster profiles configured (LFOPS_CLUSTER_PROFILES, see docs/cluster.md)")
            return 0
        from backend.runners.kubernetes.manifests import check_profile

        bad = 0
        for p in settings.cluster_profiles.values():
            queue = f" queue={p.kueue_queue}" if p.kueue_queue else ""
            gpu = "".join(  # what the launch preflight knows of its GPUs (docs/preflight.md)
                f" {name}={value}"
                for name, value in (
                    ("gpu", p.gpu_model),
                    ("gpu_memory_gib", p.gpu_memory_gib),
                    ("compute", p.gpu_compute_capability),
                )
                if value
            )
            print(f"{p.name:12} namespace={p.namespace} image={p.image} gpus/node={p.gpus_per_node}{queue}{gpu}")
            for problem in check_profile(p):
                print(f"  error: {problem}")
                bad += 1
        return 1 if bad else 0
    from backend.runners.base import Resources

    ws = workspace(args)
    resources = Resources(gpus_per_node=args.gpus, nodes=args.nodes, profile=args.profile or "")
    print(ws.runs.preview(args.target, args.config, resources, runner="kubernetes"), end="")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("cluster", help="Kubernetes: cluster profiles, and the manifests a launch would create")
    ksub = p.add_subparsers(dest="action", required=True)
    ksub.add_parser("profiles", help="the configured cluster profiles")
    q = ksub.add_parser("preview", help="print the Job/ConfigMap/Service YAML of a launch, without launching")
    q.add_argument("target", help="change request number (12 or #12) or commit id")
    q.add_argument("--config", help="config path in the repository (default: the change request's)")
    q.add_argument("--profile", help="cluster profile (default: the only one)")
    q.add_argument("--gpus", type=int, default=0, help="GPUs per node (default: the profile's)")
    q.add_argument("--nodes", type=int, default=1)
    p.set_defaults(func=cmd_cluster)
