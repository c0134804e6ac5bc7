"""Vocabulary drift: the share of the window's tokens that never occur in the training prompts (out-of-vocabulary).

Even prompts from the training distribution hold words the training data happened to miss: Good-Turing estimates
that share as the share of the reference's tokens that occur exactly once (`expected`). The threshold adds to it
a margin of 5 percentage points (a smaller excess is not worth a retrain) and three standard errors of a share
measured on this many window tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

MARGIN = 0.05
STANDARD_ERRORS = 3.0


@dataclass(frozen=True)
class Vocabulary:
    words: frozenset[str]
    expected_oov: float  # Good-Turing: share of reference tokens seen once

    @classmethod
    def of(cls, tokenised: Iterable[list[str]]) -> Vocabulary:
        counts: Counter[str] = Counter()
        for toks in tokenised:
            counts.update(toks)
        total = sum(counts.values())
        once = sum(1 for n in counts.values() if n == 1)
        return cls(frozenset(counts), once / total if total else 0.0)


@dataclass(frozen=True)
class VocabularyDrift:
    oov_rate: float
    threshold: float
    expected: float
    unknown_examples: list[str]


def vocabulary_drift(vocabulary: Vocabulary, window: Iterable[list[str]], examples: int = 10) -> VocabularyDrift:
    total = unknown = 0
    unknown_counts: Counter[str] = Counter()
    for toks in window:
        total += len(toks)
        for tok in toks:
            if tok not in vocabulary.words:
                unknown += 1
                unknown_counts[tok] += 1
    rate = unknown / total if total else 0.0
    p = vocabulary.expected_oov
    threshold = p + MARGIN + STANDARD_ERRORS * math.sqrt(max(p * (1 - p), 1e-4) / max(total, 1))
    top = [word for word, _n in unknown_counts.most_common(examples)]
    return VocabularyDrift(rate, min(threshold, 1.0), p, top)
