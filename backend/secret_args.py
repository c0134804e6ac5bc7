"""Which training arguments hold secrets: they never go into a config, the repository, the database or a log.

One rule for config validation and the WebUI's Save to repo: LLaMA-Factory's known secret arguments by name, and
any other argument whose name ends like a credential (so an argument added by a later LLaMA-Factory, or one only a
plugin reads, is caught too).
"""

from __future__ import annotations

import re

# LLaMA-Factory 0.9.5's arguments that carry credentials; in a Git repository they would leak to every reader, forever.
SECRET_ARG_NAMES = frozenset(
    {"hf_hub_token", "ms_hub_token", "om_hub_token", "hub_token", "swanlab_api_key", "swanlab_lark_secret"}
)
_SECRET_SUFFIX_RE = re.compile(r"(token|api_key|password|secret)$")


def is_secret_arg(key: str) -> bool:
    """True when the argument `key` holds a secret and must be given to the run as an environment variable."""
    return key in SECRET_ARG_NAMES or _SECRET_SUFFIX_RE.search(key) is not None
