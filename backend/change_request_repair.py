"""Change requests against Git, which is the truth.

Invariants (a finding names the one it breaks):
- branch-without-change-request: every branch on origin but main is the branch of a change request under review,
  at that request's head;
- change-request-without-branch: every change request under review has its branch on origin;
- status-differs-from-git: a change request whose head an lfops merge brought into main (the merge commit's
  `Change-Request:` trailer names it, its second parent is the head, its `Approved-by:` trailers are approvals that
  count) is `merged` as that merge; a `merged` one's merge is on main;
- save-interrupted: no hidden `saving` row (a save that reserved its id and never confirmed its push) outlives
  `stale_after`;
- branch-differs-from-change-request: a request's branch points at its head (someone pushed to it outside lfops).

Repairs, and why:
- A branch whose head is an lfops save is ADOPTED: its `saving` row is opened; when the database has no row for the
  number its `Change-Request:` trailer names (restored from a backup; or the row was dropped while an answer from
  origin was lost), the row is re-created under that number from the trailers, after checking them against the
  commit (the config file is the commit's only change, its hash is the claimed one, it validates, the parent was on
  main, the saver exists and may save). Adopting keeps what the user asked for under the number its commit already
  carries, and makes the same save retried succeed instead of failing on "branch already exists" forever; removing
  it would throw away a validated change whose author was told about it (or was about to be).
- A request's branch one commit ahead of its head, where that commit is an lfops update of it (its trailers name the
  request, its parent is the head, it changes only the request's file, validates, hashes as claimed, and its saver is
  the author), is an update that stopped after its push: it is RECORDED as the request's new head (open again).
- A branch left behind by a closed or merged request (close or merge stopped before deleting it) is REMOVED, only
  while it still points at that request's head, or at an lfops update of that head that raced the decision: the
  decision about it was taken already.
- Any other branch (no lfops trailers, or trailers the database or the commit contradict) is reported and LEFT
  ALONE: it is not lfops' to delete. Save it through lfops, or delete it by hand.
- A request Git shows merged is marked merged (a crashed merge, or a close that raced a merge); one whose branch is
  gone (and whose head is not on main) is CLOSED: there is nothing left to review or merge. A head on main without
  an lfops merge naming it, or a merge whose trailers do not check out, is reported, not trusted.
- A stale `saving` row whose branch never appeared is deleted with its config row: that save failed, its user got an
  error or a crash, and saving again works.

The database is read before Git, so anything a concurrent operation finished before the read is visible in Git too;
every repair is a conditional update that re-checks the row (and, before closing or dropping, asks origin itself),
so racing a live save, merge or close, or another reconcile, does nothing twice and nothing wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text, update

from backend import audit, provenance
from backend import config as cfgmod
from backend.auth import Actor
from backend.change_request_records import open_saved, record_merge, record_update
from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.errors import LfopsError, ValidationFailed
from backend.gitstore import GitStore
from backend.invariants import Finding
from backend.names import check_branch
from backend.review_status import UNDER_REVIEW, ChangeRequestStatus
from backend.store import Store
from backend.store.models import ChangeRequest, Config, PullRequest, User, utcnow

STALE_AFTER = 600.0  # seconds before a `saving` row without its branch counts as a save that died
ACTOR = "lfops-reconcile"  # who the audit log names for a repair

BRANCH_WITHOUT_CR = "branch-without-change-request"
CR_WITHOUT_BRANCH = "change-request-without-branch"
STATUS_DIFFERS = "status-differs-from-git"
SAVE_INTERRUPTED = "save-interrupted"
BRANCH_DIFFERS = "branch-differs-from-change-request"


@dataclass(frozen=True)
class _Row:
    id: int
    branch: str
    head: str
    status: ChangeRequestStatus
    merged_commit: str | None
    created_at: datetime


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: list[str]
    claims: provenance.Claims
    trailers: dict[str, list[str]]


class Reconciler:
    def __init__(self, store: Store, repo: GitStore) -> None:
        self.store = store
        self.repo = repo

    # ---- the passes ---------------------------------------------------------------------------------------------

    def check(self, repair: bool, stale_after: float = STALE_AFTER) -> list[Finding]:
        rows = self._rows()  # before Git: see the module's last paragraph
        self.repo.fetch()
        heads = self.repo.branches()
        main = heads.pop(self.repo.main, None)
        if main is None:
            return [
                Finding(STATUS_DIFFERS, f"branch {self.repo.main}", "origin has no main branch", "none: fix origin")
            ]
        merges = self._merges()
        merged_on_main = {m.sha for found in merges.values() for m in found}
        findings: list[Finding] = []
        owned: set[str] = set()
        for row in rows.values():
            if row.status == ChangeRequestStatus.MERGED and row.merged_commit in merged_on_main:
                continue  # the common case, settled without a git call per merged request
            finding = self._check_row(row, heads, main, merges, repair, stale_after, owned)
            if finding:
                findings.append(finding)
        if repair:  # the branches are judged by the requests as the repairs left them (a merge recorded just now)
            rows = self._rows()
        for branch, sha in sorted(heads.items()):
            if branch not in owned:
                finding = self._check_branch(branch, sha, rows, repair)
                if finding:
                    findings.append(finding)
        return findings

    def settle_branch(self, branch: str) -> int | None:
        """Repair one branch now (a save found it existing): the id of the request under review it belongs to after
        the repair, or None when it belongs to none (a foreign branch, left alone)."""
        rows = self._rows()
        self.repo.fetch()
        sha = self.repo.branches().get(branch)
        if sha is None:
            return None
        for row in rows.values():
            if row.branch == branch and row.head == sha and row.status == ChangeRequestStatus.SAVING:
                self._adopt_saving(row, repair=True)
        self._check_branch(branch, sha, self._rows(), repair=True)
        with self.store.session() as s:
            return s.scalar(
                select(ChangeRequest.id).where(
                    ChangeRequest.branch == branch,
                    ChangeRequest.head_commit == sha,
                    ChangeRequest.status.in_(UNDER_REVIEW),
                )
            )

    def settle_merged(self, cr_id: int) -> bool:
        """Repair one request now (its merge found its head on main): whether it is now recorded as merged."""
        row = self._rows(cr_id).get(cr_id)
        if row is None:
            return False
        self.repo.fetch()
        if row.status != ChangeRequestStatus.MERGED:
            entry = self._merge_of(row, self._merges())
            if entry is None:
                return False
            finding = self._record_merge(row, entry, repair=True)
            if not finding.repaired:
                return False
        return True

    def settle_update(self, cr_id: int) -> None:
        """Repair one request's branch now (an update found it moved): record an interrupted update of it."""
        row = self._rows(cr_id).get(cr_id)
        if row is None or row.status not in UNDER_REVIEW:
            return
        self.repo.fetch()
        sha = self.repo.branches().get(row.branch)
        if sha is not None and sha != row.head:
            self._adopt_update(row, self._commit(sha), repair=True)

    # ---- one request --------------------------------------------------------------------------------------------

    def _check_row(
        self,
        row: _Row,
        heads: dict[str, str],
        main: str,
        merges: dict[int, list[_Commit]],
        repair: bool,
        stale_after: float,
        owned: set[str],
    ) -> Finding | None:
        subject = f"change request #{row.id}"
        if row.status == ChangeRequestStatus.MERGED:
            if row.merged_commit and not self.repo.is_ancestor(row.merged_commit, main):
                return Finding(
                    STATUS_DIFFERS,
                    subject,
                    f"recorded as merged by {row.merged_commit[:12]}, which main does not contain (main rewritten?)",
                    "none: a person has to look",
                )
            return None
        entry = self._merge_of(row, merges)
        if entry is not None:
            return self._record_merge(row, entry, repair)
        sha = heads.get(row.branch)
        if row.status == ChangeRequestStatus.SAVING:
            if sha == row.head:
                owned.add(row.branch)
                return self._adopt_saving(row, repair)
            if _age(row) > stale_after:
                return self._drop_saving(row, repair)
            return None  # a save in flight
        if row.status not in UNDER_REVIEW:
            return None  # closed: its branch, if left, is the branch pass's
        if sha is None:
            return self._close_orphan(row, main, repair)
        owned.add(row.branch)
        if sha != row.head:
            commit = self._commit(sha)
            if self._updates(row, commit):
                return self._adopt_update(row, commit, repair)
            return Finding(
                BRANCH_DIFFERS,
                f"branch {row.branch}",
                f"points at {sha[:12]}, change request #{row.id}'s head is {row.head[:12]} (pushed outside lfops)",
                "none: left alone",
            )
        return None

    def _adopt_saving(self, row: _Row, repair: bool) -> Finding:
        finding = Finding(
            BRANCH_WITHOUT_CR,
            f"branch {row.branch}",
            f"its save of change request #{row.id} stopped after the push",
            f"adopt: open change request #{row.id}",
        )
        if not repair:
            return finding
        with self.store.session() as s:
            open_saved(s, row.id, row.head, ACTOR, recovered="the save stopped after its push")
        return _repaired(finding)

    @staticmethod
    def _updates(row: _Row, commit: _Commit) -> bool:
        """`commit` claims to be an lfops update of `row`: it names the request and sits right on its head."""
        return commit.claims.change_request() == row.id and commit.parents == [row.head]

    def _adopt_update(self, row: _Row, commit: _Commit, repair: bool) -> Finding:
        subject = f"branch {row.branch}"
        try:
            author, path, config, config_hash, dataset_version, _message = self._vouch(
                row.branch, commit, parent_head=row.head
            )
            with self.store.session() as s:
                cr = s.get(ChangeRequest, row.id)
                if path != cr.config_path or author.id != cr.author_id:
                    raise LfopsError(f"it is not change request #{row.id}'s file or not its author's")
        except LfopsError as exc:
            return Finding(
                BRANCH_DIFFERS,
                subject,
                f"points at {commit.sha[:12]}, one commit past change request #{row.id}'s head, but {exc}",
                "none: left alone",
            )
        finding = Finding(
            BRANCH_DIFFERS,
            subject,
            f"its update of change request #{row.id} stopped after the push",
            f"record {commit.sha[:12]} as change request #{row.id}'s head",
        )
        if not repair:
            return finding
        with self.store.session() as s:
            record_update(
                s,
                row.id,
                row.head,
                commit.sha,
                config,
                config_hash,
                dataset_version,
                ACTOR,
                recovered="the update stopped after its push",
            )
        return _repaired(finding)

    def _drop_saving(self, row: _Row, repair: bool) -> Finding:
        finding = Finding(
            SAVE_INTERRUPTED,
            f"change request #{row.id}",
            f"reserved {_age(row):.0f} s ago, its branch {row.branch} never reached origin",
            "drop the reserved row (saving again works)",
        )
        if not repair or self.repo.remote_head(row.branch) == row.head:  # landed just now: the next pass adopts it
            return finding
        with self.store.session() as s:
            s.execute(delete(PullRequest).where(PullRequest.change_request_id == row.id))
            s.execute(delete(Config).where(Config.change_request_id == row.id, Config.commit == row.head))
            gone = s.execute(
                delete(ChangeRequest).where(
                    ChangeRequest.id == row.id, ChangeRequest.status == ChangeRequestStatus.SAVING
                )
            )
            if gone.rowcount:
                audit.record(s, ACTOR, "config.save-dropped", f"change_request:{row.id}", branch=row.branch)
        return _repaired(finding)

    def _close_orphan(self, row: _Row, main: str, repair: bool) -> Finding:
        subject = f"change request #{row.id}"
        if self.repo.is_ancestor(row.head, main):
            return Finding(
                STATUS_DIFFERS,
                subject,
                f"its head {row.head[:12]} is on main, but no lfops merge names it",
                "none: merged outside lfops; a person has to look",
            )
        finding = Finding(CR_WITHOUT_BRANCH, subject, f"branch {row.branch} is not on origin", "close it")
        with self.store.session() as s:  # a squash or rebase merge on the forge leaves no head on main: ask the forge
            if s.scalar(select(PullRequest.id).where(PullRequest.change_request_id == row.id)) is not None:
                return replace(finding, repair="none: its pull request decides (backend.forge_sync)")
        if not repair or self.repo.remote_head(row.branch) is not None:  # asked of origin itself before closing
            return finding
        with self.store.session() as s:
            closed = s.execute(
                update(ChangeRequest)
                .where(
                    ChangeRequest.id == row.id,
                    ChangeRequest.status.in_(UNDER_REVIEW),
                    ChangeRequest.head_commit == row.head,
                )
                .values(status=ChangeRequestStatus.CLOSED, updated_at=utcnow())
            )
            if closed.rowcount:
                audit.record(s, ACTOR, "review.close", f"change_request:{row.id}", reason="its branch is gone")
        return _repaired(finding)

    def _record_merge(self, row: _Row, entry: _Commit, repair: bool) -> Finding:
        subject = f"change request #{row.id}"
        with self.store.session() as s:
            cr = s.get(ChangeRequest, row.id)
            problems = provenance.merge_mismatches(s, cr, entry.sha, entry.parents, entry.claims, recorded=False)
        if problems:
            return Finding(
                STATUS_DIFFERS,
                subject,
                f"merge {entry.sha[:12]} on main names it, but {problems[0]}",
                "none: not trusted; a person has to look",
            )
        finding = Finding(
            STATUS_DIFFERS,
            subject,
            f"{row.status} in the database, merged on main as {entry.sha[:12]}",
            "mark it merged",
        )
        if not repair:
            return finding
        raw = self.repo.read(entry.sha, cr.config_path) or b""
        try:
            merged_cfg, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(entry.sha), cr.config_path)
        except ValidationFailed:  # recorded as it is: it is on main either way
            merged_cfg = TrainConfig.parse(raw, cr.config_path)
            dataset_version = entry.claims.one(provenance.DATASET_VERSION) or cr.dataset_version
        merger = entry.claims.person(provenance.MERGED_BY)
        with self.store.session() as s:
            merger_id = s.scalar(select(User.id).where(User.name == merger)) if merger else None
            record_merge(
                s,
                row.id,
                entry.sha,
                merger_id,
                ACTOR,
                merged_cfg,
                dataset_version,
                entry.claims.values.get(provenance.APPROVED_BY, []),
                recovered="the merge stopped after its push",
                merged_by=merger,
            )
        return _repaired(finding)

    # ---- one branch ---------------------------------------------------------------------------------------------

    def _check_branch(self, branch: str, sha: str, rows: dict[int, _Row], repair: bool) -> Finding | None:
        subject = f"branch {branch}"
        commit = self._commit(sha)
        number = commit.claims.change_request()
        row = rows.get(number) if number is not None else None
        decided = row is not None and row.status in (ChangeRequestStatus.MERGED, ChangeRequestStatus.CLOSED)
        if row is not None and row.branch == branch and (row.head == sha or decided and self._updates(row, commit)):
            if row.status in UNDER_REVIEW or row.status == ChangeRequestStatus.SAVING:
                return None  # its request's pass covers it
            finding = Finding(
                BRANCH_WITHOUT_CR,
                subject,
                f"left behind by change request #{row.id}, which is {row.status}",
                "delete the branch",
            )
            if not repair:
                return finding
            self.repo.delete_branch(branch, sha)  # only while it still points at that head
            with self.store.session() as s:
                audit.record(s, ACTOR, "reconcile.delete-branch", f"change_request:{row.id}", branch=branch)
            return _repaired(finding)
        if number is not None and row is None:
            return self._adopt_from_trailers(branch, commit, number, repair)
        why = "no lfops trailers" if not commit.claims else "its trailers do not match the database"
        return Finding(BRANCH_WITHOUT_CR, subject, f"{why} (head {sha[:12]})", "none: not lfops' to delete; left alone")

    def _adopt_from_trailers(self, branch: str, commit: _Commit, number: int, repair: bool) -> Finding:
        subject = f"branch {branch}"
        try:
            facts = self._vouch(branch, commit)
        except LfopsError as exc:
            return Finding(
                BRANCH_WITHOUT_CR,
                subject,
                f"its trailers name change request #{number}, which the database lacks, but {exc}",
                "none: not lfops' to delete; left alone",
            )
        finding = Finding(
            BRANCH_WITHOUT_CR,
            subject,
            f"its trailers name change request #{number}, which the database lacks",
            f"adopt: re-create change request #{number} from the commit",
        )
        if not repair:
            return finding
        author, path, config, config_hash, dataset_version, message = facts
        with self.store.session() as s:
            if s.get(ChangeRequest, number) is not None:
                return finding  # taken meanwhile: the next pass judges it again
            cr = ChangeRequest(
                id=number,
                title=message.splitlines()[0][:200],
                description=provenance.description(message),
                branch=branch,
                base_commit=commit.parents[0],
                head_commit=commit.sha,
                config_path=path,
                config_hash=config_hash,
                dataset_version=dataset_version,
                author_id=author.id,
                status=ChangeRequestStatus.SAVING,
            )
            s.add(cr)
            s.flush()
            if s.bind.dialect.name == "postgresql":  # an id given explicitly: the sequence must never hand it out
                s.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('change_requests', 'id'), :n) WHERE :n > COALESCE("
                        "pg_sequence_last_value(pg_get_serial_sequence('change_requests', 'id')::regclass), 0)"
                    ),
                    {"n": number},
                )
            record_config(s, commit.sha, path, config, dataset_version, number, config_hash)
            open_saved(s, number, commit.sha, ACTOR, recovered="re-created from the branch's trailers")
        return _repaired(finding)

    def _vouch(
        self, branch: str, commit: _Commit, parent_head: str | None = None
    ) -> tuple[Actor, str, TrainConfig, str, str, str]:
        """What lfops needs to re-create a save (or, on `parent_head`, record an update) from its commit, each claim
        checked; LfopsError says which failed."""
        claims = commit.claims
        path, claimed_hash, saver = (
            claims.one(provenance.CONFIG_PATH),
            claims.one(provenance.CONFIG_HASH),
            claims.person(provenance.SAVED_BY),
        )
        if not (path and claimed_hash and saver) or len(commit.parents) != 1:
            raise LfopsError("it is not an lfops save commit (trailers or parents missing)")
        check_branch(branch, main=self.repo.main)
        with self.store.session() as s:
            user = s.scalar(select(User).where(User.name == saver))
            author = Actor.of(user) if user is not None and user.active else None
        if author is None or not author.can("config.save"):
            raise LfopsError(f"{provenance.SAVED_BY} {saver!r} is not a user who may save")
        parent = commit.parents[0]
        if parent_head is not None:
            if parent != parent_head:
                raise LfopsError(f"its parent {parent[:12]} is not the request's head")
        elif not self.repo.is_ancestor(parent, f"refs/remotes/origin/{self.repo.main}"):
            raise LfopsError(f"its parent {parent[:12]} is not on main")
        changed = self.repo.git("diff", "--name-only", "--no-renames", parent, commit.sha).split()
        if changed != [path]:
            raise LfopsError(f"it changes {', '.join(changed) or 'nothing'}, not just {path}")
        raw = self.repo.read(commit.sha, path) or b""
        try:
            config, dataset_version = cfgmod.parse_and_validate(raw, self.repo.files(commit.sha), path)
        except ValidationFailed as exc:
            raise LfopsError(f"its config does not validate ({exc})") from None
        if config.frozen().config_hash != claimed_hash:
            raise LfopsError(f"{path}'s hash is not the {provenance.CONFIG_HASH} it claims")
        message = self.repo.git("log", "-1", "--format=%B", commit.sha)
        return author, path, config, claimed_hash, dataset_version, message

    # ---- reading ------------------------------------------------------------------------------------------------

    def _rows(self, cr_id: int | None = None) -> dict[int, _Row]:
        query = select(
            ChangeRequest.id,
            ChangeRequest.branch,
            ChangeRequest.head_commit,
            ChangeRequest.status,
            ChangeRequest.merged_commit,
            ChangeRequest.created_at,
        )
        if cr_id is not None:
            query = query.where(ChangeRequest.id == cr_id)
        with self.store.session() as s:
            return {
                r[0]: _Row(r[0], r[1], r[2], ChangeRequestStatus(r[3]), r[4], _aware(r[5])) for r in s.execute(query)
            }

    def _merges(self) -> dict[int, list[_Commit]]:
        """lfops' merges on main's first-parent line, by the change request number their trailers name."""
        found: dict[int, list[_Commit]] = {}
        for entry in self.repo.log(f"refs/remotes/origin/{self.repo.main}", limit=None, merges_only=True):
            claims = provenance.Claims.of(entry["trailers"])
            number = claims.change_request()
            if number is not None:
                found.setdefault(number, []).append(
                    _Commit(entry["commit"], entry["parents"], claims, entry["trailers"])
                )
        return found

    @staticmethod
    def _merge_of(row: _Row, merges: dict[int, list[_Commit]]) -> _Commit | None:
        """The merge on main that brought this request's head in, if an lfops merge did."""
        return next((m for m in merges.get(row.id, []) if m.parents[1:2] == [row.head]), None)

    def _commit(self, sha: str) -> _Commit:
        entry = self.repo.log(sha, limit=1)[0]
        return _Commit(sha, entry["parents"], provenance.Claims.of(entry["trailers"]), entry["trailers"])


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite hands back naive datetimes


def _age(row: _Row) -> float:
    return (datetime.now(UTC) - row.created_at) / timedelta(seconds=1)


def _repaired(finding: Finding) -> Finding:
    return Finding(finding.invariant, finding.subject, finding.detail, finding.repair, repaired=True)
