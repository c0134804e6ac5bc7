"""The preflight's GPU memory estimate against published peak memory (docs/preflight.md prints these tables).

    .venv/bin/python bench/preflight_memory.py

No GPU is used: the estimate is arithmetic over the config and the model's shape; the published figures and their
sources are in tests/published_memory.py (LLaMA-Factory's README hardware table, Qwen's README memory profile).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table  # noqa: E402
from tests.published_memory import (  # noqa: E402
    LF_TABLE,
    QWEN_LENGTHS,
    QWEN_MEASURED,
    SIZES,
    lf_estimate,
    qwen_estimate,
)


def main() -> None:
    rows, errors = [], []
    for method, (args, published) in LF_TABLE.items():
        cells = []
        for size, gb in zip(SIZES, published, strict=True):
            estimated = lf_estimate(args, size)
            error = (estimated - gb) / gb
            errors.append(abs(error))
            cells.append(f"{gb} / {estimated:.1f} ({error:+.0%})")
        rows.append([method, *cells])
    print_table(
        ["LLaMA-Factory table, batch 1, cutoff 1024", *(f"{s}: published / estimated GiB" for s in SIZES)],
        rows,
        title="LLaMA-Factory README hardware table",
    )
    print(f"\nmean |error| {statistics.mean(errors):.0%}, max {max(errors):.0%} over {len(errors)} cells\n")
    rows, errors = [], []
    for (size, method), measured in QWEN_MEASURED.items():
        cells = []
        for length, gb in zip(QWEN_LENGTHS, measured, strict=True):
            estimated = qwen_estimate(size, method, length)
            error = (estimated - gb) / gb
            errors.append(abs(error))
            cells.append(f"{gb} / {estimated:.1f} ({error:+.0%})")
        rows.append([f"Qwen-{size} {method}", *cells])
    print_table(
        ["Qwen measured peak, batch 1", *(f"{n} tokens" for n in QWEN_LENGTHS)],
        rows,
        title="Qwen README memory profile (measured on one A100-80GB)",
    )
    print(f"\nmean |error| {statistics.mean(errors):.0%}, max {max(errors):.0%} over {len(errors)} cells")


if __name__ == "__main__":
    main()
