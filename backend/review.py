"""Change requests: saving a config opens one; reviewers approve or request changes; an approved one is merged.

The policy lives here: only reviewers and admins decide and merge, nobody decides on their own change, and a merge
needs an approval that counts (given on the head commit, not by the author: backend/approvals.py) and a config that
validates in the merged tree.

A request under review is revised by its author (`update`): a new commit on its branch, the same request, the review
history kept; the new head needs a new approval (approvals bind to a head) and the request is open again.

Git is the truth. Save, update, merge and close are sequences of steps (`SAVE_STEPS`, `UPDATE_STEPS`, `MERGE_STEPS`,
`CLOSE_STEPS`, each a
crash point: backend.failpoints) ordered so that a crash between any two leaves a state that the reconcile
(backend.change_request_repair) completes, and so that the operation's own last steps are idempotent with
the reconcile's completion of them (either may finish first). No database transaction is open across a push.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend import approvals, audit, provenance
from backend import config as cfgmod
from backend.auth import Actor, require
from backend.change_request_records import open_saved, record_merge, record_update
from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied, Problem, ValidationFailed
from backend.failpoints import crash_point
from backend.gitstore import BranchExists, GitStore, Identity, LostRace
from backend.names import check_branch, check_id, check_name
from backend.preflight import Preflight
from backend.preflight import Report as PreflightReport
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus, ReviewDecision
from backend.secret_scan import refuse_secrets
from backend.store import Store
from backend.store.models import ChangeRequest, Config, PullRequest, Review, utcnow

log = logging.getLogger(__name__)

# The step boundaries of each operation, in order: where the crash-injection test and bench kill it.
SAVE_STEPS = ("save.reserved", "save.pushed", "save.opened")
UPDATE_STEPS = ("update.built", "update.pushed", "update.recorded")
MERGE_STEPS = ("merge.built", "merge.pushed", "merge.recorded")
CLOSE_STEPS = ("close.recorded",)
# A merge that keeps losing the race for main gives up after this many tries (jittered, growing pauses between).
MERGE_ATTEMPTS = 12
log = logging.getLogger("lfops.review")


@dataclass(frozen=True)
class SaveResult:
    change_request: int
    branch: str
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    warnings: list[str] = field(default_factory=list)
    preflight: list[str] = field(default_factory=list)  # a note, not a refusal: which launch targets can run it


@dataclass(frozen=True)
class ConfigSource:
    """A config a form can be filled from: on main, or a change request's head."""

    label: str
    key: str  # "main:<path>" or "cr:<id>"
    path: str
    commit: str
    change_request: int | None


@dataclass(frozen=True)
class ReviewView:
    reviewer: str  # the lfops user; a forge login that maps to none shows as "login (forge)"
    decision: ReviewDecision
    comment: str
    head_commit: str
    at: datetime
    counts: bool = False  # an approval that counts for the request's head (backend.approvals)
    source: str = "lfops"  # lfops | forge


@dataclass(frozen=True)
class PullRequestView:
    change_request: int
    forge: str
    number: int
    url: str
    state: str  # open | closed | merged
    head_commit: str
    merge_commit: str | None
    merged_by: str
    approved_at_merge: bool | None
    validated_commit: str

    @property
    def label(self) -> str:
        """The forge state in words, e.g. "merged without an approval that counts"."""
        if self.state == "merged" and self.approved_at_merge is False:
            return "merged on the forge without an approval that counts (launch needs an override)"
        return self.state


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
    pull_request: PullRequestView | None = None  # with a forge (backend.forge_sync)

    @property
    def approvers(self) -> list[str]:
        return sorted({r.reviewer for r in self.reviews if r.counts})


@dataclass(frozen=True)
class ChangeRequestDetail:
    request: ChangeRequestView
    yaml_diff: str
    params: list[ParamRow]
    baseline: str  # what `before` means: "main", "<path> at <commit>" (derived from) or "LLaMA-Factory default"
    validation: list[str]
    yaml: str
    preflight: list[str] = field(default_factory=list)  # which launch targets can run the head's config
    # A revised request: the head its last review was given on (None: reviewed on this head, or not yet), and what
    # changed since then (diff and table).
    last_reviewed_commit: str | None = None
    review_diff: str = ""
    review_params: list[ParamRow] = field(default_factory=list)
    derived_from: str = ""  # "path at commit" when the baseline is the config it was opened from


def pull_request_view(row: PullRequest) -> PullRequestView:
    """A pull request row as the CLI, the WebUI and the API show it."""
    return PullRequestView(
        row.change_request_id,
        row.forge,
        row.number,
        row.url,
        row.state,
        row.head_commit,
        row.merge_commit,
        row.merged_by,
        row.approved_at_merge,
        row.validated_commit,
    )


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
                r.reviewer.name if r.reviewer else f"{r.forge_login} (forge)",
                ReviewDecision(r.decision),
                r.comment,
                r.head_commit,
                r.at,
                approvals.counts(r, cr),
                r.source,
            )
            for r in cr.reviews
        ],
        pull_request=pull_request_view(cr.pull_request) if cr.pull_request is not None else None,
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


class PullRequestHooks(Protocol):
    """What review asks of a forge (backend.forge_sync.ForgeSync implements it; None: lfops' own requests only)."""

    def publish(self, cr_id: int) -> object:
        """Open or update the request's pull request and post its validation status; after any push to its branch."""

    def merge(self, cr_id: int, head: str, message: str) -> str:
        """Merge the pull request on the forge at `head`; the merge commit, in the mirror."""

    def close(self, cr_id: int) -> None: ...

    def comment(self, cr_id: int, text: str) -> None: ...


class ChangeRequests:
    def __init__(
        self,
        store: Store,
        repo: GitStore,
        preflight: Preflight | None = None,
        on_merged: Callable[[ChangeRequestView, Actor], None] | None = None,
        forge: PullRequestHooks | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.preflight = preflight  # the launch targets a saved or reviewed config is checked against (a note)
        # called once a merge is recorded, with who merged (backend.retrain: launch on merge, the dataset check);
        # never before main holds the merge, and its failures never undo it
        self.on_merged = on_merged or (lambda _view, _actor: None)
        self.forge = forge

    # ---- save ---------------------------------------------------------------------------------------------------

    def save(
        self,
        actor: Actor,
        config: TrainConfig | bytes | str,
        name: str,
        message: str,
        branch: str | None = None,
    ) -> SaveResult:
        """Validate, commit `configs/<name>.yaml` on a new branch from main, push it, and open a change request.

        Steps (SAVE_STEPS), none holding a database transaction across the push:
        1. reserve: a hidden `saving` row (its id goes into the commit's trailers), the commit (written locally)
           and its config row, in one short transaction;
        2. push the branch, only if origin does not have it yet;
        3. open: `saving` -> `open`, with the audit event.
        A crash after 1 leaves a hidden row the reconcile drops once stale; after 2, a branch whose row the reconcile
        (or this save retried) opens. A refused push undoes step 1. The same save again returns what it opened.
        """
        require(actor, "config.save")
        refuse_secrets({"message": message, "name": name, "branch": branch})  # the title is the message's first line
        check_name(name, "name")
        branch = check_branch(branch or f"{actor.name}/{name}", main=self.repo.main)
        message = provenance.check_user_text((message or "").strip(), "message")
        if not message:
            raise LfopsError("message: must not be empty", field="message")
        if isinstance(config, (bytes, str)):
            config = TrainConfig.parse(config, name)
        self.store.check()  # fail before anything reaches the remote
        base = self.repo.sync_main()
        report, dataset_version = config.validate(self.repo.files(base))
        if not report.ok:
            raise ValidationFailed(report.problems, name)
        path = f"configs/{name}.yaml"
        frozen = config.frozen()
        warnings = [str(w) for w in report.warnings]
        notes = self._preflight_notes(config, self.repo.files(base))
        reserved = self._reserve(
            actor, config, frozen.config_hash, frozen.canonical_yaml, branch, path, base, message, dataset_version
        )
        if isinstance(reserved, SaveResult):
            return replace(reserved, warnings=warnings, preflight=notes)
        cr_id, commit = reserved
        crash_point("save.reserved")
        try:
            owner = self._push_new_branch(commit, branch)
        except BaseException:
            self._unreserve(cr_id, commit)
            raise
        if owner is not None:  # the branch holds an interrupted save, now recovered
            self._unreserve(cr_id, commit)
            same = self._same_save(actor, owner, branch, path, frozen.config_hash)
            return replace(same, warnings=warnings, preflight=notes)
        crash_point("save.pushed")
        if self.forge is not None:
            self._publish_or_undo(cr_id, commit, branch)
        with self.store.session() as s:
            if not open_saved(s, cr_id, commit, actor.name):
                cr = s.get(ChangeRequest, cr_id)
                if cr is None or cr.head_commit != commit or cr.status == ChangeRequestStatus.SAVING:
                    raise Conflict(
                        f"change request #{cr_id} was dropped while its push was slow; the next reconcile "
                        f"(`lfops doctor --repair`) adopts its branch {branch!r}"
                    )
        crash_point("save.opened")
        return SaveResult(cr_id, branch, commit, path, frozen.config_hash, dataset_version, warnings, notes)

    def preflight_request(self, actor: Actor, cr_id: int, profile: str | None = None) -> PreflightReport:
        """Which launch targets (or `profile` alone) can run the config at the request's head, and why not: what
        `lfops preflight` says of that file."""
        view = self.get(actor, cr_id)
        if not self.repo.has_commit(view.head_commit):
            self.repo.fetch()
        raw = self.repo.read(view.head_commit, view.config_path) or b""
        config = TrainConfig.parse(raw, view.config_path)
        return self._preflight_report(config, view.config_path, view.head_commit, profile)

    def preflight_config(self, actor: Actor, config_yaml: str, profile: str | None = None) -> PreflightReport:
        """The same for a config not saved yet, its files (dataset_info, DeepSpeed) read at main."""
        require(actor, "read")
        config = TrainConfig.parse(config_yaml, "yaml")
        return self._preflight_report(config, "yaml", self.repo.sync_main(), profile)

    def _preflight_report(self, config: TrainConfig, source: str, commit: str, profile: str | None) -> PreflightReport:
        if self.preflight is None:
            raise LfopsError("preflight: this workspace has no launch targets to check against")
        files = self.repo.files(commit)
        errors = [p for p in config.check_args(files) if p.severity == "error"]
        if errors:
            raise ValidationFailed(errors, source)
        return self.preflight.report(config, files, profile)

    def _preflight_notes(self, config: TrainConfig, files: cfgmod.Files) -> list[str]:
        """Which launch targets can run `config` as it is: said at save and in review, never a refusal (the config is
        host-neutral; the launch checks its own target)."""
        if self.preflight is None:
            return []
        try:
            return self.preflight.notes(config, files)
        except Exception as exc:  # noqa: BLE001 - a note that cannot be made must not stop a save or a review
            log.warning("preflight note failed: %s", exc, exc_info=exc)
            return ["preflight: could not be computed (see the server log)"]

    def _reserve(
        self,
        actor: Actor,
        config: TrainConfig,
        config_hash: str,
        canonical_yaml: str,
        branch: str,
        path: str,
        base: str,
        message: str,
        dataset_version: str,
    ) -> SaveResult | tuple[int, str]:
        """Step 1 of a save; or what the same save (same author, branch, config) opened before."""
        with self.store.session() as s:
            taken = s.scalars(
                select(ChangeRequest).where(ChangeRequest.branch == branch, ChangeRequest.status.in_(UNDER_REVIEW))
            ).first()
            if taken is not None:
                if (taken.author_id, taken.config_path, taken.config_hash) == (actor.id, path, config_hash):
                    return _result(taken)  # e.g. retried after a crash that came after the save was complete
                raise Conflict(f"branch {branch!r} already has an open change request (#{taken.id})")
            cr = ChangeRequest(
                title=message.splitlines()[0][:200],
                description=message,
                branch=branch,
                base_commit=base,
                head_commit=_NO_COMMIT,
                config_path=path,
                config_hash=config_hash,
                dataset_version=dataset_version,
                author_id=actor.id,
                status=ChangeRequestStatus.SAVING,
            )
            s.add(cr)
            s.flush()  # the id goes into the commit's trailers
            text = provenance.commit_message(
                message,
                Config_Hash=config_hash,
                Dataset_Version=dataset_version,
                Base_Model=config.base_model,
                Change_Request=str(cr.id),
                Config_Path=path,
                Saved_by=f"{actor.name} <{actor.email}>",
            )
            commit = self.repo.commit_file(base, path, canonical_yaml, text, Identity(actor.name, actor.email))
            cr.head_commit = commit
            record_config(s, commit, path, config, dataset_version, cr.id, config_hash)
            return cr.id, commit

    def _publish_or_undo(self, cr_id: int, commit: str, branch: str) -> None:
        """With a forge, a save is complete once its pull request is open: a forge that refuses or is down undoes the
        push and the reservation, so no branch is left without its change request, nor the reverse."""
        assert self.forge is not None
        try:
            self.forge.publish(cr_id)
        except BaseException as exc:
            try:
                self.repo.delete_branch(branch, commit)
            except LfopsError:
                pass  # the reconcile adopts or removes it
            self._unreserve(cr_id, commit)
            if isinstance(exc, LfopsError):
                raise type(exc)(f"{exc}; nothing was saved", field=exc.field) from None
            raise

    def _unreserve(self, cr_id: int, commit: str) -> None:
        """Undo step 1 after a refused push. Should the push have landed after all (an answer lost on the way), the
        branch's trailers let the reconcile adopt it back; should this fail, the reconcile drops the stale row."""
        try:
            with self.store.session() as s:
                s.execute(delete(PullRequest).where(PullRequest.change_request_id == cr_id))
                s.execute(delete(Config).where(Config.change_request_id == cr_id, Config.commit == commit))
                s.execute(
                    delete(ChangeRequest).where(
                        ChangeRequest.id == cr_id, ChangeRequest.status == ChangeRequestStatus.SAVING
                    )
                )
        except LfopsError:
            pass

    def _push_new_branch(self, commit: str, branch: str) -> int | None:
        """Save step 2: push; None once pushed. A branch already there gets the reconcile's rule for it first: an
        interrupted save on it is completed (its id returned), a leftover of a closed or merged request is removed
        (and the push tried again); a foreign branch stays, and BranchExists is raised."""
        try:
            self.repo.push(commit, branch, expect=None)
            return None
        except BranchExists:
            from backend.change_request_repair import Reconciler  # it completes interrupted saves and merges

            owner = Reconciler(self.store, self.repo).settle_branch(branch)
            if owner is not None:
                return owner
            if self.repo.remote_head(branch) is not None:
                raise
        self.repo.push(commit, branch, expect=None)
        return None

    def _same_save(self, actor: Actor, owner: int, branch: str, path: str, config_hash: str) -> SaveResult:
        """The request an interrupted save on `branch` opened: this save's result if it is the same save."""
        with self.store.session() as s:
            cr = s.get(ChangeRequest, owner)
            if cr is not None and (cr.author_id, cr.config_path, cr.config_hash) == (actor.id, path, config_hash):
                return _result(cr)
        raise Conflict(
            f"branch {branch!r} already has change request #{owner} (an interrupted save, now recovered); "
            "choose another name"
        )

    # ---- update -------------------------------------------------------------------------------------------------

    def update(self, actor: Actor, cr_id: int, config: TrainConfig | bytes | str, message: str) -> SaveResult:
        """A new revision of change request `cr_id`: the config committed on top of its head, on its branch.

        Only its author may, and only while it is under review (open, changes requested or approved). The request
        keeps its number and its review history; it is open again, and the approvals given on the old head no longer
        count. Steps (UPDATE_STEPS), no database transaction across the push:
        1. build the commit locally (its trailers name the request), nothing recorded;
        2. push it to the branch, only if the branch is still at the head the database has;
        3. record: head -> the new commit, status open, audited.
        A crash after 2 leaves a branch one lfops commit ahead of its request: the reconcile (or this update retried)
        records it (backend.change_request_repair). The same update again returns what it recorded.
        """
        require(actor, "config.save")
        refuse_secrets({"message": message})
        message = provenance.check_user_text((message or "").strip(), "message")
        if not message:
            raise LfopsError("message: say what this revision changes", field="message")
        with self.store.session() as s:
            cr = _get(s, cr_id)
            if cr.author_id != actor.id:
                raise PermissionDenied(
                    f"only {cr.author.name}, its author, can update change request #{cr.id} "
                    "(save your own change as a new change request)"
                )
            status = ChangeRequestStatus(cr.status)
            if not status.under_review:
                raise Conflict(f"change request #{cr.id} is {status.label}; it can no longer be updated")
            head, path, branch = cr.head_commit, cr.config_path, cr.branch
        if isinstance(config, (bytes, str)):
            config = TrainConfig.parse(config, path)
        if not self.repo.has_commit(head):
            self.repo.fetch()
        config = _keep_derivation(config, self.repo.read(head, path), path)
        self.store.check()
        if not self.repo.has_commit(head):
            self.repo.fetch()
        report, dataset_version = config.validate(self.repo.files(head))  # the tree the new commit carries
        if not report.ok:
            raise ValidationFailed(report.problems, path)
        frozen = config.frozen()
        warnings = [str(w) for w in report.warnings]
        if (self.repo.read(head, path) or b"").decode() == frozen.canonical_yaml:
            with self.store.session() as s:  # e.g. retried after a crash that came after the update was recorded
                return replace(
                    _result(_get(s, cr_id)), warnings=[*warnings, "the head already has exactly this config"]
                )
        text = provenance.commit_message(
            message,
            Config_Hash=frozen.config_hash,
            Dataset_Version=dataset_version,
            Base_Model=config.base_model,
            Change_Request=str(cr_id),
            Config_Path=path,
            Saved_by=f"{actor.name} <{actor.email}>",
        )
        commit = self.repo.commit_file(head, path, frozen.canonical_yaml, text, Identity(actor.name, actor.email))
        crash_point("update.built")
        try:
            self.repo.push(commit, branch, expect=head)
        except LostRace:
            from backend.change_request_repair import Reconciler  # it completes interrupted updates

            Reconciler(self.store, self.repo).settle_update(cr_id)
            with self.store.session() as s:
                now = _get(s, cr_id)
                if now.head_commit != head and now.config_hash == frozen.config_hash:
                    return replace(_result(now), warnings=warnings)  # an interrupted try of this same update
            raise Conflict(
                f"change request #{cr_id} changed while this update was prepared; open its head again and redo "
                "the change"
            ) from None
        crash_point("update.pushed")
        with self.store.session() as s:
            recorded = record_update(s, cr_id, head, commit, config, frozen.config_hash, dataset_version, actor.name)
            now = _get(s, cr_id)
            final = not ChangeRequestStatus(now.status).under_review
        if not recorded and now.head_commit != commit:
            if final:  # merged or closed while this update was pushed: the pushed commit is not part of it
                try:
                    self.repo.delete_branch(branch, commit)
                except LfopsError:
                    pass  # the reconcile deletes a decided request's leftover revision
            raise Conflict(
                f"change request #{cr_id} was {now.status} while this update was pushed; the update is not part of it"
            )
        crash_point("update.recorded")
        self._pushed(cr_id)
        return SaveResult(cr_id, branch, commit, path, frozen.config_hash, dataset_version, warnings)

    def _pushed(self, cr_id: int) -> None:
        """After a change request's branch got a new head and the database records it (save or update).

        With a forge the pull request follows the branch by itself; publishing again refreshes its body (the table)
        and posts the validation status on the new head. A forge that is down then leaves that to the reconcile:
        the revision itself is recorded and stands."""
        if self.forge is None:
            return
        try:
            self.forge.publish(cr_id)
        except LfopsError as exc:
            log.warning("pull request of change request #%s not refreshed (the reconcile retries): %s", cr_id, exc)

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
            q = q.where(ChangeRequest.status != ChangeRequestStatus.SAVING)  # a save not yet confirmed is not one
            if wanted:
                q = q.where(ChangeRequest.status == wanted)
            if author:
                q = q.join(User, ChangeRequest.author_id == User.id).where(User.name == author)
            return [_view(cr) for cr in s.scalars(q)]

    def get(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        require(actor, "read")
        with self.store.session() as s:
            return _view(_get(s, cr_id))

    def show(self, actor: Actor, cr_id: int, against_defaults: bool = False) -> ChangeRequestDetail:
        """The request with its diff and hyperparameter table against its baseline: main's version of the file; for a
        file new on main, the config it was derived from (its `lfops:` block names it), else LLaMA-Factory's defaults
        (also on request: `against_defaults`). A revised request also shows what changed since its last review."""
        view = self.get(actor, cr_id)
        if view.status != ChangeRequestStatus.MERGED:
            main = self.repo.sync_main()
        else:
            main = f"{view.merged_commit}^1"
        if not self.repo.has_commit(view.head_commit):
            self.repo.fetch()
        head_yaml = self.repo.read(view.head_commit, view.config_path) or b""
        head_cfg = TrainConfig.parse(head_yaml, view.config_path)
        after = head_cfg.normalised_args()
        base = self._baseline(view, head_cfg, main)
        if against_defaults or base is None:
            rows, baseline = param_table(None, after)
            diff = self.repo.diff(main, view.head_commit, view.config_path)
        else:
            label, commit, path, before_yaml = base
            rows, _ = param_table(TrainConfig.parse(before_yaml, path).normalised_args(), after)
            baseline = label
            diff = (
                self.repo.diff(main, view.head_commit, view.config_path)
                if path == view.config_path and commit == main
                else self.repo.diff_files(commit, path, view.head_commit, view.config_path)
            )
        report, _ = head_cfg.validate(self.repo.files(view.head_commit))
        validation = [f"{p.severity}: {p}" for p in report.problems] or ["ok: the config validates"]
        notes = self._preflight_notes(head_cfg, self.repo.files(view.head_commit)) if report.ok else []
        reviewed = next((r.head_commit for r in reversed(view.reviews)), None)
        since_review: list[ParamRow] = []
        review_diff = ""
        if reviewed and reviewed != view.head_commit and self.repo.has_commit(reviewed):
            then = self.repo.read(reviewed, view.config_path)
            if then is not None:
                since_review, _ = param_table(TrainConfig.parse(then, view.config_path).normalised_args(), after)
                review_diff = self.repo.diff(reviewed, view.head_commit, view.config_path)
        return ChangeRequestDetail(
            request=view,
            yaml_diff=diff,
            params=rows,
            baseline=baseline,
            validation=validation,
            yaml=head_yaml.decode(),
            preflight=notes,
            last_reviewed_commit=reviewed if reviewed != view.head_commit else None,
            review_diff=review_diff,
            review_params=since_review,
            derived_from=base[0] if base and base[0] != "main" else "",
        )

    def _baseline(
        self, view: ChangeRequestView, head_cfg: TrainConfig, main: str
    ) -> tuple[str, str, str, bytes] | None:
        """(label, commit, path, YAML) of what the request's config is compared with; None: LLaMA-Factory's defaults."""
        on_main = self.repo.read(main, view.config_path)
        if on_main is not None:
            return "main", main, view.config_path, on_main
        path = head_cfg.metadata.get(DERIVED_FROM)
        commit = str(head_cfg.metadata.get(DERIVED_FROM_COMMIT) or "")
        if not isinstance(path, str) or not path or not _SHA.fullmatch(commit):
            return None
        if not self.repo.has_commit(commit):
            self.repo.fetch()
        raw = self.repo.read(commit, path) if self.repo.has_commit(commit) else None
        return (f"{path} at {commit[:10]}", commit, path, raw) if raw is not None else None

    # ---- configs to start from ----------------------------------------------------------------------------------

    def openable(self, actor: Actor) -> list[ConfigSource]:
        """The configs a form can be filled from: every config on main, and the head of every request under review."""
        require(actor, "read")
        main = self.repo.sync_main()
        files = self.repo.files(main)
        sources = [
            ConfigSource(f"main: {path}", f"main:{path}", path, main, None)
            for path in sorted(files.list_files("configs"))
            if path.endswith((".yaml", ".yml"))
        ]
        for view in self.list(actor):
            if view.status.under_review:
                label = f"#{view.id} {view.config_path} ({view.status.label}, by {view.author}): {view.title}"
                sources.append(ConfigSource(label, f"cr:{view.id}", view.config_path, view.head_commit, view.id))
        return sources

    def open_config(self, actor: Actor, key: str) -> tuple[ConfigSource, TrainConfig]:
        """One of `openable`'s configs, by its key ("main:<path>" or "cr:<id>"), parsed."""
        require(actor, "read")
        kind, _, rest = (key or "").partition(":")
        if kind == "cr" and rest.isdigit():
            view = self.get(actor, int(rest))
            source = ConfigSource(f"#{view.id} {view.config_path}", key, view.config_path, view.head_commit, view.id)
            if not self.repo.has_commit(view.head_commit):
                self.repo.fetch()
        elif kind == "main" and rest:
            main = self.repo.sync_main()
            source = ConfigSource(f"main: {rest}", key, rest, main, None)
        else:
            raise LfopsError(f"config to open: {key!r} is not one of the repository's configs", field="config to open")
        raw = self.repo.read(source.commit, source.path)
        if raw is None:
            raise NotFound(f"config to open: {source.path} is not on {self.repo.main} (any more)")
        return source, TrainConfig.parse(raw, source.path)

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
            view = _view(cr)
        if self.forge is not None:  # the decision that counts on the forge is the reviewer's own review there
            try:
                self.forge.comment(
                    cr_id, f"{actor.name} {decision.label} this in lfops on {view.head_commit[:12]}: {comment or ''}"
                )
            except LfopsError as exc:
                log.warning("change request #%s: the pull request comment failed: %s", cr_id, exc)
        return view

    def close(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        """Mark the request closed, then delete its branch (CLOSE_STEPS: a crash between leaves a closed request's
        branch, which the reconcile deletes)."""
        require(actor, "config.save")
        with self.store.session() as s:
            _check_closable(actor, _get(s, cr_id))
        if self.forge is not None:
            self.forge.close(cr_id)  # first: a forge that is down leaves both open
        with self.store.session() as s:
            cr = _get(s, cr_id)
            _check_closable(actor, cr)
            cr.status = ChangeRequestStatus.CLOSED
            cr.updated_at = utcnow()
            audit.record(s, actor, "review.close", f"change_request:{cr.id}")
            view = _view(cr)
        crash_point("close.recorded")
        self.repo.delete_branch(view.branch, view.head_commit)
        return view

    # ---- merge --------------------------------------------------------------------------------------------------

    def merge(self, actor: Actor, cr_id: int) -> ChangeRequestView:
        """Merge an approved change request into main with `Approved-by:` trailers, push, record it, drop its branch.

        Git first (MERGE_STEPS): once main holds the merge, the request is merged whatever happens next; recording
        it is idempotent and is what the reconcile does for a merge that stopped after its push (the merge commit's
        `Change-Request:` trailer names the request), so merging it again after such a crash records it too.
        A lost race for main (it moved, or another push held its ref lock) rebuilds and revalidates the merge on the
        new main, up to MERGE_ATTEMPTS times with jittered, growing pauses; every merge's first parent is the main
        it replaces, so main stays linear.
        """
        require(actor, "review.merge")
        view = self.get(actor, cr_id)
        if view.status != ChangeRequestStatus.APPROVED:
            raise Conflict(f"change request #{cr_id} is {view.status}, not approved; it cannot be merged")
        if not view.approvers:
            raise Conflict(f"change request #{cr_id} has no approval for its current head commit")
        self.store.check()
        if self.forge is None:  # with a forge the head may be a commit pushed by hand (validated like any other)
            self._check_head_claims(cr_id, view.head_commit)
        with self.store.session() as s:
            approver_lines = approvals.approver_lines(s, cr_id)
        for attempt in range(MERGE_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))  # jitter: racing merges spread out
            main = self.repo.sync_main()
            if self.repo.is_ancestor(view.head_commit, main):
                from backend.change_request_repair import Reconciler  # it completes interrupted saves and merges

                if Reconciler(self.store, self.repo).settle_merged(cr_id):  # an earlier merge of it that stopped
                    self._drop_merged_branch(view)
                    return self.get(actor, cr_id)
                raise Conflict(f"change request #{cr_id}'s commit is already on {self.repo.main}")
            message = provenance.commit_message(
                f"Merge change request #{cr_id}: {view.title}",
                Change_Request=str(cr_id),
                Config_Hash=view.config_hash,
                Dataset_Version=view.dataset_version,
                Merged_by=f"{actor.name} <{actor.email}>",
                Approved_by=approver_lines,
            )
            merge = self.repo.merge_commit(main, view.head_commit, message, Identity(actor.name, actor.email))
            raw = self.repo.read(merge, view.config_path) or b""
            try:
                merged_cfg, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(merge), view.config_path)
            except ValidationFailed as exc:
                raise ValidationFailed(
                    exc.problems + [Problem("merge", "refused: the merged config is invalid")], view.config_path
                ) from None
            crash_point("merge.built")
            if self.forge is not None:  # the forge merges: its protection rules and its main decide
                merge = self.forge.merge(cr_id, view.head_commit, message)
                merged_cfg, dataset_version = self._merged_config(merge, view.config_path, view.dataset_version)
            else:
                try:
                    self.repo.push(merge, self.repo.main, expect=main)
                except LostRace:
                    continue
            crash_point("merge.pushed")
            with self.store.session() as s:
                record_merge(s, cr_id, merge, actor.id, actor.name, merged_cfg, dataset_version, approver_lines)
                result = _view(_get(s, cr_id))
            crash_point("merge.recorded")
            self._drop_merged_branch(view)
            self._merged_hook(result, actor)
            return result
        raise Conflict(f"{self.repo.main} kept moving while merging change request #{cr_id}; try again")

    def _merged_hook(self, view: ChangeRequestView, actor: Actor) -> None:
        try:
            self.on_merged(view, actor)
        except Exception:  # noqa: BLE001 - the merge stands whatever its followers make of it
            logging.getLogger(__name__).exception("after the merge of change request #%s", view.id)

    def _merged_config(self, merge: str, path: str, dataset_version: str) -> tuple[TrainConfig, str]:
        raw = self.repo.read(merge, path) or b""
        try:
            return cfgmod.parse_and_validate(raw, self.repo.files(merge), path)
        except ValidationFailed:  # on main either way: recorded as it is
            return TrainConfig.parse(raw, path), dataset_version

    def _drop_merged_branch(self, view: ChangeRequestView) -> None:
        try:
            self.repo.delete_branch(view.branch, view.head_commit)
        except LfopsError:
            pass  # a leftover merged branch is harmless; the reconcile deletes it

    def _check_head_claims(self, cr_id: int, head: str) -> None:
        """What is merged is the head the database approved; its trailers must say the same (never trusted alone)."""
        if not self.repo.has_commit(head):
            self.repo.fetch()
        entry = self.repo.log(head, limit=1)[0]
        with self.store.session() as s:
            problems = provenance.head_mismatches(_get(s, cr_id), entry["commit"], entry["trailers"])
        if problems:
            raise Conflict(
                f"change request #{cr_id}: its commit's trailers do not match the database ({problems[0]}); not merged"
            )


DERIVED_FROM = "derived_from"  # the `lfops:` keys naming the config a new one was opened from (path, commit)
DERIVED_FROM_COMMIT = "derived_from_commit"


def _keep_derivation(config: TrainConfig, head_yaml: bytes | None, path: str) -> TrainConfig:
    """A revision keeps what its request's config was derived from: opened from the request's own head, the form
    would otherwise name the request's own file as its base."""
    if config.metadata.get(DERIVED_FROM) not in (None, path):
        return config
    metadata = {k: v for k, v in config.metadata.items() if k not in (DERIVED_FROM, DERIVED_FROM_COMMIT)}
    if head_yaml:
        before = TrainConfig.parse(head_yaml, path).metadata
        metadata.update({k: before[k] for k in (DERIVED_FROM, DERIVED_FROM_COMMIT) if k in before})
    return replace(config, metadata=metadata)


_SHA = re.compile(r"[0-9a-f]{40}")
_NO_COMMIT = "0" * 40  # a reserved row's head until its commit is written, in the same transaction


def _result(cr: ChangeRequest) -> SaveResult:
    return SaveResult(cr.id, cr.branch, cr.head_commit, cr.config_path, cr.config_hash, cr.dataset_version)


def _check_closable(actor: Actor, cr: ChangeRequest) -> None:
    if cr.author_id != actor.id and not actor.can("review.merge"):
        raise PermissionDenied(f"{actor.name} may not close someone else's change request")
    if cr.status not in UNDER_REVIEW:
        raise Conflict(f"change request #{cr.id} is already {cr.status}")


def _get(s: Session, cr_id: int) -> ChangeRequest:
    """A change request a user may see; ids out of range and unconfirmed saves are "does not exist"."""
    cr = s.get(ChangeRequest, check_id(cr_id))
    if cr is None or cr.status == ChangeRequestStatus.SAVING:
        raise NotFound(f"change request #{cr_id} does not exist")
    return cr
