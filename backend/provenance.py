"""Provenance: the trailer block of every commit lfops makes, and the checks that make it trustworthy.

Writing: trailers come only from lfops. User text that goes into a commit (a save message, its title) may not hold a
line shaped like one of lfops' trailers (refused, naming the line: that also catches look-alikes such as
`approved_by :` or `APPROVED-BY:`), every trailer value is one line without control characters, and lfops' block is
appended as the message's last paragraph, the only one Git reads trailers from; the message is then parsed back with
Git's own parser and must yield exactly the block lfops wrote.

Reading: trailers are claims. `verify` checks a commit's claims against the database (the change request it names
has this commit as its head, or as its merge; the config hash, path, saver and merger match; every `Approved-by` is
an approval that counts). `lfops log`, merge and the reconcile use it; a mismatch is reported, never trusted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import approvals
from backend.errors import GitFailure, LfopsError
from backend.gitstore import parse_trailers
from backend.names import ID_MAX
from backend.store.models import ChangeRequest, Config, User

# The trailer keys lfops writes, in the order it writes them.
CHANGE_REQUEST = "Change-Request"
CONFIG_PATH = "Config-Path"
CONFIG_HASH = "Config-Hash"
DATASET_VERSION = "Dataset-Version"
BASE_MODEL = "Base-Model"
SAVED_BY = "Saved-by"
MERGED_BY = "Merged-by"
APPROVED_BY = "Approved-by"
KEYS = (CHANGE_REQUEST, CONFIG_PATH, CONFIG_HASH, DATASET_VERSION, BASE_MODEL, SAVED_BY, MERGED_BY, APPROVED_BY)

# A line that starts like a trailer: a token (anything but ':' and line breaks, short) then optional blanks and ':'.
_TRAILER_SHAPED = re.compile(r"^[ \t]*([^:\n]{1,60}?)[ \t]*:", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def _fold(key: str) -> str:
    """A key as compared: compatibility-normalised, case-folded, letters and digits only (so `approved_by`,
    `Approved‐By` with a Unicode hyphen and `APPROVEDBY` are all `approvedby`)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", key).casefold() if ch.isalnum())


_FOLDED = {_fold(key): key for key in KEYS}


def check_user_text(text: str, field: str) -> str:
    """`text` as given, unless a line of it looks like one of lfops' trailers (refused: only lfops writes those)."""
    for number, line in enumerate(text.split("\n"), start=1):
        shaped = _TRAILER_SHAPED.match(line)
        if shaped and _fold(shaped.group(1)) in _FOLDED:
            raise LfopsError(
                f"{field}: line {number} looks like the trailer {_FOLDED[_fold(shaped.group(1))]!r}; "
                "lfops writes those itself (reword the line)",
                field=field,
            )
    return text


def trailer_block(**values: str | list[str]) -> str:
    """The trailer lines for keyword arguments (Config_Hash -> Config-Hash); a value must be one clean line."""
    lines = []
    for name, value in values.items():
        key = name.replace("_", "-")
        if key not in KEYS:
            raise ValueError(f"{key} is not an lfops trailer")
        for item in value if isinstance(value, list) else [value]:
            if not item:
                continue
            if _CONTROL.search(item) or item != item.strip():
                raise LfopsError(f"{key}: {item!r} cannot be recorded (line breaks or control characters)", field=key)
            lines.append(f"{key}: {item}")
    return "\n".join(lines)


def commit_message(text: str, **values: str | list[str]) -> str:
    """User text, then lfops' trailer block as the last paragraph; parsed back, the trailers must be exactly ours."""
    body = check_user_text(text.strip(), "message")
    block = trailer_block(**values)
    message = f"{body}\n\n{block}\n"
    if parse_trailers(message) != _as_dict(block):
        raise GitFailure("the commit message's trailers did not come out as lfops wrote them; nothing was committed")
    return message


def description(message: str) -> str:
    """A commit message lfops wrote, without its trailer block (the user's text)."""
    body, sep, _block = message.rstrip("\n").rpartition("\n\n")
    return body if sep else message


def _as_dict(block: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in block.splitlines():
        key, _, value = line.partition(": ")
        result.setdefault(key, []).append(value)
    return result


# ---- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    """What a commit's lfops trailers claim, keys normalised; `foreign` holds every other trailer as found."""

    values: dict[str, list[str]]
    foreign: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, trailers: dict[str, list[str]]) -> Claims:
        ours: dict[str, list[str]] = {}
        foreign: dict[str, list[str]] = {}
        for key, values in trailers.items():
            canonical = _FOLDED.get(_fold(key))
            if canonical:
                ours.setdefault(canonical, []).extend(values)
            else:
                foreign[key] = values
        return cls(ours, foreign)

    def __bool__(self) -> bool:
        return bool(self.values)

    def one(self, key: str) -> str | None:
        values = self.values.get(key, [])
        return values[0] if len(values) == 1 else None

    def change_request(self) -> int | None:
        """The change request number claimed, when there is exactly one and it can be an id."""
        text = self.one(CHANGE_REQUEST)
        if text is None or not text.isascii() or not text.isdigit():
            return None
        number = int(text)
        return number if 1 <= number <= ID_MAX else None

    def person(self, key: str) -> str | None:
        """The user name of a `name <email>` trailer."""
        text = self.one(key)
        return text.split(" <", 1)[0] if text else None


def verify(s: Session, commit: str, parents: list[str], trailers: dict[str, list[str]]) -> list[str]:
    """What in a commit's lfops trailers the database contradicts ([] when it all matches, or it claims nothing)."""
    claims = Claims.of(trailers)
    if not claims:
        return []
    number = claims.change_request()
    if number is None:
        return [f"lfops trailers without one valid {CHANGE_REQUEST} (found {claims.values.get(CHANGE_REQUEST)})"]
    cr = s.get(ChangeRequest, number)
    if cr is None:
        return [f"{CHANGE_REQUEST}: #{number} does not exist in the database"]
    if len(parents) >= 2:
        return merge_mismatches(s, cr, commit, parents, claims, recorded=True)
    if commit != cr.head_commit:
        earlier = s.scalar(
            select(Config.config_hash).where(
                Config.commit == commit, Config.path == cr.config_path, Config.change_request_id == cr.id
            )
        )
        if earlier is not None:  # an earlier revision of the request (an update followed it)
            return revision_mismatches(cr, claims, earlier)
    return save_mismatches(cr, commit, claims)


def revision_mismatches(cr: ChangeRequest, claims: Claims, config_hash: str) -> list[str]:
    """An earlier revision's claims against what was recorded for it and its request."""
    problems = _field_mismatches(cr, claims, (CONFIG_HASH, config_hash), (CONFIG_PATH, cr.config_path))
    saver = claims.person(SAVED_BY)
    if SAVED_BY in claims.values and saver != cr.author.name:
        problems.append(f"{SAVED_BY}: says {saver}, the database says {cr.author.name}")
    return problems


def head_mismatches(cr: ChangeRequest, commit: str, trailers: dict[str, list[str]]) -> list[str]:
    """A change request's head commit against the request: its trailers must name this request, and match it."""
    claims = Claims.of(trailers)
    number = claims.change_request()
    if number != cr.id:
        return [f"they name change request {'#' + str(number) if number else 'none'}, not #{cr.id}"]
    return save_mismatches(cr, commit, claims)


def save_mismatches(cr: ChangeRequest, commit: str, claims: Claims) -> list[str]:
    """A save commit's claims against its change request."""
    problems = []
    if commit != cr.head_commit:
        problems.append(f"change request #{cr.id}'s commit is {cr.head_commit[:12]}, not this one")
    problems += _field_mismatches(cr, claims, (CONFIG_HASH, cr.config_hash), (CONFIG_PATH, cr.config_path))
    saver = claims.person(SAVED_BY)
    if SAVED_BY in claims.values and saver != cr.author.name:
        problems.append(f"{SAVED_BY}: says {saver}, the database says {cr.author.name}")
    return problems


def merge_mismatches(
    s: Session, cr: ChangeRequest, commit: str, parents: list[str], claims: Claims, recorded: bool
) -> list[str]:
    """A merge commit's claims against its change request; `recorded`: the database must already name this merge."""
    problems = []
    if recorded and cr.merged_commit != commit:
        where = f"as {cr.merged_commit[:12]}" if cr.merged_commit else "at all"
        problems.append(f"change request #{cr.id} is not recorded as merged by this commit (merged {where})")
    if len(parents) < 2 or parents[1] != cr.head_commit:
        problems.append(f"this merge does not merge change request #{cr.id}'s commit {cr.head_commit[:12]}")
    problems += _field_mismatches(cr, claims, (CONFIG_HASH, cr.config_hash))
    counted = set(approvals.approver_lines(s, cr.id))
    claimed = claims.values.get(APPROVED_BY, [])
    if not claimed:
        problems.append(f"no {APPROVED_BY} trailer")
    for line in claimed:
        if line not in counted:
            problems.append(f"{APPROVED_BY}: {line} is not an approval that counts for change request #{cr.id}")
    merger = claims.person(MERGED_BY)
    if merger is not None:
        user = s.query(User).filter(User.name == merger).one_or_none()
        if user is None or (recorded and cr.merged_by_id is not None and user.id != cr.merged_by_id):
            problems.append(f"{MERGED_BY}: {merger} is not who the database says merged it")
    return problems


def _field_mismatches(cr: ChangeRequest, claims: Claims, *expected: tuple[str, str]) -> list[str]:
    problems = []
    for key, value in expected:
        if key in claims.values and claims.values[key] != [value]:
            problems.append(f"{key}: says {', '.join(claims.values[key])}, change request #{cr.id} has {value}")
    return problems
