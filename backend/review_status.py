"""The states of a change request and the decisions a reviewer can give, defined once.

The values are what the database stores (`change_requests.status`, `reviews.decision`), so they never change; the
labels are what the CLI and the WebUI show.
"""

from __future__ import annotations

import enum

from backend.errors import LfopsError


class ChangeRequestStatus(enum.StrEnum):
    OPEN = "open"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    MERGED = "merged"
    CLOSED = "closed"
    # A save that reserved its id but has not yet confirmed its branch on origin: never listed or shown; the save
    # (or the reconcile) opens it once the branch is there, the reconcile drops it once it is stale.
    SAVING = "saving"

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]

    @classmethod
    def listed(cls) -> tuple[ChangeRequestStatus, ...]:
        """The states a user can see and filter by (all but SAVING)."""
        return tuple(s for s in cls if s is not cls.SAVING)

    @property
    def under_review(self) -> bool:
        """Still open for decisions (and for closing); merged and closed requests are final."""
        return self in UNDER_REVIEW

    @classmethod
    def parse(cls, text: str, field: str = "status") -> ChangeRequestStatus:
        try:
            return cls(text)
        except ValueError:
            raise LfopsError(
                f"{field}: {text!r} must be one of {', '.join(s.value for s in cls)}", field=field
            ) from None


class ReviewDecision(enum.StrEnum):
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"

    @property
    def label(self) -> str:
        return _DECISION_LABELS[self]

    @property
    def status(self) -> ChangeRequestStatus:
        """The status a change request takes on this decision."""
        return ChangeRequestStatus(self.value)


UNDER_REVIEW = frozenset(
    {ChangeRequestStatus.OPEN, ChangeRequestStatus.CHANGES_REQUESTED, ChangeRequestStatus.APPROVED}
)

# Two tables: members of the two enums with the same value are equal strings, so one dict would merge them.
_STATUS_LABELS = {
    ChangeRequestStatus.OPEN: "open",
    ChangeRequestStatus.CHANGES_REQUESTED: "changes requested",
    ChangeRequestStatus.APPROVED: "approved",
    ChangeRequestStatus.MERGED: "merged",
    ChangeRequestStatus.CLOSED: "closed",
    ChangeRequestStatus.SAVING: "saving",
}
_DECISION_LABELS = {
    ReviewDecision.APPROVED: "approved",
    ReviewDecision.CHANGES_REQUESTED: "changes requested",
}
