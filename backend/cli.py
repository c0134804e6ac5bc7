"""`lfops`: the command line over the backend library.

Who acts is `--user` (or LFOPS_USER) with the password from LFOPS_PASSWORD or a prompt; the backend checks roles.
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.errors import LfopsError

Handler = Callable[[argparse.Namespace], int]


def _workspace(args: argparse.Namespace) -> Any:
    from backend.settings import Settings
    from backend.workspace import Workspace

    return Workspace(Settings.from_env(args.workspace))


def _actor(args: argparse.Namespace, ws: Any) -> Any:
    name = args.user or os.environ.get("LFOPS_USER")
    if not name:
        raise LfopsError("user: pass --user NAME or set LFOPS_USER")
    password = os.environ.get("LFOPS_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise LfopsError("password: set LFOPS_PASSWORD (no terminal to ask on)")
        password = getpass.getpass(f"password for {name}: ")
    return ws.login(name, password)


def cmd_init(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    result = ws.init(demo_users=not args.no_demo_users)
    print(f"workspace: {result.settings.workspace}")
    print(f"config repository (origin): {result.settings.repo_url}")
    print(f"database: {ws.store.url if 'sqlite' in ws.store.url else '(from LFOPS_DATABASE_URL)'}")
    if result.credentials:
        print("users created (passwords are shown only this once):")
        for name, (role, password) in result.credentials.items():
            print(f"  {name:8} {role:9} {password}")
    else:
        print("workspace already initialised; nothing changed")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from backend.ci import problem_line
    from backend.config import DirFiles, TrainConfig
    from backend.errors import Problem, ValidationFailed

    failed = 0
    for path in args.paths:
        root = Path(args.repo_root) if args.repo_root else _repo_root(Path(path))
        try:
            config = TrainConfig.load(path)
            report, version = config.validate(DirFiles(root))
        except ValidationFailed as exc:
            for problem in exc.problems:
                print(problem_line(path, problem, args.format))
            failed += 1
            continue
        except OSError as exc:
            print(problem_line(path, Problem("file", str(exc.strerror)), args.format))
            failed += 1
            continue
        for problem in report.problems:
            print(problem_line(path, problem, args.format))
        if report.ok:
            print(f"{path}: ok config_hash={config.config_hash()[:12]} dataset_version={version[:19]}", file=sys.stderr)
        else:
            failed += 1
    return 1 if failed else 0


def _repo_root(path: Path) -> Path:
    """The nearest folder above `path` holding data/dataset_info.json, else the current directory."""
    for parent in [path.resolve().parent, *path.resolve().parents]:
        if (parent / "data" / "dataset_info.json").exists():
            return parent
    return Path.cwd()


def cmd_save(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    actor = _actor(args, ws)
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    result = ws.changes.save(actor, data, args.name, args.message, branch=args.branch)
    print(f"change request #{result.change_request} opened")
    print(f"  branch  {result.branch}\n  commit  {result.commit}\n  config  {result.config_path}")
    print(f"  config hash      {result.config_hash}\n  dataset version  {result.dataset_version}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return 0


def _print_request(view: Any) -> None:
    approvers = ", ".join(view.approvers) or "-"
    print(f"#{view.id} [{view.status}] {view.title}")
    print(f"  author {view.author}  branch {view.branch}  config {view.config_path}")
    print(f"  head {view.head_commit}  approved by {approvers}")
    if view.merged_commit:
        print(f"  merged as {view.merged_commit} by {view.merged_by}")


def cmd_review(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    actor = _actor(args, ws)
    changes = ws.changes
    if args.action == "list":
        for view in changes.list(actor, status=args.status, author=args.author):
            print(f"#{view.id:<4} {view.status:18} {view.author:10} {view.config_path:32} {view.title}")
        return 0
    if args.action == "show":
        detail = changes.show(actor, args.id)
        _print_request(detail.request)
        for review in detail.request.reviews:
            print(f"  {review.at:%Y-%m-%d %H:%M} {review.reviewer} {review.decision}: {review.comment}")
        print("\nvalidation:\n  " + "\n  ".join(detail.validation))
        print(f"\nhyperparameters (before = {detail.baseline}):")
        for row in detail.params:
            if row.change != "unchanged":
                print(f"  {row.key:32} {row.before!s:>20} -> {row.after!s}")
        print("\n" + detail.yaml_diff)
        return 0
    if args.action == "approve":
        _print_request(changes.approve(actor, args.id, args.comment or ""))
    elif args.action == "request-changes":
        _print_request(changes.request_changes(actor, args.id, args.comment or ""))
    elif args.action == "merge":
        _print_request(changes.merge(actor, args.id))
    elif args.action == "close":
        _print_request(changes.close(actor, args.id))
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    from backend import audit
    from backend.auth import add_user, require

    ws = _workspace(args)
    actor = require(_actor(args, ws), "user.manage")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    if not password:
        from backend.auth import new_password

        password = new_password()
        print(f"password for {args.name} (shown once): {password}")
    with ws.store.session() as s:
        user = add_user(s, args.name, args.role, password, args.email or "")
        audit.record(s, actor, "user.add", f"user:{user.name}", role=user.role)
    print(f"user {args.name} ({args.role}) added")
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    from backend.config import TrainConfig
    from backend.review import param_table

    def load(spec: str) -> tuple[TrainConfig, str]:
        if ":" in spec and not Path(spec).exists():
            ref, _, path = spec.partition(":")
            ws = _workspace(args)
            ws.repo.fetch()
            raw = ws.repo.read(f"refs/remotes/origin/{ref}" if "/" not in ref and len(ref) < 40 else ref, path)
            if raw is None:
                raise LfopsError(f"{spec}: no such file at that ref")
            return TrainConfig.parse(raw, spec), raw.decode()
        raw_bytes = Path(spec).read_bytes()
        return TrainConfig.parse(raw_bytes, spec), raw_bytes.decode()

    (old, _old_text), (new, _new_text) = load(args.old), load(args.new)
    rows, _ = param_table(old.normalised_args(), new.normalised_args())
    for row in rows:
        if row.change != "unchanged":
            print(f"{row.change:9} {row.key:32} {row.before!s:>20} -> {row.after!s}")
    sys.stdout.writelines(
        difflib.unified_diff(
            old.canonical_yaml().splitlines(True), new.canonical_yaml().splitlines(True), args.old, args.new
        )
    )
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    ws.repo.fetch()
    for entry in ws.repo.log(f"refs/remotes/origin/{ws.settings.main_branch}", args.path, args.limit):
        print(f"{entry['commit'][:12]} {entry['date'][:19]} {entry['author']}: {entry['subject']}")
        for key, values in entry["trailers"].items():
            for value in values:
                print(f"    {key}: {value}")
    return 0


def cmd_webui(args: argparse.Namespace) -> int:
    from webui.serve import serve  # Gradio and LLaMA-Factory load only for this command

    return serve(host=args.host, port=args.port, no_auth=args.no_auth, workspace=args.workspace)


def cmd_cluster(args: argparse.Namespace) -> int:
    """Cluster profiles (LFOPS_CLUSTER_PROFILES) and the Kubernetes objects a launch would create, for review."""
    from backend.settings import Settings

    settings = Settings.from_env(args.workspace)
    if args.action == "profiles":
        if not settings.cluster_profiles:
            print("no cluster profiles configured (LFOPS_CLUSTER_PROFILES, see docs/cluster.md)")
            return 0
        from backend.runners.k8s_manifests import check_profile

        bad = 0
        for p in settings.cluster_profiles.values():
            queue = f" queue={p.kueue_queue}" if p.kueue_queue else ""
            print(f"{p.name:12} namespace={p.namespace} image={p.image} gpus/node={p.gpus_per_node}{queue}")
            for problem in check_profile(p):
                print(f"  error: {problem}")
                bad += 1
        return 1 if bad else 0
    from backend.runners.base import Resources

    ws = _workspace(args)
    resources = Resources(gpus_per_node=args.gpus, nodes=args.nodes, profile=args.profile or "")
    print(ws.runs.preview(args.target, args.config, resources), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfops", description="Reviewed, traceable LLaMA-Factory fine-tuning.")
    parser.add_argument("--workspace", help="workspace directory (default: $LFOPS_WORKSPACE or ./.lfops)")
    parser.add_argument("--user", help="who acts (default: $LFOPS_USER); password from $LFOPS_PASSWORD or a prompt")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the workspace: bare config repo, SQLite, tiny demo model, users")
    p.add_argument("--no-demo-users", action="store_true", help="create only the admin user")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("validate", help="validate config files (for CI); one line per problem, non-zero on error")
    p.add_argument("paths", nargs="+")
    p.add_argument("--repo-root", help="repository root holding data/ (default: found from each path)")
    p.add_argument(
        "--format", choices=["text", "github"], default="text", help="github: GitHub/Gitea workflow annotations"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("save", help="commit a config on a new branch and open a change request")
    p.add_argument("file", help="config YAML, or - for standard input")
    p.add_argument("--name", required=True, help="config name: configs/<name>.yaml")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--branch", help="branch name (default: <user>/<name>)")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("review", help="change requests")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list")
    q.add_argument("--status")
    q.add_argument("--author")
    for action in ("show", "approve", "request-changes", "merge", "close"):
        q = rsub.add_parser(action)
        q.add_argument("id", type=int)
        if action in ("approve", "request-changes"):
            q.add_argument("-c", "--comment")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("user", help="users (admin)")
    usub = p.add_subparsers(dest="action", required=True)
    q = usub.add_parser("add")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=["analyst", "reviewer", "admin"])
    q.add_argument("--email")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("config", help="configs")
    csub = p.add_subparsers(dest="action", required=True)
    q = csub.add_parser("diff", help="hyperparameter table and YAML diff of two configs (paths or REF:PATH)")
    q.add_argument("old")
    q.add_argument("new")
    p.set_defaults(func=cmd_config_diff)

    p = sub.add_parser("log", help="history of main with trailers")
    p.add_argument("path", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("webui", help="the WebUI: LlamaBoard with Save to repo, Review, Runs & lineage (sign-in)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-auth", action="store_true", help="no sign-in (refused unless the host is loopback)")
    p.set_defaults(func=cmd_webui)

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

    from backend import cli_runs  # launch, runs, registry, lineage, reproduce

    cli_runs.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LfopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
