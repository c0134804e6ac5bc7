"""LLaMA-Factory's own cross-argument checks (`get_train_args`), run on a host-neutral copy of a config.

`llamafactory.hparams.parser.get_train_args` is what `llamafactory-cli train` runs before it loads anything: it
parses the arguments into LLaMA-Factory's dataclasses (their `__post_init__` checks) and then checks combinations
(what each `stage` allows, evaluation needs an eval dataset, quantisation needs LoRA/OFT, ZeRO-3 excludes
`predict_with_generate`, ...). Calling it is how lfops agrees with LLaMA-Factory instead of copying its rules.

It also does things about *this* process and *this* host that a validator must not let through, so
`run_train_checks` neutralises them, and nothing else:

- the config is checked as it would be on its training host, not here: `deepspeed`/`fsdp` (files and launchers of the
  training host) are left out, `use_cpu` is set and `fp16` unset (transformers refuses fp16 without a GPU), this
  machine's bf16 support is not asked, and ZeRO-3 is reported as the config's own DeepSpeed file says;
- optional packages the config needs (unsloth, liger-kernel, jieba...) are reported as warnings, since they must be
  installed where it trains, not where it is validated;
- `output_dir` is an empty temporary path, so no checkpoint found on this machine changes the outcome;
- transformers' logging set-up is skipped, LLaMA-Factory's log lines are dropped, and the global random generators
  that `get_train_args` seeds are put back.

The swapped module attributes are restored on exit and calls are serialised, so a WebUI validating in several
threads sees consistent results.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from backend.errors import Problem

# Arguments that only make sense on the machine that trains.
HOST_BOUND_ARGS = ("deepspeed", "fsdp", "fsdp_config")
_LOCK = threading.Lock()


def host_neutral(args: dict[str, Any]) -> dict[str, Any]:
    """A copy that validates on any host: a config for GPUs (bf16, DeepSpeed) is still checked on a CPU."""
    copy = {k: v for k, v in args.items() if k not in HOST_BOUND_ARGS}
    copy["use_cpu"] = True
    copy["fp16"] = False
    return copy


def run_train_checks(args: dict[str, Any], known_keys: frozenset[str], *, zero3: bool = False) -> list[Problem]:
    """LLaMA-Factory's verdict on `args` (keys and types already checked): an error naming the key it is about, or
    warnings for packages the training host will need. `zero3`: the config's DeepSpeed file enables ZeRO stage 3."""
    from llamafactory.hparams import parser as lf_parser

    notes: list[Problem] = []
    with _LOCK, tempfile.TemporaryDirectory(prefix="lfops-validate-") as tmp:
        neutral = host_neutral(args) | {"output_dir": str(Path(tmp) / "output")}
        with _host_neutral_parser(lf_parser, zero3, notes, known_keys), _random_state_kept():
            try:
                lf_parser.get_train_args(neutral)
            except Exception as exc:  # noqa: BLE001 - LLaMA-Factory raises ValueError, AssertionError, TypeError...
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                field = field_named_in(message, known_keys, args)
                notes.append(Problem(field, f"LLaMA-Factory rejects it: {message}"))
    return notes


def field_named_in(message: str, known_keys: frozenset[str], args: dict[str, Any] | None = None) -> str:
    """The argument an LLaMA-Factory message is about: the first `quoted` argument name, else the first plain word
    that is one ("Please specify dataset for training." -> dataset), else the key whose string value the message
    quotes or starts with ("sideways is not a valid SchedulerType" -> lr_scheduler_type), else "config"."""
    quoted = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", message)
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message)
    named = next((name for name in [*quoted, *words] if name in known_keys), None)
    if named:
        return named
    values = {*re.findall(r"'([^']*)'", message), message.split(maxsplit=1)[0]}  # "sideways is not a valid ..."
    return next((key for key, value in (args or {}).items() if isinstance(value, str) and value in values), "config")


@contextmanager
def _host_neutral_parser(
    lf_parser: ModuleType, zero3: bool, notes: list[Problem], known_keys: frozenset[str]
) -> Iterator[None]:
    check_dependencies = lf_parser._check_extra_dependencies

    def dependencies_as_warnings(*args: Any, **kwargs: Any) -> None:
        try:
            check_dependencies(*args, **kwargs)
        except ImportError as exc:
            message = str(exc).strip().splitlines()[0]
            package = re.search(r"'([^']+)' distribution", message)
            needs = f"the package {package.group(1)} (not installed here)" if package else message
            notes.append(Problem("config", f"the training host needs {needs}", "warning"))

    replacements: dict[str, Callable[..., Any]] = {
        "_set_transformers_logging": lambda: None,
        "_check_extra_dependencies": dependencies_as_warnings,
        "is_torch_bf16_gpu_available": lambda: True,
        "is_deepspeed_zero3_enabled": lambda: zero3,
    }
    saved = {name: getattr(lf_parser, name) for name in replacements}
    lf_logger = logging.getLogger(lf_parser.__name__)
    drop = _DropAll()
    lf_logger.addFilter(drop)
    for name, replacement in replacements.items():
        setattr(lf_parser, name, replacement)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(lf_parser, name, original)
        lf_logger.removeFilter(drop)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """`get_train_args` ends with `transformers.set_seed`: restore the generators this process was using."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
