"""Token-length drift: the Population Stability Index of the window's prompt lengths over bins cut at the reference's
deciles.

    PSI = sum over bins of (w - r) * ln(w / r)      w, r: the window's and the reference's share of prompts in a bin

Shares are smoothed (half a prompt added to every bin) so an empty bin does not give an infinite score. The
threshold is the larger of 0.1 (below that a shift is too small to matter, the usual PSI rule) and the 99th
percentile of the score two samples of these sizes from one distribution give: for small windows n * PSI is about
chi-square with (bins - 1) degrees of freedom, scaled by (1/n + 1/m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PRACTICAL_MINIMUM = 0.1
QUANTILES = 10
CONFIDENCE = 0.99


@dataclass(frozen=True)
class LengthDrift:
    psi: float
    threshold: float
    bins: int


def reference_edges(reference_lengths: Sequence[int]) -> list[float]:
    """Inner bin edges: the reference's deciles, each once (discrete lengths repeat)."""
    import numpy as np

    cuts = np.quantile(np.asarray(reference_lengths, dtype=float), [i / QUANTILES for i in range(1, QUANTILES)])
    return sorted(set(float(c) for c in cuts))


def length_drift(reference_lengths: Sequence[int], window_lengths: Sequence[int]) -> LengthDrift:
    import numpy as np
    from scipy.stats import chi2

    edges = reference_edges(reference_lengths)
    bins = len(edges) + 1
    ref = np.bincount(np.searchsorted(edges, reference_lengths, side="left"), minlength=bins).astype(float)
    win = np.bincount(np.searchsorted(edges, window_lengths, side="left"), minlength=bins).astype(float)
    used = ref > 0  # a bin the reference never fills carries no information about it
    ref, win = ref[used], win[used]
    k = len(ref)
    r = (ref + 0.5) / (ref.sum() + 0.5 * k)
    w = (win + 0.5) / (win.sum() + 0.5 * k)
    psi = float(np.sum((w - r) * np.log(w / r)))
    n, m = max(len(window_lengths), 1), max(len(reference_lengths), 1)
    statistical = float(chi2.ppf(CONFIDENCE, max(k - 1, 1))) * (1.0 / n + 1.0 / m)
    return LengthDrift(psi, max(PRACTICAL_MINIMUM, statistical), k)
