"""`lfops lineage`: where a model came from, or what came from a commit or a dataset version."""

from __future__ import annotations

import argparse

from backend.cli.common import Subparsers, fmt_loss, workspace_and_actor


def cmd_lineage(args: argparse.Namespace) -> int:
    from backend.lineage import ModelLineage

    ws, actor = workspace_and_actor(args)
    result = ws.lineage.lookup(actor, args.term)
    if isinstance(result, ModelLineage):
        m = result
        print(f"model {m.model.ref} ({m.model.kind}) at {m.model.artifact_uri}")
        for parent in m.ancestors:
            print(f"  made from {parent.ref} ({parent.kind})")
        cr = m.change_request
        if cr is not None:
            print(f"  change request #{cr.id} {cr.title!r} by {cr.author}, merged by {cr.merged_by}")
            print(f"  approved by {', '.join(cr.approvers) or '-'}")
        if m.retrain is not None:
            print(f"  {m.because}")
        print(f"  commit {m.commit}  config {m.config_path}\n  config hash {m.config_hash}")
        print(f"  dataset version {m.dataset_version}\n  base model {m.base_model} @ {m.base_model_revision}")
        if m.run is not None:
            print(f"  run #{m.run.id} [{m.run.status}] by {m.run.submitted_by}")
            if m.run.override_reason:
                print(f"  launched by override: {m.run.override_reason}")
        print(f"  final train loss {fmt_loss(m.final_loss)}")
        for key, value in sorted(m.final_metrics.items()):
            print(f"    {key} = {value:g}")
        for d in m.derived:
            print(f"  exported as {d.ref}")
        for r in m.reproductions:
            print(f"  reproduced by run #{r.id} [{r.status}] final train loss {fmt_loss(r.final_loss)}")
        for dep in m.deployments:
            print(f"  deployed to {dep.target} [{dep.status}] {dep.endpoint}")
        for period in m.served:
            how = "deployed" if period.trigger == "deploy" else "rolled out"
            how += f" by {period.actor}" + (", following its config" if period.trigger == "follow" else "")
            if period.until is None:
                when = f"since {period.since:%Y-%m-%d %H:%M:%S}"
            else:
                when = f"from {period.since:%Y-%m-%d %H:%M:%S} until {period.until:%Y-%m-%d %H:%M:%S}"
            where = f", endpoint {period.endpoint}" if period.current else ""
            print(f"  served by {period.deployment} on {period.target} {when} ({how}){where}")
        return 0
    d = result
    print(f"from {d.kind.replace('_', ' ')} {d.key}:")
    for c in d.configs:
        cr = f" (change request #{c['change_request']})" if c["change_request"] else ""
        print(f"  config {c['path']} @ {c['commit'][:12]}{cr}")
    for r in d.runs:
        print(f"  run #{r.id} [{r.status}] {r.config_path} final train loss {fmt_loss(r.final_loss)}")
    for mv in d.models:
        print(f"  model {mv.ref} ({mv.kind})")
    for dep in d.deployments:
        print(f"  deployment #{dep.id} of {dep.model} to {dep.target} [{dep.status}]")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("lineage", help="where a model came from, or what came from a commit or dataset version")
    p.add_argument("term", help="MODEL[:vN], COMMIT or DATASET-VERSION (sha256:...)")
    p.set_defaults(func=cmd_lineage)
