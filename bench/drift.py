"""Benchmark: the drift check's time and memory at 10,000 recent prompts against 10,000 reference prompts, and the
detectors' false-alarm and detection rates.

1. Time: preparing the reference (tokens, lengths, vocabulary; done once per model and cached by the service), and
   one check of a 10,000-prompt window (PSI and out-of-vocabulary rate on all prompts; the domain classifier on
   1,000 per side with 3-fold cross-validation and 20 label permutations), for a window from the training
   distribution and one from another domain. Beside it, the baseline: one TF-IDF + logistic regression fit on the
   classifier's 2,000 prompts (what a single classifier costs without cross-validation or a permutation test).
   Median of --runs runs, wall and CPU time (on a shared machine the wall time is mostly waiting for a core); peak
   Python memory (tracemalloc, one extra run) and the process's peak resident memory.
2. Rates: --windows windows of 50 prompts from the training distribution checked in a row under the declaration rule
   (false alarms: windows over a threshold, and declared drifts), and --pairs runs of two windows from another
   domain (detected within two windows). Corpora: tests/drift_corpora.py (generated).

    .venv/bin/python bench/drift.py [--runs 3] [--windows 100] [--pairs 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from backend.monitoring import declaration, report  # noqa: E402
from backend.monitoring.checks import PreparedReference, detect  # noqa: E402
from backend.monitoring.domain_classifier import WORDS  # noqa: E402
from bench.common import median, print_table  # noqa: E402
from tests.drift_corpora import arithmetic, kitchen, support  # noqa: E402

SIZE = 10_000
WINDOW = 50


def _timed(fn, runs: int) -> tuple[float, float, float, object]:
    """(median wall seconds, median CPU seconds, peak traced MiB, result): timed without tracemalloc (it slows
    allocation-heavy code several times), then one more run under it for the memory."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return median(wall), median(cpu), peak, result


def baseline_fit(reference: list[str], window: list[str]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = reference[:1000] + window[:1000]
    x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=WORDS).fit_transform(texts)
    LogisticRegression(solver="liblinear").fit(x, [0] * 1000 + [1] * 1000)


def _states(prep: PreparedReference, windows: list[list[str]], seed: int) -> tuple[int, int]:
    rules, previous, drifting, declared = declaration.WindowRules(), [], 0, 0
    now = datetime.now(UTC)
    for i, window in enumerate(windows):
        findings = detect(prep, window, seed=seed + i)
        state = declaration.decide(findings.drifting, declaration.Streak.of(previous, 1), rules)
        drifting += findings.drifting
        declared += state == report.DECLARED
        previous.insert(
            0,
            report.DriftReport(
                0, "b", 1, "m:v1", now, now, now, WINDOW, state == report.DECLARED, {}, {}, [], [],
                drifting=findings.drifting,
            ),
        )  # fmt: skip
    return drifting, declared


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--windows", type=int, default=100)
    p.add_argument("--pairs", type=int, default=20)
    args = p.parse_args()

    reference = kitchen(SIZE, seed=0)
    recent_same, recent_other = kitchen(SIZE, seed=1), support(SIZE, seed=2)
    detect(PreparedReference.of(reference[:200]), recent_same[:100])  # first-use imports, not timed
    prep_s, prep_cpu, prep_mib, prep = _timed(lambda: PreparedReference.of(reference), args.runs)
    same_s, same_cpu, same_mib, same = _timed(lambda: detect(prep, recent_same), args.runs)
    other_s, other_cpu, other_mib, other = _timed(lambda: detect(prep, recent_other), args.runs)
    base_s, base_cpu, base_mib, _ = _timed(lambda: baseline_fit(reference, recent_same), args.runs)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nDrift check, {SIZE:,} recent against {SIZE:,} reference prompts; median of {args.runs} runs\n")
    rows = [
        ["prepare the reference (once per model, cached)", f"{prep_s:.2f}", f"{prep_cpu:.2f}", "—", f"{prep_mib:.0f}"],
        [
            f"check, window from the training distribution ({'drifting' if same.drifting else 'ok'})",
            f"{same_s:.2f}",
            f"{same_cpu:.2f}",
            f"{same_cpu / base_cpu:.1f}x",
            f"{same_mib:.0f}",
        ],
        [
            f"check, window from another domain ({'drifting' if other.drifting else 'ok'})",
            f"{other_s:.2f}",
            f"{other_cpu:.2f}",
            f"{other_cpu / base_cpu:.1f}x",
            f"{other_mib:.0f}",
        ],
        ["baseline: one TF-IDF + LR fit, 2,000 prompts", f"{base_s:.2f}", f"{base_cpu:.2f}", "1.0x", f"{base_mib:.0f}"],
    ]
    print_table(["step", "wall s", "CPU s", "CPU vs baseline", "peak Python MiB"], rows)
    print(f"\npeak resident memory of the process: {rss:.0f} MiB (goal for a check: 5 s)")

    rate_rows = []
    for name, ref, same_gen, other_gen in (
        ("kitchen (varied lengths, 600 prompts)", kitchen(600, 0), kitchen, support),
        ("arithmetic (the demo dataset, 64 prompts)", arithmetic(64, 0), arithmetic, kitchen),
    ):
        prepared = PreparedReference.of(ref)
        windows = [same_gen(WINDOW, seed=10_000 + i) for i in range(args.windows)]
        drifting, declared = _states(prepared, windows, seed=0)
        detected = 0
        for i in range(args.pairs):
            pair = [other_gen(WINDOW, seed=20_000 + 2 * i), other_gen(WINDOW, seed=20_001 + 2 * i)]
            detected += _states(prepared, pair, seed=i)[1] == 1
        rate_rows.append(
            [
                name,
                f"{drifting}/{args.windows} ({drifting / args.windows:.1%})",
                f"{declared}/{args.windows} ({declared / args.windows:.1%})",
                f"{detected}/{args.pairs} ({detected / args.pairs:.0%})",
            ]
        )
    print(f"\nFalse alarms and detection, windows of {WINDOW} prompts\n")
    print_table(
        ["training distribution", "windows over a threshold", "drifts declared", "other domain declared by window 2"],
        rate_rows,
    )


if __name__ == "__main__":
    main()
