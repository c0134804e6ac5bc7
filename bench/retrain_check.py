"""What the dataset trigger costs: `Retrain.check()` with 0, 20 and 100 running deployments, each of a config and
merge of its own (nothing changed: the steady state of the periodic pass; the first pass, which reads and parses each
config once, is not counted), and a merge with its hook (launch on merge off, the check after the merge) against
the same merge without the hook, interleaved. Median of `--repeats` runs each, ms.

    .venv/bin/python bench/retrain_check.py --repeats 9
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_workspace, median, print_table, stopwatch  # noqa: E402


def deploy_rows(ws, config_ids: list[int], user_id: int, start: int) -> None:
    """Running deployments of versions trained from these configs, one each (the rows serving and the registry
    leave)."""
    from backend.store.models import Deployment, ModelVersion, Run

    with ws.store.session() as s:
        for i, config_id in enumerate(config_ids, start=start):
            run = Run(config_id=config_id, backend="local", status="succeeded", submitted_by_id=user_id)
            s.add(run)
            s.flush()
            mv = ModelVersion(name=f"m{i}", version=1, run_id=run.id, artifact_uri="-", manifest_sha256="0" * 64)
            s.add(mv)
            s.flush()
            s.add(Deployment(name=f"d{i}", model_version_id=mv.id, target="local", status="running"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    from sqlalchemy import select

    from backend.config import TrainConfig
    from backend.review import ChangeRequests
    from backend.store.models import Config, User

    with tempfile.TemporaryDirectory() as tmp:
        ws, passwords = demo_workspace(Path(tmp) / "ws")
        alice, rita = ws.login("alice", passwords["alice"]), ws.login("rita", passwords["rita"])
        example = ws.repo.read(ws.repo.sync_main(), "configs/example.yaml")
        counter = iter(range(10_000))

        def approved(name: str) -> int:
            config = TrainConfig.parse(example)
            config.args["seed"] = next(counter)
            cr = ws.changes.save(alice, config, name, f"{name} for the bench").change_request
            ws.changes.approve(rita, cr, "ok")
            return cr

        def merged_config(name: str) -> int:
            merge = ws.changes.merge(rita, approved(name)).merged_commit
            with ws.store.session() as s:
                return s.scalar(select(Config.id).where(Config.commit == merge))

        with ws.store.session() as s:
            user_id = s.scalar(select(User.id).where(User.name == "alice"))

        rows = []
        deployed = 0
        for count in (0, 20, 100):  # each deployment serves a version of a config of its own, merged on its own
            deploy_rows(ws, [merged_config(f"c{i}") for i in range(deployed, count)], user_id, deployed)
            deployed = count
            ws.retrain.check()  # warm: digests cached, statements compiled
            samples: list[float] = []
            for _ in range(args.repeats):
                with stopwatch(samples):
                    ws.retrain.check()
            rows.append((f"check(), {count} running deployments", f"{median(samples) * 1000:.1f}"))

        plain = ChangeRequests(ws.store, ws.repo)  # the same merge, no hook
        hooked, bare = [], []
        for i in range(args.repeats):
            for changes, samples in ((ws.changes, hooked), (plain, bare)):
                cr = approved(f"merge-{i}-{len(samples)}-{id(samples) % 97}")
                with stopwatch(samples):
                    changes.merge(rita, cr)
        rows.append(("merge without the hook", f"{median(bare) * 1000:.1f}"))
        rows.append(
            (
                f"merge with the hook ({deployed} deployments checked)",
                f"{median(hooked) * 1000:.1f} ({median(hooked) / median(bare):.2f}x)",
            )
        )
        print_table(["measure (median ms)", "ms"], rows, title=f"retrain check cost, {args.repeats} repeats")


if __name__ == "__main__":
    main()
