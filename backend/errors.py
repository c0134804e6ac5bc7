"""Errors the backend raises on purpose. Each message is one line a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


class LfopsError(Exception):
    """Base of every expected failure; the CLI and the WebUI show `str(error)` as it is."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is and why."""

    field: str
    reason: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ValidationFailed(LfopsError):
    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = [p for p in problems if p.severity == "error"]
        prefix = f"{source}: " if source else ""
        super().__init__("; ".join(prefix + str(p) for p in self.problems) or "invalid")


class PermissionDenied(LfopsError):
    pass


class AuthenticationFailed(LfopsError):
    pass


class NotFound(LfopsError):
    pass


class Conflict(LfopsError):
    """The request contradicts the current state (branch exists, merge conflict, wrong status)."""


class GitFailure(LfopsError):
    """A Git operation against the config repository or its remote failed."""


class StoreUnavailable(LfopsError):
    """The metadata database cannot be reached or used."""
