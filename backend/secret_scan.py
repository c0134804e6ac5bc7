"""Credentials found by their value: whatever key or message a token hides under, it never reaches Git.

`backend.secret_args` refuses keys *named* like secrets (`hf_hub_token`); this module refuses values *shaped* like
secrets, wherever they are: a Hugging Face token under `run_name`, an AWS key in the `lfops:` block, a private key
pasted into a save message. One function decides (`secret_kinds`), and everything that writes user text to Git asks
it: config validation (`check_config_values`, every string of the training keys and the `lfops:` block, nested ones
and keys included) and save (`refuse_secrets` on the message, whose first line is the title, the name and the
branch).

The shapes are detect-secrets' maintained regular-expression plugins where they fit (AWS key ids, GitHub, GitLab,
private keys, Slack, Stripe, ...), plus our own for what it lacks or catches only in an old form (Hugging Face,
today's OpenAI-style `sk-proj-...` keys, GitHub fine-grained tokens, Google API keys, AWS secret access keys without a
keyword around them, encrypted private-key blocks), and for the three whose patterns backtrack quadratically on
crafted text (JWT, OpenAI, npm: ours take linear time; JWTs are still checked by detect-secrets' own test). Its
high-entropy and keyword plugins are left out: they flag sha256 digests, commit ids and model names, which configs
are full of.

A finding names the field and the kind of credential, never the value: the error itself must not leak it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from backend.errors import Problem, ValidationFailed

REASON_SUFFIX = "secrets never go into the config repository"


@dataclass(frozen=True)
class _Shape:
    kind: str  # "a Hugging Face token": what the error says it looks like
    pattern: re.Pattern[str]
    accepts: Callable[[str], bool] = lambda _match: True  # a second look at a match, to spare look-alikes
    group: int = 0  # the group of the match that is the secret


def _mixed(token: str) -> bool:
    """Random tokens mix upper case, lower case and digits; words, paths and hex digests do not."""
    return any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)


def _mixed_case(token: str) -> bool:
    return any(c.isupper() for c in token) and any(c.islower() for c in token)


def _entropy(token: str) -> float:
    """Shannon entropy in bits per character (as detect-secrets computes it)."""
    counts = Counter(token)
    return -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())


def _class_changes(token: str) -> int:
    """How often neighbouring characters change class (upper, lower, digit, other): ~25 of 39 in a random token,
    far fewer in words and paths."""
    classes = ["u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "o" for c in token]
    return sum(a != b for a, b in zip(classes, classes[1:], strict=False))


def _aws_secret(token: str) -> bool:
    """A 40-character base64 token with no keyword around it: strict, so that paths made of words
    (`outputs/Llama3x8B/qlora4bit/run20240517a`) pass; it misses a few percent of real keys, which the keyword rule
    below and the access key id beside them catch."""
    return _mixed(token) and _entropy(token) > 4.4 and _class_changes(token) >= 20 and token.count("/") <= 3


def _jwt_valid(token: str) -> bool:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return JwtTokenDetector.is_formally_valid(token)


_OWN_SHAPES = (
    # Hugging Face user access tokens (hf_ + 34 letters) and old organisation tokens; detect-secrets has none.
    _Shape("a Hugging Face token", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}"), _mixed_case),
    _Shape("a Hugging Face token", re.compile(r"(?<![A-Za-z0-9])api_org_[A-Za-z0-9]{30,}"), _mixed_case),
    # OpenAI-style keys: sk-..., sk-proj-..., sk-svcacct-..., sk-ant-api03-... (detect-secrets' OpenAI plugin knows
    # only the legacy form with T3BlbkFJ inside, and backtracks quadratically on "sk-sk-sk-...").
    _Shape("an OpenAI-style API key", re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{32,}"), _mixed),
    _Shape("a GitHub token", re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{40,}")),
    _Shape("a Google API key", re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")),
    # An AWS secret access key: exactly 40 base64 characters, after an aws...key/secret keyword (as detect-secrets'
    # rule, without its quotes), or on its own when random-looking.
    _Shape(
        "an AWS secret access key",
        re.compile(
            r"(?i)aws[\w.-]{0,20}?(?:secret|key)[\w.-]{0,20}?[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        _mixed,
        group=1,
    ),
    _Shape(
        "an AWS secret access key",
        re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
        _aws_secret,
    ),
    # JWTs, checked as detect-secrets checks them; its own pattern takes quadratic time on "eyJeyJeyJ...".
    _Shape(
        "a JSON Web Token",
        re.compile(r"(?<![A-Za-z0-9_=-])eyJ[A-Za-z0-9_-]+={0,2}\.[A-Za-z0-9_-]+={0,2}(?:\.[A-Za-z0-9_.+/=-]*)?"),
        _jwt_valid,
    ),
    # npm's .npmrc credential line and its new-style tokens (its plugin's `//.+/:_authToken` backtracks too).
    _Shape("an npm token", re.compile(r":_authToken=\S+|(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}")),
)


# detect-secrets' plugin secret_type -> what the error says the value looks like. Only plugins whose patterns take
# linear time are used: user text can be a megabyte.
_PLUGIN_KINDS = {
    "AWS Access Key": "an AWS access key",
    "Azure Storage Account access key": "an Azure storage account key",
    "Basic Auth Credentials": "a URL with a password",
    "Discord Bot Token": "a Discord bot token",
    "GitHub Token": "a GitHub token",
    "GitLab Token": "a GitLab token",
    "Mailchimp Access Key": "a Mailchimp key",
    "Private Key": "a private key",
    "PyPI Token": "a PyPI token",
    "SendGrid API Key": "a SendGrid key",
    "Slack Token": "a Slack token",
    "Square OAuth Secret": "a Square OAuth secret",
    "Stripe Access Key": "a Stripe key",
    "Telegram Bot Token": "a Telegram bot token",
    "Twilio API Key": "a Twilio key",
}
# Plugins whose pattern's first group is the secret itself (the password of a URL, an AWS key after its keyword);
# for the others the whole match is.
_SECRET_IN_GROUP = frozenset({"Basic Auth Credentials", "AWS Access Key"})


@lru_cache(maxsize=1)
def _plugin_patterns() -> tuple[tuple[str, bool, re.Pattern[str]], ...]:
    """(kind, secret in group 1, pattern) of detect-secrets' regular-expression plugins that fit values: not its
    entropy, keyword or IP plugins. Their patterns are used directly: no verification, no network, no settings."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
    from detect_secrets.plugins.basic_auth import BasicAuthDetector
    from detect_secrets.plugins.discord import DiscordBotTokenDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.mailchimp import MailchimpDetector
    from detect_secrets.plugins.private_key import PrivateKeyDetector
    from detect_secrets.plugins.pypi_token import PypiTokenDetector
    from detect_secrets.plugins.sendgrid import SendGridDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.square_oauth import SquareOAuthDetector
    from detect_secrets.plugins.stripe import StripeDetector
    from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
    from detect_secrets.plugins.twilio import TwilioKeyDetector

    plugins = (
        AWSKeyDetector,
        AzureStorageKeyDetector,
        BasicAuthDetector,
        DiscordBotTokenDetector,
        GitHubTokenDetector,
        GitLabTokenDetector,
        MailchimpDetector,
        PrivateKeyDetector,
        PypiTokenDetector,
        SendGridDetector,
        SlackDetector,
        SquareOAuthDetector,
        StripeDetector,
        TelegramBotTokenDetector,
        TwilioKeyDetector,
    )
    return tuple(
        (_PLUGIN_KINDS[p.secret_type], p.secret_type in _SECRET_IN_GROUP, pattern)
        for p in plugins
        for pattern in p.denylist
    )


_KEY_BLOCK = re.compile(r"-----BEGIN[A-Z ]{0,40} PRIVATE KEY(?: BLOCK)?-----")
_KEY_BLOCK_END = "-----END"


def _key_blocks(text: str) -> Iterator[tuple[int, int]]:
    """Private-key blocks, BEGIN line to END line (or to the end of the text), so that a mask hides the key itself;
    each character is searched once, however many BEGIN lines there are."""
    block_end = 0
    for match in _KEY_BLOCK.finditer(text):
        if match.start() < block_end:
            continue
        end = text.find(_KEY_BLOCK_END, match.end())
        close = text.find("-----", end + len(_KEY_BLOCK_END)) if end >= 0 else -1
        block_end = close + 5 if close >= 0 else len(text)
        yield match.start(), block_end
        if block_end == len(text):
            return


def _matches(text: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of every credential shape in `text`."""
    for start, end in _key_blocks(text):
        yield "a private key", start, end
    for shape in _OWN_SHAPES:
        for match in shape.pattern.finditer(text):
            if shape.accepts(match.group(shape.group)):
                yield shape.kind, match.start(shape.group), match.end(shape.group)
    for kind, in_group, pattern in _plugin_patterns():
        for match in pattern.finditer(text):
            group = 1 if in_group and match.lastindex else 0
            yield kind, match.start(group), match.end(group)


def secret_kinds(text: str) -> list[str]:
    """The kinds of credential `text` holds ("a Hugging Face token", ...), each once, in a stable order; [] if none."""
    if not isinstance(text, str) or len(text) < 8:
        return []
    return sorted({kind for kind, _start, _end in _matches(text)})


def mask(text: str, replacement: str = "***") -> str:
    """`text` with every credential-shaped part replaced (for messages that must quote text of unknown origin)."""
    spans = sorted((start, end) for _kind, start, end in _matches(text) if end > start)
    out, pos = [], 0
    for start, end in spans:  # overlapping matches are merged into one replacement
        if end <= pos:
            continue
        if start >= pos:
            out += [text[pos:start], replacement]
        pos = end
    return "".join(out) + text[pos:]


def _problem(field: str, kinds: list[str]) -> Problem:
    return Problem(field, f"looks like {' and '.join(kinds)}; {REASON_SUFFIX}")


def scan(value: Any, field: str, key: str = "") -> list[Problem]:
    """One problem per string under `value` (mappings and lists walked; keys too) that holds a credential, named by
    its dotted path as the user sees it (`lfops.notes`, `dataset[2]`). A value is also read after its `key`, as a
    keyword rule would read `aws_secret_access_key: ...` in a file."""
    if isinstance(value, str):
        kinds = secret_kinds(value) or (secret_kinds(f"{key}: {value}") if key else [])
        return [_problem(field, kinds)] if kinds else []
    problems: list[Problem] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            key_kinds = secret_kinds(key) if isinstance(key, str) else []
            if key_kinds:  # the key itself is the secret: name where it is, not the key
                problems.append(_problem(f"{field} (a key)" if field else "a key", key_kinds))
                continue
            problems += scan(item, f"{field}.{key}" if field else str(key), str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += scan(item, f"{field}[{i}]")
    return problems


def check_config_values(args: Mapping[str, Any], metadata: Mapping[str, Any], metadata_key: str) -> list[Problem]:
    """Every string of a config: the training keys, and the `metadata_key:` block named as `lfops.<key>`."""
    return scan(dict(args), "") + scan(dict(metadata), metadata_key)


def refuse_secrets(texts: Mapping[str, str | None], source: str = "") -> None:
    """Raise ValidationFailed naming each of `texts` (field -> user text) that holds a credential; nothing is
    returned or echoed. For anything that writes user text to Git: a save's message and title, names, branches."""
    problems = [p for field, text in texts.items() if text for p in scan(text, field)]
    if problems:
        raise ValidationFailed(problems, source)
