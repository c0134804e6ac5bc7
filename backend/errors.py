"""Errors the backend raises on purpose: one hierarchy for the CLI, the WebUI and the API.

Each error is one line a user can act on. `code` says what kind of failure it is (the API maps it to an HTTP
status, the CLI to an exit code); `field` names the input it is about, as the user sees it, when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass


class LfopsError(Exception):
    """Base of every expected failure; the CLI and the WebUI show `str(error)` as it is."""

    code = "invalid"

    def __init__(self, message: str = "", *, field: str = "") -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is and why."""

    field: str
    reason: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ValidationFailed(LfopsError):
    """A config, a form or a setting is not valid; `problems` name each field and the reason."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = [p for p in problems if p.severity == "error"]
        prefix = f"{source}: " if source else ""
        first = self.problems[0].field if self.problems else ""
        super().__init__("; ".join(prefix + str(p) for p in self.problems) or "invalid", field=first)


class InvalidQuery(LfopsError):
    """A list's filter or order that cannot be asked (unknown parameter, value of the wrong type): the API answers
    422, as for its own checks of query parameters."""


class PermissionDenied(LfopsError):
    code = "forbidden"


class AuthenticationFailed(LfopsError):
    code = "unauthenticated"


class NotFound(LfopsError):
    code = "not_found"


class Conflict(LfopsError):
    """The request contradicts the current state (branch exists, merge conflict, wrong status)."""

    code = "conflict"


class GitFailure(LfopsError):
    """A Git operation against the config repository or its remote failed."""

    code = "unavailable"


class StoreUnavailable(LfopsError):
    """The metadata database cannot be reached or used."""

    code = "unavailable"


class ClusterUnreachable(LfopsError):
    """The Kubernetes API server could not be reached; nothing was half-done that a retry would duplicate."""

    code = "unavailable"


class ClusterError(LfopsError):
    """The Kubernetes API server refused a request (forbidden, invalid, conflict)."""

    code = "cluster"


class TimedOut(LfopsError, TimeoutError):
    """Waiting for something (a run, a server) took longer than allowed; nothing was stopped by the wait."""

    code = "timeout"


class SettingsError(LfopsError):
    """A setting (an `LFOPS_*` variable, a cluster profile field) has a bad value; `field` names it."""

    code = "settings"
