"""What the benchmarks share: timing, medians and percentiles, the Markdown table they print, a demo workspace, Git
and polling (the last two from tests/helpers.py, the same code the tests use).

Each bench puts the repository root on the path first (`sys.path.insert(0, ...)`, as it runs as a script), then
imports from here. Standard library only at import time: bench/lineage.py also runs inside MLflow's own virtualenv.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import LFOPS, ROOT, free_port, git, git_clone, wait_for

__all__ = [
    "LFOPS",
    "ROOT",
    "demo_workspace",
    "free_port",
    "git",
    "git_clone",
    "median",
    "percentile",
    "print_table",
    "stopwatch",
    "time_each",
    "wait_for",
]


# ---- timing ---------------------------------------------------------------------------------------------------------


@contextmanager
def stopwatch(samples: list[float]) -> Iterator[None]:
    """Append the seconds the `with` block took to `samples` (perf_counter: monotonic, the finest clock)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        samples.append(time.perf_counter() - start)


def time_each(fn: Callable[[Any], object], keys: Sequence[Any], warmup: int = 3) -> list[float]:
    """Seconds of `fn(key)` for each key, after `fn` was called on the first `warmup` keys unmeasured."""
    for key in keys[:warmup]:
        fn(key)
    samples: list[float] = []
    for key in keys:
        with stopwatch(samples):
            fn(key)
    return samples


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between the two nearest ranks (numpy's default and
    `statistics.quantiles(method="inclusive")`); NaN for no values, so a table shows that nothing was measured."""
    xs = sorted(values)
    if not xs:
        return math.nan
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


# ---- output ---------------------------------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "", title: str = "") -> None:
    """A Markdown table (as README quotes them): `align` has one letter per column, "l" or "r" (default: the first
    column left, the others right). Cells are printed as given, so the caller formats its numbers."""
    align = align or "l" + "r" * (len(headers) - 1)
    if title:
        print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# ---- a workspace ----------------------------------------------------------------------------------------------------


def demo_workspace(path: Path) -> tuple[Any, dict[str, str]]:
    """`lfops init` in-process at `path` (bare origin, SQLite, tiny model, one user per role): the Workspace and the
    demo users' passwords."""
    from backend.settings import Settings  # here: the MLflow side of bench/lineage.py has no lfops
    from backend.workspace import Workspace

    ws = Workspace(Settings.from_env(path))
    passwords = {name: password for name, (_role, password) in ws.init().credentials.items()}
    return ws, passwords
