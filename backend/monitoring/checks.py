"""One drift check: the three detectors run on a window of prompts against a prepared reference.

A reference is prepared once (tokens, lengths, vocabulary) and reused for every window of every deployment serving
the same model; `detect` is pure (no store, no Git), so the calibration tests and bench/drift.py call it directly.
A window drifts when any score is over its threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.monitoring.domain_classifier import domain_drift
from backend.monitoring.length_psi import length_drift
from backend.monitoring.prompts import tokens
from backend.monitoring.reference import comparable
from backend.monitoring.vocabulary import Vocabulary, vocabulary_drift

LENGTH_PSI = "length_psi"
OOV_RATE = "oov_rate"
DOMAIN_AUC = "domain_auc"
SCORES = (LENGTH_PSI, OOV_RATE, DOMAIN_AUC)
SAMPLE_PROMPTS = 5
SAMPLE_PROMPT_CHARS = 500


@dataclass(frozen=True)
class PreparedReference:
    prompts: list[str]
    lengths: list[int]
    vocabulary: Vocabulary

    @classmethod
    def of(cls, prompts: Sequence[str]) -> PreparedReference:
        tokenised = [tokens(p) for p in prompts]
        return cls(list(prompts), [len(t) for t in tokenised], Vocabulary.of(tokenised))


@dataclass(frozen=True)
class Findings:
    scores: dict[str, float]
    thresholds: dict[str, float]
    top_terms: list[str]
    unknown_words: list[str]
    sample_prompts: list[str]

    @property
    def drifting(self) -> bool:
        return any(self.scores[k] > self.thresholds[k] for k in self.scores)


def detect(reference: PreparedReference, window_prompts: Sequence[str], seed: int = 0) -> Findings:
    window = [comparable(p) for p in window_prompts]
    tokenised = [tokens(p) for p in window]
    length = length_drift(reference.lengths, [len(t) for t in tokenised])
    vocab = vocabulary_drift(reference.vocabulary, tokenised)
    domain = domain_drift(reference.prompts, window, seed=seed)
    scores = {LENGTH_PSI: length.psi, OOV_RATE: vocab.oov_rate, DOMAIN_AUC: domain.auc}
    thresholds = {LENGTH_PSI: length.threshold, OOV_RATE: vocab.threshold, DOMAIN_AUC: domain.threshold}
    return Findings(
        {k: round(v, 4) for k, v in scores.items()},
        {k: round(v, 4) for k, v in thresholds.items()},
        domain.top_terms,
        vocab.unknown_examples,
        _evidence_prompts(window, domain.top_terms),
    )


def _evidence_prompts(window: list[str], terms: list[str]) -> list[str]:
    """The window's prompts that hold most of the discriminative terms (they show what changed)."""
    wanted = set(terms)

    def hits(prompt: str) -> int:
        return len(wanted.intersection(tokens(prompt)))

    ranked = sorted(range(len(window)), key=lambda i: (-hits(window[i]), i))
    return [window[i][:SAMPLE_PROMPT_CHARS] for i in ranked[:SAMPLE_PROMPTS]]
