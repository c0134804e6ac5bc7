"""Which reviews count as approvals of a change request: one rule for review, the launch policy, the registry and
lineage.

A review counts when it approves, was given on the change request's head commit (a merged request keeps the head
that was merged, so this is also "the head that was merged"), was not given by the request's author, is by an lfops
user, and is official. lfops' own decisions are official; a review mirrored from a forge is official when the forge
counts it (current, by someone with write access) and its forge login maps to an lfops user who may decide
(backend.forge_sync), so a forge approval by an unmapped login, or by an analyst, never counts. Deciding on
one's own request is refused when it is asked for; a row that got in some other way must not count either.

The rule is written once, in `_rule`, over operands that are either SQL columns or loaded values: `condition()` is
its SQL form for joins, `counts()` its Python form for loaded objects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select
from sqlalchemy.orm import Session

from backend.review_status import ReviewDecision
from backend.store.models import ChangeRequest, Review, User


def _rule(
    decision: Any, review_head: Any, request_head: Any, reviewer_id: Any, author_id: Any, official: Any
) -> tuple[Any, ...]:
    # Over columns the comparisons build SQL clauses, over values booleans: the same line is the rule for both
    # (`!= None` is IS NOT NULL in SQL).
    return (
        decision == ReviewDecision.APPROVED.value,
        review_head == request_head,
        reviewer_id != None,  # noqa: E711
        reviewer_id != author_id,
        official == True,  # noqa: E712
    )


def condition(review: Any = Review, change_request: Any = ChangeRequest) -> ColumnElement[bool]:
    """SQL: `review` is an approval that counts for `change_request` (either may be an alias); use it to join."""
    return and_(
        review.change_request_id == change_request.id,
        *_rule(
            review.decision,
            review.head_commit,
            change_request.head_commit,
            review.reviewer_id,
            change_request.author_id,
            review.official,
        ),
    )


def counts(review: Review, change_request: ChangeRequest) -> bool:
    """Python: the same rule for a loaded review of a loaded change request."""
    return review.change_request_id == change_request.id and all(
        _rule(
            review.decision,
            review.head_commit,
            change_request.head_commit,
            review.reviewer_id,
            change_request.author_id,
            bool(review.official),
        )
    )


_APPROVERS = (
    select(User.name, User.email)
    .join(Review, Review.reviewer_id == User.id)
    .join(ChangeRequest, condition(Review, ChangeRequest))
    .where(ChangeRequest.id == bindparam("cr_id"))
)


def approver_lines(s: Session, change_request_id: int) -> list[str]:
    """`name <email>` of each approver that counts, sorted: the merge's `Approved-by:` trailers and the manifest."""
    return sorted({f"{name} <{email}>" for name, email in s.execute(_APPROVERS, {"cr_id": change_request_id})})
