"""Change requests: saving a config opens one; reviewers approve or request changes; an approved one is merged.

The policy lives here: only reviewers and admins decide and merge, nobody decides on their own change, and a merge
needs an approval that counts (given on the head commit, not by the author: backend/approvals.py) and a config that
validates in the merged tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import approvals, audit
from backend import config as cfgmod
from backend.auth import Actor, require
from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied, Problem, ValidationFailed
from backend.gitstore import GitStore, Identity, check_branch, check_name, trailers
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus, ReviewDecision
from backend.secret_scan import refuse_secrets
from backend.store import Store
from backend.store.models import ChangeRequest, Review, utcnow


@dataclass(frozen=True)
class SaveResult:
    change_request: int
    branch: str
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReviewView:
    reviewer: str
    decision: ReviewDecision
    comment: str
    head_commit: str
    at: datetime
    counts: bool = False  # an approval that counts for the request's head (backend.approvals)


@dataclass(frozen=True)
class ParamRow:
    key: str
    before: Any
    after: Any
    change: str  # changed | added | removed | unchanged


@dataclass(frozen=True)
class ChangeRequestView:
    id: int
    title: str
    description: str
    branch: str
    base_commit: str
    head_commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    author: str
    status: ChangeRequestStatus
    merged_commit: str | None
    merged_by: str | None
    created_at: datetime
    updated_at: datetime
    reviews: list[ReviewView]

    @property
    def approvers(self) -> list[str]:
        return sorted({r.reviewer for r in self.reviews if r.counts})


@dataclass(frozen=True)
class ChangeRequestDetail:
    request: ChangeRequestView
    yaml_diff: str
    params: list[ParamRow]
    baseline: str  # what `before` means: "main" or "LLaMA-Factory default"
    validation: list[str]
    yaml: str


def _view(cr: ChangeRequest) -> ChangeRequestView:
    return ChangeRequestView(
        id=cr.id,
        title=cr.title,
        description=cr.description,
        branch=cr.branch,
        base_commit=cr.base_commit,
        head_commit=cr.head_commit,
        config_path=cr.config_path,
        config_hash=cr.config_hash,
        dataset_version=cr.dataset_version,
        author=cr.author.name,
        status=ChangeRequestStatus(cr.status),
        merged_commit=cr.merged_commit,
        merged_by=cr.merged_by.name if cr.merged_by else None,
        created_at=cr.created_at,
        updated_at=cr.updated_at,
        reviews=[
            ReviewView(
                r.reviewer.name, ReviewDecision(r.decision), r.comment, r.head_commit, r.at, approvals.counts(r, cr)
            )
            for r in cr.reviews
        ],
    )


def param_table(before: dict[str, Any] | None, after: dict[str, Any]) -> tuple[list[ParamRow], str]:
    """Key-by-key comparison; against LLaMA-Factory's defaults when the config is new on main."""
    if before is None:
        specs = cfgmod.schema()
        rows = []
        for key, value in after.items():
            default = specs[key].default if key in specs else None
            rows.append(ParamRow(key, default, value, "unchanged" if default == value else "changed"))
        return rows, "LLaMA-Factory default"
    rows = []
    for key in list(before) + [k for k in after if k not in before]:
        if key not in after:
            rows.append(ParamRow(key, before[key], None, "removed"))
        elif key not in before:
            rows.append(ParamRow(key, None, after[key], "added"))
        else:
            change = "unchanged" if before[key] == after[key] else "changed"
            rows.append(ParamRow(key, before[key], after[key], change))
    return rows, "main"


class ChangeRequests:
    def __init__(self, store: Store, repo: GitStore) -> None:
        self.store = store
        self.repo = repo

    # ---- save ---------------------------------------------------------------------------------------------------

    def save(
        self,
        actor: Actor,
        config: TrainConfig | bytes | str,
        name: str,
        message: str,
        branch: str | None = None,
    ) -> SaveResult:
        """Validate, commit `configs/<name>.yaml` on a new branch from main, push it, and open a change request."""
        require(actor, "config.save")
        refuse_secrets({"message": message, "name": name, "branch": branch})  # the title is the message's first line
        check_name(name, "name")
        branch = check_branch(branch or f"{actor.name}/{name}")
        message = (message or "").strip()
        if not message:
            raise LfopsError("message: must not be empty")
        if isinstance(config, (bytes, str)):
            config = TrainConfig.parse(config, name)
        self.store.check()  # fail before anything reaches the remote
        base = self.repo.sync_main()
        report, dataset_version = config.validate(self.repo.files(base))
        if not report.ok:
            raise ValidationFailed(report.problems, name)
        path = f"configs/{name}.yaml"
        frozen = config.frozen()
        identity = Identity(actor.name, actor.email)
        title = message.splitlines()[0][:200]
        pushed: str | None = None
        try:
            with self.store.session() as s:
                if s.scalar(
                    select(ChangeRequest.id).where(
                        ChangeRequest.branch == branch, ChangeRequest.status.in_(UNDER_REVIEW)
                    )
                ):
                    raise Conflict(f"branch {branch!r} already has an open change request")
                cr = ChangeRequest(
                    title=title,
                    description=message,
                    branch=branch,
                    base_commit=base,
                    head_commit="0" * 40,
                    config_path=path,
                    config_hash=frozen.config_hash,
                    dataset_version=dataset_version,
                    author_id=actor.id,
                    status=ChangeRequestStatus.OPEN,
                )
                s.add(cr)
                s.flush()  # the id goes into the commit's trailers
                body = trailers(
                    Config_Hash=cr.config_hash,
                    Dataset_Version=dataset_version,
                    Base_Model=config.base_model,
                    Change_Request=str(cr.id),
                )
                commit = self.repo.commit_file(base, path, frozen.canonical_yaml, f"{message}\n\n{body}\n", identity)
                cr.head_commit = commit
                record_config(s, commit, path, config, dataset_version, cr.id, frozen.config_hash)
                audit.record(
                    s,
                    actor,
                    "config.save",
                    f"change_request:{cr.id}",
                    branch=branch,
                    commit=commit,
                    path=path,
                    config_hash=cr.config_hash,
                )
                self.repo.push(commit, branch, expect=None)
                pushed = commit
            cr_id = cr.id
        except BaseException:
            if pushed:  # the database refused after the push: take the branch back off the remote
                self.repo.delete_branch(branch, pushed)
            raise
        return SaveResult(
            cr_id, branch, commit, path, frozen.config_hash, dataset_version, [str(w) for w in report.warnings]
        )

    # ---- reading ------------------------------------------------------------------------------------------------

    def list(
        self,
        actor: Actor,
        status: str | None = None,
        author: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ChangeRequestView]:
        """Newest first; `limit`/`offset` pick a page (backend.paging), None: all of them."""
        require(actor, "read")
        wanted = ChangeRequestStatus.parse(status) if status else None
        from backend.store.models import User

        with self.store.session() as s:
            q = select(ChangeRequest).order_by(ChangeRequest.id.desc()).limit(limit).offset(offset)
            if wanted:
                q = q.where(ChangeRequest.status == wanted)
            if author:
                q = q.join(User, ChangeRequest.author_id == User.id).where(User.name == author)
            return [_view(cr) for cr in s.scalars(q)]

    def get(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        require(actor, "read")
        with self.store.session() as s:
            return _view(_get(s, cr_id))

    def show(self, actor: Actor, cr_id: int) -> ChangeRequestDetail:
        view = self.get(actor, cr_id)
        if view.status != ChangeRequestStatus.MERGED:
            main = self.repo.sync_main()
        else:
            main = f"{view.merged_commit}^1"
        head_yaml = self.repo.read(view.head_commit, view.config_path) or b""
        head_cfg = TrainConfig.parse(head_yaml, view.config_path)
        main_yaml = self.repo.read(main, view.config_path)
        before = TrainConfig.parse(main_yaml, view.config_path).normalised_args() if main_yaml else None
        rows, baseline = param_table(before, head_cfg.normalised_args())
        report, _ = head_cfg.validate(self.repo.files(view.head_commit))
        validation = [f"{p.severity}: {p}" for p in report.problems] or ["ok: the config validates"]
        return ChangeRequestDetail(
            request=view,
            yaml_diff=self.repo.diff(main, view.head_commit, view.config_path),
            params=rows,
            baseline=baseline,
            validation=validation,
            yaml=head_yaml.decode(),
        )

    # ---- decisions ----------------------------------------------------------------------------------------------

    def approve(self, actor: Actor, cr_id: int, comment: str = "") -> ChangeRequestView:
        return self._decide(actor, cr_id, ReviewDecision.APPROVED, comment)

    def request_changes(self, actor: Actor, cr_id: int, comment: str) -> ChangeRequestView:
        if not (comment or "").strip():
            raise LfopsError("comment: say what should change")
        return self._decide(actor, cr_id, ReviewDecision.CHANGES_REQUESTED, comment)

    def _decide(self, actor: Actor, cr_id: int, decision: ReviewDecision, comment: str) -> ChangeRequestView:
        require(actor, "review.decide")
        with self.store.session() as s:
            cr = _get(s, cr_id)
            if cr.author_id == actor.id:
                raise PermissionDenied(f"{actor.name} cannot review their own change request #{cr.id}")
            if cr.status not in UNDER_REVIEW:
                raise Conflict(f"change request #{cr.id} is {cr.status}; it can no longer be reviewed")
            s.add(
                Review(
                    change_request_id=cr.id,
                    reviewer_id=actor.id,
                    decision=decision,
                    comment=comment or "",
                    head_commit=cr.head_commit,
                )
            )
            cr.status = decision.status
            cr.updated_at = utcnow()
            audit.record(
                s, actor, f"review.{decision}", f"change_request:{cr.id}", head=cr.head_commit, comment=comment or ""
            )
            s.flush()
            s.refresh(cr)
            return _view(cr)

    def close(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        require(actor, "config.save")
        with self.store.session() as s:
            cr = _get(s, cr_id)
            if cr.author_id != actor.id and not actor.can("review.merge"):
                raise PermissionDenied(f"{actor.name} may not close someone else's change request")
            if cr.status not in UNDER_REVIEW:
                raise Conflict(f"change request #{cr.id} is already {cr.status}")
            cr.status = ChangeRequestStatus.CLOSED
            audit.record(s, actor, "review.close", f"change_request:{cr.id}")
            view = _view(cr)
        self.repo.delete_branch(view.branch, view.head_commit)
        return view

    # ---- merge --------------------------------------------------------------------------------------------------

    def merge(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        """Merge an approved change request into main with an `Approved-by:` trailer, push, and record it."""
        require(actor, "review.merge")
        view = self.get(actor, cr_id)
        if view.status != ChangeRequestStatus.APPROVED:
            raise Conflict(f"change request #{cr_id} is {view.status}, not approved; it cannot be merged")
        if not view.approvers:
            raise Conflict(f"change request #{cr_id} has no approval for its current head commit")
        self.store.check()
        with self.store.session() as s:
            approver_lines = approvals.approver_lines(s, cr_id)
        for _attempt in range(3):  # main may move between our read and our push: rebuild the merge then
            main = self.repo.sync_main()
            if self.repo.is_ancestor(view.head_commit, main):
                raise Conflict(f"change request #{cr_id}'s commit is already on {self.repo.main}")
            message = (
                f"Merge change request #{cr_id}: {view.title}\n\n"
                + trailers(
                    Change_Request=str(cr_id),
                    Config_Hash=view.config_hash,
                    Dataset_Version=view.dataset_version,
                    Approved_by=approver_lines,
                )
                + "\n"
            )
            merge = self.repo.merge_commit(main, view.head_commit, message, Identity(actor.name, actor.email))
            raw = self.repo.read(merge, view.config_path) or b""
            try:
                merged_cfg, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(merge), view.config_path)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    exc.problems + [Problem("merge", "refused: the merged config is invalid")], view.config_path
                ) from None
            try:
                self.repo.push(merge, self.repo.main, expect=main)
            except Conflict:
                continue
            try:
                with self.store.session() as s:
                    cr = _get(s, cr_id)
                    if cr.status != ChangeRequestStatus.APPROVED or cr.head_commit != view.head_commit:
                        raise Conflict(f"change request #{cr_id} changed while merging; nothing was merged")
                    cr.status, cr.merged_commit, cr.merged_by_id = ChangeRequestStatus.MERGED, merge, actor.id
                    cr.merged_at = utcnow()
                    record_config(s, merge, view.config_path, merged_cfg, dataset_version, cr_id)
                    audit.record(
                        s,
                        actor,
                        "review.merge",
                        f"change_request:{cr_id}",
                        merge_commit=merge,
                        approvers=approver_lines,
                    )
                    s.flush()
                    s.refresh(cr)
                    result = _view(cr)
            except BaseException:
                self.repo.push(main, self.repo.main, expect=merge)  # put main back as it was
                raise
            try:
                self.repo.delete_branch(view.branch, view.head_commit)
            except LfopsError:
                pass  # a leftover merged branch is harmless; the merge itself is done
            return result
        raise Conflict(f"{self.repo.main} kept moving while merging change request #{cr_id}; try again")


def _get(s: Session, cr_id: int) -> ChangeRequest:
    cr = s.get(ChangeRequest, cr_id)
    if cr is None:
        raise NotFound(f"change request #{cr_id} does not exist")
    return cr
