"""Cross-process locks on files (flock): the one helper for every lock lfops takes between its own processes."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, wait: bool = True, shared: bool = False) -> Iterator[bool]:
    """Hold an exclusive (or `shared`) flock on `path` (created if missing) for the block; yields False at once
    instead of waiting when `wait` is off and another open file description holds it. The lock ends with the block
    or the process."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Another open file description holds the flock on `path` (a missing file is not locked)."""
    if not Path(path).exists():
        return False
    with file_lock(path, wait=False) as acquired:
        return not acquired
