"""A change request's pull request on the forge: opened and updated by lfops, mirrored back into lfops.

lfops -> forge: `publish(cr_id)` after ANY push to a change request's branch (a save, a revised save) opens the pull
request if there is none, else updates its body, and posts the `lfops/validate` status on the head; `merge` and
`close` are the forge's own verbs, called by backend.review.

forge -> lfops: a webhook is only a hint (`receive`): its payload is never applied, because deliveries arrive out
of order and Gitea dismisses stale approvals about 0.5 s after a push without any webhook. It makes lfops re-read
the pull request (`sync(number)`): its state, head and reviews, the same whatever the order. The periodic reconcile
(`reconcile`) does the same for every open pull request and publishes requests whose pull request is missing, so a
missed delivery or a forge that was down is caught up.

What is mirrored: the head (a commit pushed by hand moves the change request's head, so earlier approvals stop
counting; its config is validated like any other), the reviews (upserted by the forge's review id; a review is
official when the forge counts it and its login maps to an lfops user who may decide: backend.approvals counts only
those), the request's status from them, a close, and a merge (recorded with `approved_at_merge`: false for an admin
merge without an approval that counts, which then launches only with the audited override).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import approvals, audit
from backend import config as cfgmod
from backend.auth import Actor
from backend.change_request_records import record_merge
from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.errors import AuthenticationFailed, Conflict, LfopsError, NotFound, ValidationFailed
from backend.forge import STATUS_CONTEXT, Forge, Review, WebhookEvent
from backend.forge import PullRequest as ForgePullRequest
from backend.gitstore import GitStore
from backend.invariants import Finding
from backend.places import change_request_link
from backend.review import PullRequestView, param_table, pull_request_view
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus, ReviewDecision
from backend.store import Store
from backend.store.models import ChangeRequest, ForgeDelivery, PullRequest, User, utcnow
from backend.store.models import Review as ReviewRow

log = logging.getLogger(__name__)

ACTOR = "lfops-forge"  # who the audit log names for what the forge reported
PR_WITHOUT_ROW = "change-request-without-pull-request"
_PROBLEMS_SHOWN = 3


@dataclass(frozen=True)
class Validation:
    ok: bool
    problems: list[str]

    @property
    def state(self) -> str:
        return "success" if self.ok else "failure"

    @property
    def description(self) -> str:
        if self.ok:
            return "the config validates"
        shown = "; ".join(self.problems[:_PROBLEMS_SHOWN])
        more = f" (+{len(self.problems) - _PROBLEMS_SHOWN} more)" if len(self.problems) > _PROBLEMS_SHOWN else ""
        return shown + more


class ForgeSync:
    def __init__(
        self,
        store: Store,
        repo: GitStore,
        forge: Forge,
        *,
        user_map: Mapping[str, str] | None = None,
        public_url: str = "",
        merge_style: str = "merge",
    ) -> None:
        self.store = store
        self.repo = repo
        self.forge = forge
        self.user_map = dict(user_map or {})
        self.public_url = public_url.rstrip("/")
        self.merge_style = merge_style

    # ---- lfops -> forge -----------------------------------------------------------------------------------------

    def link(self, cr_id: int) -> str:
        """Where a reviewer opens the change request in lfops: the WebUI's Review tab (empty without
        LFOPS_PUBLIC_URL)."""
        return change_request_link(self.public_url, cr_id)

    def api_link(self, cr_id: int) -> str:
        """The change request's REST resource, for scripts (empty without LFOPS_PUBLIC_URL)."""
        return f"{self.public_url}/api/v1/change-requests/{cr_id}" if self.public_url else ""

    def publish(self, cr_id: int) -> PullRequestView:
        """Open the change request's pull request, or update its title and body, and post `lfops/validate` on its
        head. Idempotent: call it after any push to the branch. A pull request opened here and not recorded (the
        status or the database failed) is closed again before the error is raised."""
        with self.store.session() as s:
            cr = s.get(ChangeRequest, cr_id)
            if cr is None:
                raise NotFound(f"change request #{cr_id} does not exist")
            if cr.status not in UNDER_REVIEW and cr.status != ChangeRequestStatus.SAVING:
                raise Conflict(f"change request #{cr_id} is {cr.status}; its pull request is not updated")
            row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
            number = row.number if row is not None and row.state == "open" else None
            branch, head, path, title = cr.branch, cr.head_commit, cr.config_path, cr.title
            validation = self.validate(head, [path])
            body = self.body(cr, validation)
        opened = False
        if number is not None:
            pr = self.forge.update_pull_request(number, title=title, body=body)
        else:
            pr = self.forge.find_pull_request(branch, self.repo.main)  # a time-out on open may have opened it
            if pr is None:
                pr = self.forge.open_pull_request(branch, self.repo.main, title, body)
                opened = True
            else:
                pr = self.forge.update_pull_request(pr.number, title=title, body=body)
        try:
            self._post_status(head, validation, cr_id)
            with self.store.session() as s:
                row = self._upsert_row(s, cr_id, pr, head)
                row.validated_commit = head
                audit.record(s, ACTOR, "forge.publish", f"change_request:{cr_id}", number=pr.number, head=head)
                return pull_request_view(row)
        except BaseException:
            if opened:
                self._close_quietly(pr.number)
            raise

    def body(self, cr: ChangeRequest, validation: Validation) -> str:
        """The pull request's description: the hyperparameters against main, the validation, the hashes, a link."""
        lines = [cr.description or cr.title, "", f"### lfops change request #{cr.id}", ""]
        link = self.link(cr.id)
        if link:
            lines += [f"[Review it in lfops]({link}) · [API]({self.api_link(cr.id)})", ""]
        lines += [
            "| | |",
            "|---|---|",
            f"| config | `{cr.config_path}` |",
            f"| config hash | `{cr.config_hash}` |",
            f"| dataset version | `{cr.dataset_version}` |",
            f"| head commit | `{cr.head_commit}` |",
            f"| validation | {'ok' if validation.ok else 'failed: ' + _cell(validation.description)} |",
            "",
            "#### Hyperparameters",
            "",
        ]
        rows = self._params(cr)
        if rows:
            lines += ["| key | main | this change |", "|---|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(b)} | {_cell(a)} |" for k, b, a in rows]
        else:
            lines.append("(the config does not parse; see the validation)")
        return "\n".join(lines) + "\n"

    def _params(self, cr: ChangeRequest) -> list[tuple[str, str, str]]:
        try:
            head = TrainConfig.parse(self.repo.read(cr.head_commit, cr.config_path) or b"", cr.config_path)
            main_yaml = self.repo.read(f"refs/remotes/origin/{self.repo.main}", cr.config_path)
            before = TrainConfig.parse(main_yaml, cr.config_path).normalised_args() if main_yaml else None
            rows, _ = param_table(before, head.normalised_args())
        except LfopsError:
            return []
        return [
            (r.key, "" if r.before is None else str(r.before), str(r.after)) for r in rows if r.change != "unchanged"
        ]

    def validate(self, commit: str, paths: list[str]) -> Validation:
        """lfops' validation of the configs `paths` at `commit` (the commit fetched if the mirror lacks it)."""
        if not self.repo.has_commit(commit):
            self.repo.fetch()
        problems: list[str] = []
        for path in paths:
            raw = self.repo.read(commit, path)
            if raw is None:
                problems.append(f"{path}: missing at {commit[:12]}")
                continue
            try:
                cfgmod.parse_and_validate(raw, self.repo.files(commit), path)
            except ValidationFailed as exc:
                problems += [str(p) for p in exc.problems]
            except LfopsError as exc:
                problems.append(f"{path}: {exc}")
        return Validation(not problems, problems)

    def _post_status(self, head: str, validation: Validation, cr_id: int | None) -> None:
        self.forge.set_commit_status(
            head,
            validation.state,
            STATUS_CONTEXT,
            validation.description,
            self.link(cr_id) if cr_id is not None else "",
        )

    def merge(self, cr_id: int, head: str, message: str) -> str:
        """Merge the change request's pull request on the forge (its protection rules apply; refused if the head is
        no longer `head`); the merge commit, fetched into the mirror."""
        number = self._number(cr_id)
        pr = self.forge.merge(number, style=self.merge_style, head_sha=head, message=message)
        if not pr.merged or not pr.merge_commit_sha:
            pr = self.forge.get_pull_request(number)
        if not pr.merged or not pr.merge_commit_sha:
            raise Conflict(f"pull request #{number} is not merged after the forge accepted the merge; try again")
        self.repo.fetch()
        with self.store.session() as s:
            row = self._upsert_row(s, cr_id, pr, head)
            row.approved_at_merge = True  # lfops merged it: its approval was checked before the call
        return pr.merge_commit_sha

    def close(self, cr_id: int) -> None:
        """Close the pull request (before lfops closes the change request, so a forge that is down changes nothing)."""
        with self.store.session() as s:
            row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
            if row is None or row.state != "open":
                return
            number = row.number
        pr = self.forge.update_pull_request(number, state="closed")
        with self.store.session() as s:
            self._upsert_row(s, cr_id, pr, pr.head_sha)

    def comment(self, cr_id: int, text: str) -> None:
        """A note on the pull request (a decision taken in lfops); nothing when it has none."""
        with self.store.session() as s:
            row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
            number = row.number if row is not None else None
        if number is not None:
            self.forge.comment(number, text)

    def pull_requests(self) -> list[PullRequestView]:
        """Every change request's pull request, newest first."""
        with self.store.session() as s:
            return [
                pull_request_view(r)
                for r in s.scalars(select(PullRequest).order_by(PullRequest.change_request_id.desc()))
            ]

    def pull_request(self, cr_id: int) -> PullRequestView | None:
        with self.store.session() as s:
            row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
            return pull_request_view(row) if row is not None else None

    # ---- forge -> lfops -----------------------------------------------------------------------------------------

    def receive(self, headers: Mapping[str, str], body: bytes) -> str:
        """A webhook delivery: verified (a bad signature is refused, logged and audited, never the secret or the
        body), skipped if its id was handled, else the pull requests it is about are re-read. What was done."""
        try:
            event = self.forge.receive_webhook(headers, body)
        except AuthenticationFailed as exc:
            log.warning("forge webhook refused: %s", exc)
            with self.store.session() as s:
                audit.record(s, "-", "forge.webhook-refused", f"forge:{self.forge.kind}", reason=str(exc))
            raise
        if event.delivery:
            try:
                with self.store.session() as s:
                    s.add(ForgeDelivery(delivery=event.delivery[:100], event=f"{event.kind}:{event.action}"[:64]))
            except IntegrityError:
                return f"delivery {event.delivery} already handled"
        numbers = self._numbers_of(event)
        try:
            for number in numbers:
                self.sync(number)
        except BaseException:
            if event.delivery:  # not handled: a redelivery (or the reconcile) tries again
                with self.store.session() as s:
                    s.execute(delete(ForgeDelivery).where(ForgeDelivery.delivery == event.delivery[:100]))
            raise
        return f"{event.kind} {event.action}: re-read " + (
            ", ".join(f"#{n}" for n in numbers) if numbers else "nothing"
        )

    def _numbers_of(self, event: WebhookEvent) -> list[int]:
        if event.kind in ("pull_request", "review") and event.number:
            return [event.number]
        if event.kind == "push" and event.push and event.push.ref.startswith("refs/heads/"):
            branch = event.push.ref.removeprefix("refs/heads/")
            with self.store.session() as s:
                return list(
                    s.scalars(
                        select(PullRequest.number)
                        .join(ChangeRequest, ChangeRequest.id == PullRequest.change_request_id)
                        .where(ChangeRequest.branch == branch, PullRequest.state == "open")
                    )
                )
        return []  # statuses (lfops' own), comments, pings: nothing to re-read

    def sync(self, number: int) -> PullRequestView | None:
        """Re-read pull request `number` and mirror it: head, reviews, status, close, merge. The result is the same
        whatever order the deliveries came in. A pull request lfops did not open gets its head validated only."""
        pr = self.forge.get_pull_request(number)
        with self.store.session() as s:
            row = s.scalar(
                select(PullRequest).where(PullRequest.forge == self.forge.kind, PullRequest.number == number)
            )
            cr_id = row.change_request_id if row is not None else None
            validated = row.validated_commit if row is not None else ""
            path = row.change_request.config_path if row is not None else None
        if pr.head_sha and not self.repo.has_commit(pr.head_sha):
            self.repo.fetch()
        if cr_id is None:
            if pr.state == "open" and pr.head_sha:
                self._post_status(pr.head_sha, self.validate(pr.head_sha, self._changed_configs(pr.head_sha)), None)
            return None
        reviews = self.forge.list_reviews(number)
        if pr.merged and pr.merge_commit_sha and not self.repo.has_commit(pr.merge_commit_sha):
            self.repo.fetch()
        with self.store.session() as s:
            row = self._upsert_row(s, cr_id, pr, pr.head_sha)
            cr = row.change_request
            if cr.status in UNDER_REVIEW and pr.head_sha and pr.head_sha != cr.head_commit:
                self._adopt_head(s, cr, pr.head_sha)
            self._mirror_reviews(s, cr, reviews)
            s.flush()
            s.refresh(cr)
            if pr.merged and pr.merge_commit_sha:
                self._record_forge_merge(s, cr, row, pr)
            elif pr.state == "closed" and cr.status in UNDER_REVIEW:
                cr.status = ChangeRequestStatus.CLOSED
                cr.updated_at = utcnow()
                audit.record(s, ACTOR, "review.close", f"change_request:{cr.id}", reason=f"pull request #{number}")
            elif cr.status in UNDER_REVIEW:
                self._set_status(s, cr)
            view = pull_request_view(row)
        if pr.state == "open" and pr.head_sha and pr.head_sha != validated:
            self._post_status(pr.head_sha, self.validate(pr.head_sha, [path or ""]), cr_id)
            with self.store.session() as s:
                row = s.get(PullRequest, s.scalar(select(PullRequest.id).where(PullRequest.number == number)))
                if row is not None and row.head_commit == pr.head_sha:
                    row.validated_commit = pr.head_sha
        return view

    def reconcile(self, repair: bool = True) -> list[Finding]:
        """Every open pull request re-read; every request under review without one published."""
        findings: list[Finding] = []
        with self.store.session() as s:
            missing = list(
                s.scalars(
                    select(ChangeRequest.id)
                    .outerjoin(PullRequest, PullRequest.change_request_id == ChangeRequest.id)
                    .where(ChangeRequest.status.in_(UNDER_REVIEW), PullRequest.id.is_(None))
                )
            )
            numbers = list(s.scalars(select(PullRequest.number).where(PullRequest.state == "open")))
        for cr_id in missing:
            finding = Finding(PR_WITHOUT_ROW, f"change request #{cr_id}", "it has no pull request", "open it")
            if repair:
                self.publish(cr_id)
                finding = Finding(finding.invariant, finding.subject, finding.detail, finding.repair, repaired=True)
            findings.append(finding)
        if repair:
            for number in numbers:
                self.sync(number)
        return findings

    # ---- the mirroring steps ------------------------------------------------------------------------------------

    def _upsert_row(self, s: Session, cr_id: int, pr: ForgePullRequest, head: str) -> PullRequest:
        row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
        if row is None:
            row = PullRequest(change_request_id=cr_id, forge=self.forge.kind, number=pr.number, head_commit=head)
            s.add(row)
        row.number = pr.number
        row.url = pr.url
        row.state = pr.state
        row.head_commit = pr.head_sha or head
        if pr.merged:
            row.merge_commit = pr.merge_commit_sha
            row.merged_by = pr.merged_by
        row.updated_at = utcnow()
        s.flush()
        return row

    def _adopt_head(self, s: Session, cr: ChangeRequest, head: str) -> None:
        """A commit pushed to the branch outside lfops: the request's head moves there (earlier approvals stop
        counting); its config row is recorded when it validates."""
        before = cr.head_commit
        cr.head_commit = head
        cr.status = ChangeRequestStatus.OPEN
        cr.updated_at = utcnow()
        raw = self.repo.read(head, cr.config_path)
        if raw is not None:
            try:
                config, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(head), cr.config_path)
                cr.config_hash = config.frozen().config_hash
                cr.dataset_version = dataset_version
                record_config(s, head, cr.config_path, config, dataset_version, cr.id, cr.config_hash)
            except LfopsError:
                pass  # an invalid head: its failing status says why, and a merge validates again
        audit.record(s, ACTOR, "forge.head-moved", f"change_request:{cr.id}", before=before, head=head)

    def _lfops_user(self, s: Session, login: str) -> User | None:
        name = self.user_map.get(login, login)
        user = s.scalar(select(User).where(User.name == name))
        return user if user is not None and user.active else None

    def _mirror_reviews(self, s: Session, cr: ChangeRequest, reviews: list[Review]) -> None:
        existing = {
            r.forge_review_id: r
            for r in s.scalars(
                select(ReviewRow).where(ReviewRow.change_request_id == cr.id, ReviewRow.forge_review_id.is_not(None))
            )
        }
        for review in reviews:
            if review.state not in ("approved", "changes_requested", "dismissed") or not review.id:
                continue
            user = self._lfops_user(s, review.reviewer)
            decides = user is not None and Actor.of(user).can("review.decide")
            decision = (
                ReviewDecision.CHANGES_REQUESTED if review.state == "changes_requested" else ReviewDecision.APPROVED
            )
            official = review.official and not review.stale and review.state != "dismissed" and decides
            row = existing.get(review.id)
            if row is None:
                row = ReviewRow(change_request_id=cr.id, source="forge", forge_review_id=review.id)
                s.add(row)
                if review.submitted_at is not None:
                    row.at = review.submitted_at
                audit.record(
                    s,
                    f"forge:{review.reviewer}"[:64],
                    f"review.{decision}",
                    f"change_request:{cr.id}",
                    head=review.commit_id or "",
                    source="forge",
                    counts=official,
                )
            row.reviewer_id = user.id if user is not None else None
            row.forge_login = review.reviewer
            row.decision = decision
            row.comment = review.body
            row.head_commit = review.commit_id or ""
            row.official = official

    def _set_status(self, s: Session, cr: ChangeRequest) -> None:
        """The status the reviews give: the newest decision that counts on the head (approved or changes requested),
        open when there is none."""
        # lfops' own rule: the newest decision on the head decides (reviews are in the order they were recorded)
        current = [r for r in cr.reviews if r.head_commit == cr.head_commit and r.official and r.reviewer_id]
        latest = current[-1] if current else None
        if latest is not None and approvals.counts(latest, cr):
            wanted = ChangeRequestStatus.APPROVED
        elif latest is not None and latest.decision == ReviewDecision.CHANGES_REQUESTED:
            wanted = ChangeRequestStatus.CHANGES_REQUESTED
        else:
            wanted = ChangeRequestStatus.OPEN
        if cr.status != wanted:
            cr.status = wanted
            cr.updated_at = utcnow()

    def _record_forge_merge(self, s: Session, cr: ChangeRequest, row: PullRequest, pr: ForgePullRequest) -> None:
        merge = str(pr.merge_commit_sha)
        counted = any(approvals.counts(r, cr) for r in cr.reviews)
        if row.approved_at_merge is None:
            row.approved_at_merge = counted
        if cr.status == ChangeRequestStatus.MERGED:
            return  # merged through lfops (recorded there), or re-read
        raw = self.repo.read(merge, cr.config_path) or b""
        try:
            merged_cfg, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(merge), cr.config_path)
        except ValidationFailed:  # recorded as it is: it is on main either way (and launches only by override)
            merged_cfg, dataset_version = TrainConfig.parse(raw, cr.config_path), cr.dataset_version
        merger = self._lfops_user(s, pr.merged_by) if pr.merged_by else None
        record_merge(
            s,
            cr.id,
            merge,
            merger.id if merger is not None else None,
            f"forge:{pr.merged_by}"[:64],
            merged_cfg,
            dataset_version,
            approvals.approver_lines(s, cr.id),
            source="forge",
            pull_request=pr.number,
            approved=counted,
        )

    # ---- helpers ------------------------------------------------------------------------------------------------

    def _number(self, cr_id: int) -> int:
        with self.store.session() as s:
            row = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr_id))
            if row is None:
                raise Conflict(f"change request #{cr_id} has no pull request yet; `lfops forge sync` opens it")
            return row.number

    def _changed_configs(self, head: str) -> list[str]:
        base = self.repo.git("merge-base", f"refs/remotes/origin/{self.repo.main}", head, check=False).strip()
        if not base:
            return []
        changed = self.repo.git("diff", "--name-only", "--no-renames", "--diff-filter=AM", base, head).split()
        return [p for p in changed if p.startswith("configs/") and p.endswith((".yaml", ".yml"))]

    def _close_quietly(self, number: int) -> None:
        try:
            self.forge.update_pull_request(number, state="closed")
        except LfopsError as exc:
            log.warning("could not close pull request #%s after a failed save: %s", number, exc)


def _cell(value: object) -> str:
    """A Markdown table cell: one line, pipes escaped, not endless."""
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= 200 else text[:199] + "…"
