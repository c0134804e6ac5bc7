"""The launch policy: what a target names, and whether it may be launched without an admin's override.

A run trains exactly the merge commit of a merged change request, and only while that commit is on main: the merge
commit is the one tree that was validated at merge time with its approval (the config, the data and everything else in
the repository exactly as reviewed). A later commit on main "contains" the approved config but also changes nobody
approved together with it (other data files, a dataset_info.json edit), so it is not launchable by itself; launch the
change request that made it. An admin may launch any commit of the repository with a reason (`override_reason`),
which is audited. A launch on a target that cannot run the config (no GPU for bf16, too little memory...: the
preflight, backend.preflight) is refused with the reason and the fix, for everyone: the config is never changed to
fit, and an override is for the approval policy, not for hardware. The checks live here, not in a UI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from backend import approvals
from backend.config import Files, TrainConfig
from backend.errors import Conflict, LfopsError, NotFound
from backend.gitstore import GitStore
from backend.preflight import Preflight
from backend.review_status import ChangeRequestStatus
from backend.runners.base import Resources
from backend.runs.queries import COMMIT_RE
from backend.store import Store
from backend.store.models import ChangeRequest, Config, PullRequest

_CR_RE = re.compile(r"^#?(\d{1,6})$")


@dataclass(frozen=True)
class LaunchTarget:
    commit: str
    config_path: str
    change_request_id: int | None


class LaunchPolicy:
    def __init__(self, store: Store, repo: GitStore, preflight: Preflight | None = None) -> None:
        self.store = store
        self.repo = repo
        self.preflight = preflight  # None: launches are not checked against their target (a bare Runs in tests)

    def resolve(self, target: int | str, config_path: str | None = None) -> LaunchTarget:
        """A change request number (`12`, `#12`) or a commit id (7-40 hex digits) -> commit and config path."""
        text = str(target).strip()
        m = _CR_RE.match(text)
        if m:
            with self.store.session() as s:
                cr = s.get(ChangeRequest, int(m.group(1)))
                if cr is None:
                    raise NotFound(f"change request #{m.group(1)} does not exist")
                if cr.status != ChangeRequestStatus.MERGED or not cr.merged_commit:
                    raise Conflict(
                        f"change request #{cr.id} is {cr.status}, not merged: only merged change requests can be "
                        "launched"
                    )
                if config_path and config_path != cr.config_path:
                    raise LfopsError(f"config: change request #{cr.id} changed {cr.config_path}, not {config_path}")
                return LaunchTarget(cr.merged_commit, cr.config_path, cr.id)
        if not COMMIT_RE.match(text):
            raise LfopsError(f"target: {text!r} must be a change request number or a commit id (7-40 hex digits)")
        commit = self._rev_parse(text.lower())
        with self.store.session() as s:
            cr = s.scalar(
                select(ChangeRequest).where(
                    ChangeRequest.merged_commit == commit, ChangeRequest.status == ChangeRequestStatus.MERGED
                )
            )
            cr_id, cr_path = (cr.id, cr.config_path) if cr else (None, None)
            if cr_path is None and config_path is None:  # e.g. a change request's branch head: its one config
                paths = list(s.scalars(select(Config.path).where(Config.commit == commit).limit(2)))
                config_path = paths[0] if len(paths) == 1 else None
        if config_path is None:
            if cr_path is None:
                raise LfopsError(
                    f"config: commit {commit[:12]} is not the merge of a change request; name the config with --config"
                )
            config_path = cr_path
        return LaunchTarget(commit, config_path, cr_id if config_path == cr_path else None)

    def _rev_parse(self, text: str) -> str:
        for attempt in range(2):
            out = self.repo.git("rev-parse", "--verify", "--quiet", f"{text}^{{commit}}", check=False).strip()
            if out:
                return out
            if attempt == 0:
                self.repo.fetch()
        raise NotFound(f"commit: {text} is not in the config repository")

    def refusal(self, target: LaunchTarget) -> str | None:
        """Why this commit may not be launched without an override (None: it may)."""
        with self.store.session() as s:
            cr = s.scalar(
                select(ChangeRequest).where(
                    ChangeRequest.merged_commit == target.commit, ChangeRequest.status == ChangeRequestStatus.MERGED
                )
            )
            if cr is None:
                return f"commit {target.commit[:12]} is not the merge commit of an approved change request"
            if cr.config_path != target.config_path:
                return f"change request #{cr.id} approved {cr.config_path}, not {target.config_path}"
            if not any(approvals.counts(review, cr) for review in cr.reviews):
                pr = s.scalar(select(PullRequest).where(PullRequest.change_request_id == cr.id))
                if pr is not None and pr.approved_at_merge is False:
                    return (
                        f"change request #{cr.id}: pull request #{pr.number} was merged on the forge without an "
                        "approval that counts (by an lfops reviewer other than the author, on its head commit)"
                    )
                return f"change request #{cr.id} has no approval for the commit it merged"
        main = self.repo.sync_main()
        if not self.repo.is_ancestor(target.commit, main):
            return f"commit {target.commit[:12]} is not on {self.repo.main}"
        return None

    def hardware_refusal(self, config: TrainConfig, files: Files, resources: Resources) -> LfopsError | None:
        """Why the target of `resources` cannot run `config` as it is, with the fix (None: it can, or it is a target
        the preflight does not know and the runner will say what is wrong with it)."""
        if self.preflight is None:
            return None
        verdict = self.preflight.launch_verdict(
            config, files, resources.profile, resources.gpus_per_node, resources.nodes
        )
        if verdict is None or verdict.runnable:
            return None
        where = "profile" if resources.profile else "where"
        return LfopsError(f"launch refused on {verdict.target.label}: {verdict.why_not()}", field=where)
