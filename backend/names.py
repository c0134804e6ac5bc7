"""The one rule for what users may name: configs, branches, and the numbers they type for ids.

A branch is what `git check-ref-format --branch` accepts (Git itself is asked), within lfops' narrower character
set (letters, digits, '.', '_', '-' in '/'-separated segments: names end up in paths, URLs and forge APIs), minus a
reserved list: HEAD and Git's other special refs, the main branch, anything under `refs/`, and no leading or
trailing whitespace or control characters (a name ending in a newline included). Lengths are capped here, and the
database columns that hold these names are sized from the same constants, so SQLite (which never enforces a
VARCHAR length) and PostgreSQL (which does) refuse the same names with the same message.
"""

from __future__ import annotations

import os
import re
import subprocess

from backend.errors import LfopsError, NotFound

NAME_MAX = 100  # a config name, and each segment of a branch
BRANCH_MAX = 255  # a whole branch name: change_requests.branch is String(BRANCH_MAX)
CONFIG_PATH_MAX = 255  # configs/<name>.yaml: change_requests.config_path and configs.path
ID_MAX = 2**31 - 1  # ids are INTEGER columns: PostgreSQL's int4 is the smaller range of the two databases

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Names Git gives a meaning of its own at the top of a repository; a branch called so makes revisions ambiguous.
_GIT_SPECIAL = frozenset(
    {"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "BISECT_HEAD", "AUTO_MERGE"}
)
_CHARSET = "use letters, digits, '.', '_', '-'"


def check_name(value: object, field: str = "name") -> str:
    """A config name (one segment): letters, digits, '.', '_' and '-', starting with a letter or digit, no '..',
    not ending in '.' or '.lock', at most NAME_MAX characters."""
    if (
        not isinstance(value, str)
        or not _SEGMENT.fullmatch(value)  # fullmatch: "x\n" is refused (`$` would match before the newline)
        or len(value) > NAME_MAX
        or ".." in value
        or value.endswith((".lock", "."))
    ):
        raise LfopsError(
            f"{field}: {value!r} is not allowed ({_CHARSET}; no '..', spaces or '/'; at most {NAME_MAX} characters)",
            field=field,
        )
    return value


def check_branch(value: object, field: str = "branch", main: str | None = None) -> str:
    """A branch name lfops may create: see the module's rule. `main` is the main branch, which no change request
    may use (None where the main branch itself is being checked)."""
    if not isinstance(value, str) or not value:
        raise LfopsError(f"{field}: must not be empty", field=field)
    if value != value.strip() or _CONTROL.search(value):
        raise LfopsError(
            f"{field}: {value!r} must not start or end with whitespace or hold control characters", field=field
        )
    if len(value) > BRANCH_MAX:
        raise LfopsError(f"{field}: {len(value)} characters is too long (at most {BRANCH_MAX})", field=field)
    reserved = _reserved(value, main)
    if reserved:
        raise LfopsError(f"{field}: {value!r} is reserved ({reserved})", field=field)
    for segment in value.split("/"):
        try:
            check_name(segment, field)
        except LfopsError:
            raise LfopsError(
                f"{field}: {value!r} is not allowed ({_CHARSET} in '/'-separated parts; no '..', spaces, "
                f"empty parts or parts ending in '.lock'; at most {NAME_MAX} characters a part)",
                field=field,
            ) from None
    _git_accepts(value, field)
    return value


def _reserved(value: str, main: str | None) -> str:
    folded = value.casefold()  # a case-insensitive filesystem on origin would merge Main and main
    if folded in {name.casefold() for name in _GIT_SPECIAL}:
        return "a name Git uses itself"
    if main is not None and folded == main.casefold():
        return "the main branch"
    if folded == "refs" or folded.startswith("refs/"):
        return "names under refs/ are Git's own"
    return ""


def _git_accepts(value: str, field: str) -> None:
    """Git's own rule, asked of Git (`git check-ref-format --branch`): the authority on what a branch can be."""
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(["git", "check-ref-format", "--branch", value], capture_output=True, text=True, env=env)
    if proc.returncode != 0 or proc.stdout.strip() != value:
        raise LfopsError(f"{field}: {value!r} is not a valid Git branch name", field=field)


def check_id(value: object, what: str = "change request") -> int:
    """An id a user typed: anything outside the id columns' range cannot exist, so it is "no such ..." (never a
    database overflow error)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ID_MAX:
        raise NotFound(f"{what} #{value} does not exist")
    return value
