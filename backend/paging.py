"""Pages of lists: the bounds of a page, defined once for the API, the CLI and the WebUI.

Every list the backend serves takes `limit` and `offset` (newest first, by id, so a page is an index range scan);
callers ask for `limit + 1` rows to learn whether another page follows (`Page.of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from backend.errors import LfopsError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Deeper pages are a scan of every row before them: filter instead.
MAX_OFFSET = 1_000_000

T = TypeVar("T")


def check_page(limit: int, offset: int) -> None:
    """Raise LfopsError naming `limit` or `offset` when it is out of range."""
    if not 1 <= limit <= MAX_LIMIT:
        raise LfopsError(f"limit: must be from 1 to {MAX_LIMIT}, got {limit}", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise LfopsError(f"offset: must be from 0 to {MAX_OFFSET}, got {offset}", field="offset")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None  # None: this is the last page

    @classmethod
    def of(cls, fetch: Callable[[int, int], Sequence[T]], limit: int, offset: int) -> Page[T]:
        """One page from `fetch(limit, offset)`, asked for one row more than the page to see whether more follow."""
        check_page(limit, offset)
        rows = list(fetch(limit + 1, offset))
        more = len(rows) > limit
        return cls(rows[:limit], limit, offset, offset + limit if more else None)
