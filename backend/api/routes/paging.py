"""Page parameters of every list route, bounded by backend.paging (out of range: 422 naming `limit` or `offset`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Query

from backend.paging import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="items to skip (the previous page's next_offset)"),
) -> PageParams:
    return PageParams(limit, offset)
