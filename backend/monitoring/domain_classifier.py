"""Content drift: can a classifier tell the window's prompts from the training prompts?

TF-IDF (word unigrams and bigrams) and a logistic regression are cross-validated on window prompts (label 1) against
as many reference prompts (label 0, sampled); the score is the ROC AUC. 0.5 means the two cannot be told apart.

The threshold comes from a permutation test rather than a fixed number: the same cross-validation with the labels
shuffled `permutations` times gives the AUCs chance alone reaches for these prompts and sizes; the threshold is their
mean plus three standard deviations (at least 0.55). The terms with the largest weights towards the window, from a
model fitted on all of it, are kept as evidence of what changed.

Each side is capped (`max_per_side`) so a check stays fast on large windows; the vectoriser is fitted once on the
text alone (no labels), so the shuffled runs reuse its matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_PER_SIDE = 1000
PERMUTATIONS = 20
FOLDS = 3
STANDARD_DEVIATIONS = 3.0
FLOOR = 0.55
WORDS = r"(?u)\b\w+\b"  # single letters and digits count too (arithmetic prompts are made of them)


@dataclass(frozen=True)
class DomainDrift:
    auc: float
    threshold: float
    null_mean: float
    null_std: float
    top_terms: list[str]


def domain_drift(
    reference: Sequence[str],
    window: Sequence[str],
    *,
    permutations: int = PERMUTATIONS,
    max_per_side: int = MAX_PER_SIDE,
    seed: int = 0,
    top: int = 10,
) -> DomainDrift:
    import numpy as np
    import sklearn
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    n = min(len(window), max_per_side)
    win = [window[i] for i in rng.choice(len(window), n, replace=False)] if len(window) > n else list(window)
    m = min(len(reference), max(n, 1))
    ref = [reference[i] for i in rng.choice(len(reference), m, replace=False)]
    texts = ref + win
    labels = np.array([0] * len(ref) + [1] * len(win))
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=WORDS, min_df=1)
    x = vectoriser.fit_transform(texts)
    folds = min(FOLDS, int(min(len(ref), len(win))))
    if folds < 2:
        return DomainDrift(0.5, 1.0, 0.5, 0.0, [])

    def cv_auc(y: np.ndarray, split_seed: int) -> float:
        # cross_val_predict's work without its per-call overhead (which dominates on windows this small)
        scores = np.empty(len(y))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=split_seed).split(x, y):
            model = LogisticRegression(C=1.0, max_iter=200, solver="liblinear").fit(x[train], y[train])
            scores[test] = model.decision_function(x[test])
        return _auc(y, scores)

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # checked once, not 60 times
        auc = cv_auc(labels, seed)
        null = np.array([cv_auc(rng.permutation(labels), seed + 1 + i) for i in range(permutations)])
    threshold = max(FLOOR, float(null.mean() + STANDARD_DEVIATIONS * null.std(ddof=1)))
    full = LogisticRegression(C=1.0, max_iter=200, solver="liblinear").fit(x, labels)
    names = vectoriser.get_feature_names_out()
    order = np.argsort(full.coef_[0])[::-1][:top]
    terms = [str(names[i]) for i in order if full.coef_[0][i] > 0]
    return DomainDrift(auc, min(threshold, 1.0), float(null.mean()), float(null.std(ddof=1)), terms)


def _auc(labels: Any, scores: Any) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): roc_auc_score's value without its input checks."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
