"""What a sampled prompt becomes before it is stored, and how prompts are cut into tokens for the drift checks.

`clean_prompt`: credentials (backend.redaction: URL passwords, credential-shaped values of backend.secret_scan),
values after a credential keyword (`api_key=...`, `Bearer ...`, `password: ...`) and e-mail addresses are replaced;
a binary prompt (control characters, replacement characters) is not stored at all, only counted; a huge one is cut to
`max_chars` and marked truncated, its full length kept.

`tokens`: lower-cased words and single punctuation marks; the same function for the training prompts and the sampled
ones, so lengths and vocabularies are comparable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.redaction import HIDDEN, redact

MAX_STORED_CHARS = 4000
EMAIL_HIDDEN = "[email]"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# `api_key = abc...`, `Authorization: Bearer abc...`, `password: hunter22`: the value after the keyword.
_KEYWORD_VALUE = re.compile(
    r"(?i)\b((?:api[_-]?key|access[_-]?key|secret|token|passw(?:or)?d|pwd|bearer|authorization)\b[\"']?"
    r"(?:\s*[:=]\s*|\s+)(?:bearer\s+)?[\"']?)([^\s\"',;]{6,})"
)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_BINARY_SHARE = 0.1  # more than this share of control or replacement characters: not text


@dataclass(frozen=True)
class CleanPrompt:
    text: str  # what may be stored ("" for a binary prompt)
    chars: int  # the full length as received
    truncated: bool
    binary: bool
    redactions: int


def looks_binary(text: str) -> bool:
    if not text:
        return False
    probe = text[:4096]
    odd = sum(1 for c in probe if c == "\ufffd" or (ord(c) < 32 and c not in "\n\r\t"))
    return odd / len(probe) > _BINARY_SHARE


def redact_prompt(text: str) -> tuple[str, int]:
    """(text without credentials and e-mail addresses, how many were replaced)."""
    before = text.count(HIDDEN)
    cleaned = redact(text)
    cleaned = _KEYWORD_VALUE.sub(lambda m: m.group(1) + HIDDEN, cleaned)
    cleaned, emails = _EMAIL.subn(EMAIL_HIDDEN, cleaned)
    return cleaned, max(0, cleaned.count(HIDDEN) - before) + emails


def clean_prompt(text: str, full_chars: int | None = None, max_chars: int = MAX_STORED_CHARS) -> CleanPrompt:
    """`text` (maybe already cut by the gateway; `full_chars` its length as received) fit to store."""
    full = max(full_chars or 0, len(text))
    if looks_binary(text):
        return CleanPrompt("", full, False, True, 0)
    # redact before cutting, so a secret across the cut is not half kept; a margin keeps the work bounded
    cleaned, redactions = redact_prompt(text[: max_chars + 512])
    truncated = full > max_chars or len(cleaned) > max_chars
    return CleanPrompt(cleaned[:max_chars], full, truncated, False, redactions)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())
