"""The config repository: lfops keeps a bare mirror of `origin` and never mutates a shared working copy.

Commits are built with plumbing (a private index file per operation, `commit-tree`, `merge-tree --write-tree`), so many
saves can run at once; refs on `origin` change only by push with an explicit expected old value, so a race or a
rejected push leaves the remote as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from backend.errors import Conflict, GitFailure, LfopsError

_CRED_RE = re.compile(r"(//[^/@\s:]+):[^@\s/]+@")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ZERO = "0" * 40


def redact(text: str) -> str:
    """Remove credentials embedded in Git URLs (https://user:token@host) from a message."""
    return _CRED_RE.sub(r"\1:***@", text)


def check_name(value: str, field: str = "name") -> str:
    """A config name or branch segment: letters, digits, '.', '_' and '-', no '..', no leading dot."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value or value.endswith((".lock", ".")):
        raise LfopsError(
            f"{field}: {value!r} is not allowed (use letters, digits, '.', '_', '-'; no '..', spaces or '/'; "
            "at most 100 characters)"
        )
    return value


def check_branch(branch: str) -> str:
    parts = branch.split("/") if isinstance(branch, str) else [""]
    for part in parts:
        check_name(part, "branch")
    result = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, text=True)
    if result.returncode != 0:
        raise LfopsError(f"branch: {branch!r} is not a valid Git branch name")
    return branch


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


def trailers(**values: str | list[str]) -> str:
    """Commit trailers ("Config-Hash: ...") from keyword arguments (Config_Hash -> Config-Hash)."""
    lines = []
    for key, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if v:
                lines.append(f"{key.replace('_', '-')}: {v}")
    return "\n".join(lines)


class TreeFiles:
    """Files of one commit, read from the mirror (implements backend.config.Files)."""

    # Blob id -> sha256 of its contents: a dataset hashed once is never read again.
    _digests: dict[str, str] = {}

    def __init__(self, store: GitStore, commit: str) -> None:
        self._store = store
        self._commit = commit

    def _entry(self, path: str) -> tuple[str, str] | None:
        out = self._store.git("ls-tree", "-z", self._commit, "--", path, check=False)
        if not out:
            return None
        meta, _, name = out.rstrip("\0").partition("\t")
        _mode, kind, oid = meta.split()
        return (kind, oid) if name == path else None

    def read(self, path: str) -> bytes | None:
        entry = self._entry(path)
        if entry is None or entry[0] != "blob":
            return None
        return self._store.git_bytes("cat-file", "blob", entry[1])

    def digest(self, path: str) -> str | None:
        entry = self._entry(path)
        if entry is None or entry[0] != "blob":
            return None
        return self._digest_of(entry[1])

    def _digest_of(self, oid: str) -> str:
        cached = self._digests.get(oid)
        if cached is None:
            cached = hashlib.sha256(self._store.git_bytes("cat-file", "blob", oid)).hexdigest()
            self._digests[oid] = cached
        return cached

    def list_files(self, path: str) -> list[str]:
        out = self._store.git("ls-tree", "-r", "-z", "--name-only", self._commit, "--", path.rstrip("/") + "/")
        return sorted(p for p in out.split("\0") if p)


class GitStore:
    """Operations on the config repository, through lfops' bare mirror of `origin`."""

    _thread_lock = threading.Lock()

    def __init__(self, mirror_dir: Path, remote_url: str, main_branch: str = "main") -> None:
        self.mirror_dir = Path(mirror_dir)
        self.remote_url = remote_url
        self.main = main_branch
        self._lock_path = self.mirror_dir.with_suffix(".lock")

    # ---- plumbing ----------------------------------------------------------------------------------------------

    def _run(
        self, args: list[str], *, env: dict | None = None, input: bytes | None = None, check: bool = True
    ) -> bytes:
        full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
        proc = subprocess.run(
            ["git", "-C", str(self.mirror_dir), *args], input=input, capture_output=True, env=full_env
        )
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
            raise GitFailure(f"git {args[0]} failed: {redact(err.splitlines()[-1] if err else 'no output')}")
        return proc.stdout

    def git(self, *args: str, env: dict | None = None, input: str | None = None, check: bool = True) -> str:
        return self._run(list(args), env=env, input=input.encode() if input is not None else None, check=check).decode()

    def git_bytes(self, *args: str) -> bytes:
        return self._run(list(args))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise ref updates of the mirror across threads and processes (objects need no lock)."""
        with self._thread_lock, open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- set-up -------------------------------------------------------------------------------------------------

    def ensure_mirror(self) -> None:
        if (self.mirror_dir / "HEAD").exists():
            return
        self.mirror_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            git.Repo.init(self.mirror_dir, bare=True)
        except git.GitCommandError as exc:
            raise GitFailure(f"cannot create mirror at {self.mirror_dir}: {exc.stderr.strip()}") from None
        self.git("remote", "add", "origin", self.remote_url)
        self.git("config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
        self.git("config", "gc.auto", "0")  # never a surprise gc inside a user's save

    def fetch(self) -> None:
        with self._locked():
            self.git("fetch", "--prune", "--quiet", "origin")

    def remote_head(self, branch: str | None = None) -> str | None:
        """The commit a branch points to on `origin`, asked of the remote itself (not the mirror's copy)."""
        ref = f"refs/heads/{branch or self.main}"
        out = self.git("ls-remote", "origin", ref)
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def sync_main(self) -> str:
        """The current main on origin, its objects present in the mirror."""
        head = self.remote_head()
        if head is None:
            raise GitFailure(f"origin has no branch {self.main!r}")
        if not self.has_commit(head):
            self.fetch()
        return head

    def has_commit(self, sha: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", str(self.mirror_dir), "cat-file", "-e", f"{sha}^{{commit}}"], capture_output=True
        )
        return proc.returncode == 0

    # ---- reading ------------------------------------------------------------------------------------------------

    def files(self, commit: str) -> TreeFiles:
        return TreeFiles(self, commit)

    def read(self, commit: str, path: str) -> bytes | None:
        return self.files(commit).read(path)

    def diff(self, base: str, head: str, path: str) -> str:
        """The change `head` makes to `path` since its merge base with `base` (what a reviewer reads)."""
        return self.git("diff", "--no-color", "--no-ext-diff", f"{base}...{head}", "--", path)

    def log(self, ref: str, path: str | None = None, limit: int = 50) -> list[dict]:
        args = ["log", f"-{limit}", "--format=%H%x1f%an%x1f%ae%x1f%aI%x1f%s%x1f%b%x1e", ref]
        if path:
            args += ["--", path]
        out = self.git(*args)
        entries = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\x1f")
            if len(fields) == 6:
                sha, name, email, date, subject, body = fields
                entries.append(
                    {
                        "commit": sha,
                        "author": name,
                        "email": email,
                        "date": date,
                        "subject": subject,
                        "trailers": parse_trailers(body),
                    }
                )
        return entries

    def is_ancestor(self, commit: str, ref: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", str(self.mirror_dir), "merge-base", "--is-ancestor", commit, ref], capture_output=True
        )
        return proc.returncode == 0

    def commit_message(self, commit: str) -> str:
        return self.git("log", "-1", "--format=%B", commit)

    # ---- writing ------------------------------------------------------------------------------------------------

    def commit_file(self, parent: str, path: str, content: str, message: str, identity: Identity) -> str:
        """A new commit on top of `parent` with `path` set to `content`; touches no ref and no working copy."""
        blob = self.git("hash-object", "-w", "--stdin", input=content).strip()
        with tempfile.TemporaryDirectory(prefix="lfops-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", parent, env=env)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git("write-tree", env=env).strip()
        if tree == self.git("rev-parse", f"{parent}^{{tree}}").strip():
            raise Conflict(f"{path} on {self.main} is already exactly this config: nothing to change")
        return self.git("commit-tree", tree, "-p", parent, "-F", "-", env=identity.env(), input=message).strip()

    def merge_commit(self, main: str, head: str, message: str, identity: Identity) -> str:
        """A merge commit of `head` into `main`, made without a working copy; a conflict raises and writes no ref."""
        proc = subprocess.run(
            [
                "git",
                "-C",
                str(self.mirror_dir),
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                main,
                head,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
        )
        if proc.returncode == 1:
            files = [f for f in proc.stdout.splitlines()[1:] if f]
            raise Conflict(
                f"merge conflict with {self.main} in {', '.join(files) or 'the config'}: "
                "update the change request's branch first"
            )
        if proc.returncode != 0:
            raise GitFailure(f"git merge-tree failed: {proc.stderr.strip()}")
        tree = proc.stdout.splitlines()[0].strip()
        return self.git(
            "commit-tree", tree, "-p", main, "-p", head, "-F", "-", env=identity.env(), input=message
        ).strip()

    def push(self, commit: str, branch: str, expect: str | None) -> None:
        """Point origin's `branch` at `commit` only if it is now at `expect` (None: only if it does not exist)."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expect or ''}"
        proc = subprocess.run(
            [
                "git",
                "-C",
                str(self.mirror_dir),
                "push",
                "--porcelain",
                "--quiet",
                lease,
                "origin",
                f"{commit}:refs/heads/{branch}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
        if proc.returncode != 0:
            text = redact((proc.stdout + proc.stderr).strip())
            if "stale info" in text or "fetch first" in text or "already exists" in text:
                if expect is None:
                    raise Conflict(f"branch {branch!r} already exists on origin; choose another name")
                raise Conflict(f"branch {branch!r} moved on origin while this change was prepared; try again")
            last = [ln for ln in text.splitlines() if ln.strip()]
            raise GitFailure(f"push of {branch!r} to origin was rejected: {last[-1] if last else 'no output'}")
        with self._locked():  # keep the mirror's view in step without another fetch
            self.git("update-ref", f"refs/remotes/origin/{branch}", commit)

    def delete_branch(self, branch: str, expect: str) -> None:
        proc = subprocess.run(
            [
                "git",
                "-C",
                str(self.mirror_dir),
                "push",
                "--quiet",
                f"--force-with-lease=refs/heads/{branch}:{expect}",
                "origin",
                f":refs/heads/{branch}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
        if proc.returncode != 0:
            raise GitFailure(f"could not delete branch {branch!r} on origin: {redact(proc.stderr.strip())}")
        with self._locked():
            self.git("update-ref", "-d", f"refs/remotes/origin/{branch}", check=False)


def parse_trailers(message: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in message.splitlines():
        m = re.match(r"^([A-Z][A-Za-z-]+): (.+)$", line.strip())
        if m:
            result.setdefault(m.group(1), []).append(m.group(2))
    return result


def init_origin(path: Path, files: dict[str, str], identity: Identity, main_branch: str = "main") -> str:
    """Create a bare repository at `path` whose main holds `files` (the `lfops init` seed)."""
    git.Repo.init(path, bare=True, initial_branch=main_branch)
    store = GitStore(path, str(path), main_branch)
    with tempfile.TemporaryDirectory(prefix="lfops-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        for rel, content in sorted(files.items()):
            blob = store.git("hash-object", "-w", "--stdin", input=content).strip()
            store.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
        tree = store.git("write-tree", env=env).strip()
    commit = store.git("commit-tree", tree, "-m", "Initial config repository (lfops init)", env=identity.env()).strip()
    store.git("update-ref", f"refs/heads/{main_branch}", commit)
    return commit
