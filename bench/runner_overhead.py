"""Benchmark: one config trained through lfops (launch -> local runner -> run succeeded and registered) versus
`llamafactory-cli train` run directly on the same training YAML, interleaved, median of --repeats each, and the ratio.

The lfops side is the whole path a user waits for: policy check, `git archive` of the commit, the detached process,
completion seen by the tracker (polled every 50 ms), final metrics stored and the model registered. The direct side
is `llamafactory-cli train` waited for as a plain child (backend.runners.lfprocess.run: the same environment, no
detaching, no tracking) on an already extracted checkout.

    .venv/bin/python bench/runner_overhead.py [--repeats 3] [--warmup 1] [--max-samples 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from backend import yamlio  # noqa: E402
from backend.config import TrainConfig  # noqa: E402
from backend.runners import lfprocess  # noqa: E402
from backend.workspace import Workspace  # noqa: E402
from bench.common import demo_workspace, median, print_table  # noqa: E402

POLL_S = float(os.environ.get("LFOPS_BENCH_POLL_S", "0.05"))


def prepare(root: Path, max_samples: int) -> tuple[Workspace, dict, int, str]:
    ws, passwords = demo_workspace(root / "ws")
    alice, rita = ws.login("alice", passwords["alice"]), ws.login("rita", passwords["rita"])
    config = TrainConfig.parse(ws.repo.read(ws.repo.sync_main(), "configs/example.yaml"), "example")
    config.args["max_samples"] = max_samples
    cr = ws.changes.save(alice, config, "bench", "runner overhead benchmark").change_request
    ws.changes.approve(rita, cr)
    commit = ws.changes.merge(rita, cr).merged_commit
    return ws, passwords, cr, commit


def direct_once(ws: Workspace, commit: str, work: Path) -> float:
    """`llamafactory-cli train` on the same YAML the runner writes, in an extracted checkout of the same commit."""
    if work.exists():
        shutil.rmtree(work)
    checkout = work / "checkout"
    ws.repo.extract(commit, checkout)
    args = yamlio.load_mapping(TrainConfig.parse(ws.repo.read(commit, "configs/bench.yaml")).training_yaml())
    args["output_dir"] = str(work / "output")
    (work / "train.yaml").write_text(yamlio.dump(args))
    cpu0, start = children_cpu(), time.perf_counter()
    code = lfprocess.run("train", work / "train.yaml", cwd=checkout, log_path=work / "train.log", timeout_s=3600)
    if code != 0:
        raise SystemExit(f"direct training failed: {lfprocess.failure_reason(work / 'train.log', code)}")
    return time.perf_counter() - start, children_cpu() - cpu0


def children_cpu() -> float:
    """CPU seconds of waited-for child processes (and theirs): less sensitive to a busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runner_once(ws: Workspace, actor, cr: int) -> tuple[float, float, float, float]:
    """(total wall, child CPU, launch call, end of training -> recorded) for one run through lfops.

    The runner's detached child is still this process's child: the tracker reaps it, so its CPU time (and that of
    `git archive`) lands in RUSAGE_CHILDREN too."""
    cpu0, start = children_cpu(), time.perf_counter()
    view = ws.runs.launch(actor, cr)
    launched = time.perf_counter()
    view = ws.runs.wait(actor, view.id, poll=POLL_S)
    total = time.perf_counter() - start
    recorded_at = time.time()
    cpu = children_cpu() - cpu0
    if view.status != "succeeded":
        raise SystemExit(f"run #{view.id} {view.status}: {view.reason}")
    exit_file = Path(view.output_dir).parent / "exit_code"
    ended = exit_file.stat().st_mtime  # the wrapper writes it the moment training exits
    return total, cpu, launched - start, max(0.0, recorded_at - ended)


def seconds(wall: list[float], cpu: list[float]) -> list[str]:
    """Table cells: median, min and max wall seconds, median CPU seconds."""
    return [f"{x:.2f}" for x in (median(wall), min(wall), max(wall), median(cpu))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=64, help="64: the example config's 16 steps")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each side first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfops-bench-runner-") as tmp:
        root = Path(tmp)
        ws, passwords, cr, commit = prepare(root, args.max_samples)
        alice = ws.login("alice", passwords["alice"])
        for i in range(args.warmup):  # page cache, Python bytecode, dataset cache: warm for both sides alike
            direct_once(ws, commit, root / f"warmup-{i}")
            runner_once(ws, alice, cr)
        direct, direct_cpu, through, through_cpu, launch, finish = [], [], [], [], [], []
        for i in range(args.repeats):  # interleaved, so drift in machine load hits both sides alike
            wall, cpu = direct_once(ws, commit, root / f"direct-{i}")
            direct.append(wall)
            direct_cpu.append(cpu)
            total, cpu, launch_s, finish_s = runner_once(ws, alice, cr)
            through.append(total)
            through_cpu.append(cpu)
            launch.append(launch_s)
            finish.append(finish_s)
            print(
                f"  repeat {i + 1}: direct {direct[-1]:.2f} s ({direct_cpu[-1]:.2f} s CPU), "
                f"lfops {through[-1]:.2f} s ({through_cpu[-1]:.2f} s CPU)",
                flush=True,
            )
        title = f"runner overhead: {args.repeats} repeats each, {args.warmup} warm-up, max_samples={args.max_samples}"
        print_table(
            ["path", "wall s (median)", "min", "max", "CPU s (median)"],
            [
                ["llamafactory-cli train (direct)", *seconds(direct, direct_cpu)],
                ["lfops launch -> succeeded + registered", *seconds(through, through_cpu)],
                ["of which launch() call (policy, checkout)", f"{median(launch):.2f}", "", "", ""],
                ["of which exit -> recorded and registered", f"{median(finish):.2f}", "", "", ""],
            ],
            title=title,
        )
        wall_ratio, cpu_ratio = median(through) / median(direct), median(through_cpu) / median(direct_cpu)
        print(
            f"ratio lfops / direct: wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f}"
            "  (target <= 1.05; load average now "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )


if __name__ == "__main__":
    main()
