"""LLaMA-Factory subprocesses: which `llamafactory-cli` to run and the scrubbed environment it gets.

One place for the rule "never hand the app's own secrets to a LLaMA-Factory process": `LFOPS_*` variables (database
URL, passwords, settings) are always removed. A model *server* also loses every variable whose name looks like a
credential (tokens, passwords, keys): it answers requests from outside and needs none of them. Training keeps them
(`report_to: wandb` needs WANDB_API_KEY, a hub model needs HF_TOKEN), so `drop_credentials` is the caller's choice.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

APP_ENV_PREFIXES = ("LFOPS_",)
# Names that carry credentials by convention: HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, PGPASSWORD,
# GOOGLE_APPLICATION_CREDENTIALS ... (TOKEN as a word of the name: TOKENIZERS_PARALLELISM is not one).
_CREDENTIAL_NAME = re.compile(r"PASSW|SECRET|CREDENTIAL|(^|_)(TOKENS?|AUTH)(_|$)|(^|_)KEY$", re.IGNORECASE)


def llamafactory_cli() -> Path:
    """The `llamafactory-cli` of the Python environment lfops runs in (never whichever one is first on PATH)."""
    return Path(sys.executable).parent / "llamafactory-cli"


def is_credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def scrubbed_env(
    extra: Mapping[str, str] | None = None,
    *,
    drop_credentials: bool = False,
    keep: Iterable[str] = (),
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A copy of the environment (`base`, default os.environ) without the app's variables, optionally without
    anything credential-like except the names in `keep`, then `extra` on top (what the caller sets on purpose)."""
    kept = set(keep)
    env = {}
    for name, value in (os.environ if base is None else base).items():
        if name.startswith(APP_ENV_PREFIXES):
            continue
        if drop_credentials and name not in kept and is_credential_name(name):
            continue
        env[name] = value
    # The venv's own tools first (torchrun, when LLaMA-Factory launches distributed training).
    env["PATH"] = os.pathsep.join([str(llamafactory_cli().parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
