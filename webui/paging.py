"""Pages of the tabs' lists: PAGE rows a page, bounded as every list is (backend.paging)."""

from __future__ import annotations

from backend.paging import DEFAULT_LIMIT, check_page

PAGE = DEFAULT_LIMIT


def page_offset(page: float | None) -> int:
    """The offset of page `page` (1 for the first; empty means the first); out of range names `offset`."""
    offset = (max(1, int(page or 1)) - 1) * PAGE
    check_page(PAGE, offset)
    return offset
