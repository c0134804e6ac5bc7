"""Links to places in the WebUI, for people who arrive from elsewhere (a pull request, its commit status, a
notification): one source for the URL that webui/places.py reads back on page load (`?tab=review&cr=12`)."""

from __future__ import annotations

from urllib.parse import urlencode

TAB, CHANGE_REQUEST, RUN = "tab", "cr", "run"  # the query parameters
REVIEW_TAB, RUNS_TAB = "review", "runs"


def change_request_link(public_url: str, cr_id: int) -> str:
    """The Review tab with change request `cr_id` open; empty without a public URL."""
    return _link(public_url, {TAB: REVIEW_TAB, CHANGE_REQUEST: cr_id})


def run_link(public_url: str, run_id: int) -> str:
    """The Runs tab with run `run_id` selected; empty without a public URL."""
    return _link(public_url, {TAB: RUNS_TAB, RUN: run_id})


def _link(public_url: str, query: dict[str, object]) -> str:
    return f"{public_url.rstrip('/')}/?{urlencode(query)}" if public_url else ""
