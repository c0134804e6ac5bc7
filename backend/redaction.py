"""Credentials taken out of URLs and error texts before anyone sees them: one function for the whole app.

`redact_url` hides a URL's password however the URL is written: a password holding `@`, `:`, `/`, `?` or `#`
unencoded (the userinfo ends at the *last* `@`, not the first as most parsers assume, so no tail of the password is
ever taken for the host), percent-encoded passwords, `user:pass@host` without a scheme, several `@`, a token given as
the user name (`https://ghp_...@github.com`), and `password=`/`token=` query parameters. Where a URL is ambiguous,
more is hidden rather than less.

`redact` cleans a whole text (a Git or driver error, a settings message): every URL-shaped word as above, every
credential-shaped value (backend.secret_scan), and, given the URLs the caller knows the text may quote (the database
URL, the repository URL), every spelling of their passwords, wherever they appear.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from backend.secret_scan import mask, secret_kinds

HIDDEN = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Query parameters that carry credentials (libpq's password/sslpassword, OAuth's access_token, api keys...).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[\w.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|access[_-]?key)|key|sig|signature)=)"
    r"[^&#\s]*"
)
# A word of a text that may be a URL with credentials: anything between whitespace, quotes or angle brackets that
# holds an `@`.
_WORD_WITH_AT = re.compile(r"[^\s'\"<>`]*@[^\s'\"<>`]*")
_LONG_USER = 32  # a user name this long is a token (Azure DevOps, Bitbucket app passwords), not a person's name


def split_userinfo(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme and `//`, user, password, the rest from the `@` on); user and password are None when absent.

    The userinfo is everything up to the last `@` after the scheme: a password may hold any character.
    """
    scheme = _SCHEME.match(url)
    prefix = scheme.group(0) if scheme else ""
    body = url[len(prefix) :]
    at = body.rfind("@")
    if at < 0:
        return prefix, None, None, body
    user, colon, password = body[:at].partition(":")
    return prefix, user, password if colon else None, body[at:]


def _user_shown(user: str) -> str:
    """A user name as shown: hidden when it is itself a credential (token-as-user URLs), or when an `@` in it leaves
    open where a password would start."""
    if len(user) >= _LONG_USER or "@" in user or secret_kinds(user):
        return HIDDEN
    return user


def redact_url(url: str) -> str:
    """`url` without its password (nor a token given as its user name, nor secret query parameters)."""
    if not isinstance(url, str):
        return HIDDEN
    prefix, user, password, rest = split_userinfo(url)
    if user is None:
        return prefix + _SECRET_PARAM.sub(rf"\1{HIDDEN}", rest)
    shown = _user_shown(user) + (f":{HIDDEN}" if password is not None else "")
    return prefix + shown + _SECRET_PARAM.sub(rf"\1{HIDDEN}", rest)


def url_password(url: str) -> str | None:
    """The password of `url` as written (the userinfo after its first `:`, up to the last `@`), None if it has none."""
    return split_userinfo(url)[2] if isinstance(url, str) else None


AMBIGUOUS_AT = "it holds more than one unencoded '@' (write an '@' in the password as %40)"


def password_is_ambiguous(url: str) -> bool:
    """True when `url`'s password holds an unencoded `@`: parsers that end the userinfo at the first `@` (SQLAlchemy,
    libpq) would take the rest of the password for the host, and show it in their errors."""
    password = url_password(url)
    return password is not None and "@" in password


def _redact_word(word: str) -> str:
    """One word of a text: a URL (or `user:pass@host`) keeps its shape, its credentials are hidden."""
    prefix_end = 0
    scheme = _SCHEME.search(word)
    if scheme:  # `url=postgresql://...`, `'https://...`: what precedes the scheme is kept as it is
        prefix_end = scheme.start()
    elif ":" not in word[: word.rfind("@")]:
        return word  # an e-mail address, `git@host:org/repo`, `HEAD@{1}`: no password in it
    return word[:prefix_end] + redact_url(word[prefix_end:])


_DISTINCT = 4  # a secret at least this long is replaced wherever it appears; a shorter one only where it is quoted


def _replacements(url: str) -> list[tuple[str, str]]:
    """(text, replacement) for every form in which another program may quote `url`'s secrets: the password as
    written and decoded, and each part of it between `@`, `/`, `:`, `?` or `#` (a parser that split the URL there
    shows the parts as host, port or path: `host 'ss@db'` for the password `p@ss`)."""
    _prefix, user, password, _rest = split_userinfo(url)
    secrets = {user, unquote(user)} if user and _user_shown(user) == HIDDEN else set()
    parts: set[str] = set()
    if password:
        secrets |= {password, unquote(password)}
        parts = set(re.split(r"[@/:?#]", password)) - {""}
    pairs = [(s, HIDDEN) for s in secrets | parts if len(s) >= _DISTINCT]
    for part in secrets | parts:  # a short part only where a URL or a quote puts it (`//Xv:Jk@`, `'w'`)
        pairs += [(f"{part}@", f"{HIDDEN}@"), (f"//{part}:", f"//{HIDDEN}:"), (f":{part}/", f":{HIDDEN}/")]
        pairs += [(f"'{part}'", f"'{HIDDEN}'"), (f'"{part}"', f'"{HIDDEN}"')]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def redact(text: str, *known_urls: str | None) -> str:
    """`text` fit to show: URLs' credentials hidden, credential-shaped values masked, and every spelling of the
    passwords of `known_urls` (the URLs this text may quote) replaced."""
    if not isinstance(text, str):
        text = str(text)
    for url in filter(None, known_urls):
        text = text.replace(url, redact_url(url))
        for secret, hidden in _replacements(url):
            text = text.replace(secret, hidden)
    text = _WORD_WITH_AT.sub(lambda m: _redact_word(m.group(0)), text)
    text = _SECRET_PARAM.sub(rf"\1{HIDDEN}", text)
    return mask(text, HIDDEN)
