"""Values that are always wrong, whatever the host or the model: one table, one check.

LLaMA-Factory and transformers accept a negative epoch count, a zero batch size or a `.nan` learning rate and fail
(or silently do nothing) only once training starts. These rules refuse such values before anything is saved,
naming the key. `check_values` is the one place they are written: config validation calls it, and so does anything
else that takes training values (save, the WebUI form, the API).

| rule | keys | refused |
|---|---|---|
| finite | every number, nested ones included (`lfops:` block too) | `.nan`, `.inf`, `-.inf`, `1e999` |
| positive | learning_rate, num_train_epochs | 0 and below |
| at least 1 | per_device_train_batch_size, per_device_eval_batch_size, gradient_accumulation_steps | 0 and below |
| at least 1 | cutoff_len, lora_rank, max_samples | 0 and below |
| -1 (unset) or at least 1 | max_steps | 0 and below -1 |
| not negative | val_size, warmup_steps, weight_decay, dataloader_num_workers | below 0 |
| a fraction | warmup_ratio, lora_dropout | outside [0, 1] |
| at most N characters | model_name_or_path (500), model_revision (64) | longer text (the store's column sizes) |

`null` means "LLaMA-Factory's default" and is never refused here; a value of the wrong type is reported by the type
check, not by these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backend.errors import Problem


@dataclass(frozen=True)
class ValueRule:
    """`accepts(value)` is False for values that are always wrong for each of `keys`; `reason` says what is right."""

    keys: tuple[str, ...]
    accepts: Callable[[float], bool]
    reason: str


VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule(("learning_rate", "num_train_epochs"), lambda v: v > 0, "must be greater than 0"),
    ValueRule(
        (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "cutoff_len",
            "lora_rank",
            "max_samples",
        ),
        lambda v: v >= 1,
        "must be at least 1",
    ),
    # transformers' default -1 means "no step limit: use num_train_epochs".
    ValueRule(("max_steps",), lambda v: v == -1 or v >= 1, "must be at least 1, or -1 for no step limit"),
    ValueRule(
        ("val_size", "warmup_steps", "weight_decay", "dataloader_num_workers"), lambda v: v >= 0, "must not be negative"
    ),
    ValueRule(("warmup_ratio", "lora_dropout"), lambda v: 0 <= v <= 1, "must be between 0 and 1"),
)
_RULES_BY_KEY: dict[str, ValueRule] = {key: rule for rule in VALUE_RULES for key in rule.keys}

# Text the metadata store keeps in sized columns (backend/store/models.py sizes them from here).
MODEL_NAME_MAX = 500
MODEL_REVISION_MAX = 64
TEXT_MAX: dict[str, int] = {"model_name_or_path": MODEL_NAME_MAX, "model_revision": MODEL_REVISION_MAX}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_finite(value: Any, path: str) -> list[Problem]:
    """Every `.nan`/`.inf` under `value` (mappings and lists are walked), named by its dotted path."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(path, f"must be a finite number (got {value!r})")]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def check_values(values: Mapping[str, Any], prefix: str = "") -> list[Problem]:
    """The value rules above for each key of `values`; `prefix` ("lfops.") names nested blocks as the user sees them."""
    problems: list[Problem] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        non_finite = _non_finite(value, name)
        if non_finite:
            problems += non_finite
            continue
        rule = _RULES_BY_KEY.get(key) if not prefix else None
        if rule is not None and is_number(value) and not rule.accepts(value):
            problems.append(Problem(name, f"{rule.reason} (got {value!r})"))
        limit = TEXT_MAX.get(key) if not prefix else None
        if limit is not None and isinstance(value, str) and len(value) > limit:
            problems.append(Problem(name, f"must be at most {limit} characters (got {len(value)})"))
    return problems
