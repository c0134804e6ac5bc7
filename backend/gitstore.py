"""The config repository: lfops keeps a bare mirror of `origin` and never mutates a shared working copy.

Commits are built with plumbing (a private index file per operation, `commit-tree`, `merge-tree --write-tree`), so many
saves can run at once; refs on `origin` change only by push with an explicit expected old value, so a race or a
rejected push leaves the remote as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import IStream

from backend.errors import Conflict, GitFailure
from backend.filelock import file_lock
from backend.names import check_branch, check_name  # noqa: F401 - their home before backend.names
from backend.redaction import redact

_ZERO = "0" * 40


class BranchExists(Conflict):
    """A push that creates a branch found it already on origin."""


class LostRace(Conflict):
    """A push lost a race for a branch: it moved on origin (or another push held its ref lock) after we read it."""


def _git_env(env: dict | None = None) -> dict[str, str]:
    """Every git subprocess: never prompts for credentials, messages in English for matching."""
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}


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


class TreeFiles:
    """Files of one commit, read from the mirror's object database (implements backend.config.Files)."""

    # Blob id -> sha256 of its contents: a dataset hashed once is never read again.
    _digests: dict[str, str] = {}

    def __init__(self, store: GitStore, commit: str) -> None:
        self._repo = store.objects()
        self._tree = self._repo.commit(commit).tree

    def _blob(self, path: str) -> git.Blob | None:
        try:
            obj = self._tree / path
        except KeyError:
            return None
        return obj if obj.type == "blob" else None

    def read(self, path: str) -> bytes | None:
        blob = self._blob(path)
        return None if blob is None else blob.data_stream.read()

    def digest(self, path: str) -> str | None:
        blob = self._blob(path)
        if blob is None:
            return None
        cached = self._digests.get(blob.hexsha)
        if cached is None:
            cached = self._digests[blob.hexsha] = hashlib.sha256(blob.data_stream.read()).hexdigest()
        return cached

    def list_files(self, path: str) -> list[str]:
        try:
            tree = self._tree / path.rstrip("/")
        except KeyError:
            return []
        if tree.type != "tree":
            return []
        return sorted(item.path for item in tree.traverse() if item.type == "blob")

    def is_link(self, path: str) -> bool:
        """Whether `path`, or a folder on the way to it, is a symbolic link (a blob of mode 120000) in the commit."""
        tree = self._tree
        for part in path.strip("/").split("/"):
            try:
                obj = tree / part
            except KeyError:
                return False
            if obj.mode == 0o120000:
                return True
            if obj.type != "tree":
                return False
            tree = obj
        return False


def _data_member(member: tarfile.TarInfo, dest: Path, regular_files_only: bool) -> bool:
    """What tar's "data" filter (Python >= 3.11.4) allows, for older Pythons: False = leave the member out, a
    member that would write outside `dest` (absolute path, `..`, a link pointing out) raises tarfile.TarError."""
    if regular_files_only and not (member.isfile() or member.isdir()):
        return False
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, member.name))
    if os.path.isabs(member.name) or os.path.commonpath([root, target]) != root:
        raise tarfile.TarError(f"{member.name!r} would be written outside the destination")
    if member.issym() or member.islnk():
        base = os.path.dirname(target) if member.issym() else root
        linked = os.path.realpath(os.path.join(base, member.linkname))
        if os.path.isabs(member.linkname) or os.path.commonpath([root, linked]) != root:
            raise tarfile.TarError(f"{member.name!r} links outside the destination")
    elif not (member.isfile() or member.isdir()):
        raise tarfile.TarError(f"{member.name!r} is a special file")
    # no setuid/setgid/sticky bits, no group/other write; files stay readable and writable by their owner
    member.mode = (member.mode & 0o755) | (0o600 if member.isfile() else 0o700)
    return True


class GitStore:
    """Operations on the config repository, through lfops' bare mirror of `origin`."""

    _thread_lock = threading.Lock()
    _local = threading.local()

    def __init__(
        self, mirror_dir: Path, remote_url: str, main_branch: str = "main", auth_env: dict[str, str] | None = None
    ) -> None:
        self.mirror_dir = Path(mirror_dir)
        self.remote_url = remote_url
        self.main = main_branch
        self._lock_path = self.mirror_dir.with_suffix(".lock")
        # e.g. a forge token as GIT_CONFIG_* http.extraHeader: in git's environment only, never in a URL or a config
        self._auth_env = dict(auth_env or {})

    # ---- plumbing ----------------------------------------------------------------------------------------------

    def _proc(
        self, args: list[str], *, env: dict | None = None, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return _git_proc(["-C", str(self.mirror_dir), *args], env={**self._auth_env, **(env or {})}, input=input)

    def _run(
        self, args: list[str], *, env: dict | None = None, input: bytes | None = None, check: bool = True
    ) -> bytes:
        proc = self._proc(args, env=env, input=input)
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
            raise GitFailure(f"git {args[0]} failed: {redact(_error_line(err), self.remote_url)}")
        return proc.stdout

    def git(self, *args: str, env: dict | None = None, input: str | None = None, check: bool = True) -> str:
        return self._run(list(args), env=env, input=input.encode() if input is not None else None, check=check).decode()

    def git_bytes(self, *args: str) -> bytes:
        return self._run(list(args))

    @contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        """Ref updates of the mirror, across threads and processes (objects need no lock): pushes, which update the
        mirror's copy of the one branch they push, share the lock; a fetch or a ref deletion holds it alone.

        Whoever holds it alone knows that no lfops git process is writing refs here, so a ref lock file still present
        was left by one that was killed mid-update: it is removed (until then git refuses every update of that ref,
        "Unable to create '...lock': File exists", and every fetch with it).
        """
        with ExitStack() as stack:
            if not shared:
                stack.enter_context(self._thread_lock)
            stack.enter_context(file_lock(self._lock_path, shared=shared))
            if not shared:
                self._remove_stale_ref_locks()
            yield

    def _remove_stale_ref_locks(self) -> None:
        """Only while holding the lock alone (see `_locked`)."""
        top = [self.mirror_dir / name for name in ("packed-refs.lock", "HEAD.lock", "shallow.lock")]
        for lock in [*top, *(self.mirror_dir / "refs").rglob("*.lock")]:
            lock.unlink(missing_ok=True)

    def objects(self) -> git.Repo:
        """This thread's GitPython view of the mirror; its `cat-file --batch` process lives as long as the thread."""
        repos = self._local.__dict__.setdefault("repos", {})
        repo = repos.get(self.mirror_dir)
        if repo is None:
            repo = repos[self.mirror_dir] = git.Repo(self.mirror_dir)
        return repo

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
        try:
            return self.objects().odb.info(bytes.fromhex(sha)).type == b"commit"
        except (ValueError, git.BadName, git.BadObject):
            return False

    # ---- reading ------------------------------------------------------------------------------------------------

    def files(self, commit: str) -> TreeFiles:
        return TreeFiles(self, commit)

    def read(self, commit: str, path: str) -> bytes | None:
        return self.files(commit).read(path)

    def extract(self, commit: str, dest: Path, path: str = "", regular_files_only: bool = False) -> None:
        """The files of `commit` (or of its folder `path`, then relative to that folder) written under `dest`,
        streamed from `git archive`: the one way lfops gets a commit's files onto disk, never a shared working copy.

        Tar's "data" filter refuses absolute paths, links out of `dest` and device files; `regular_files_only` leaves
        out links as well.
        """
        treeish = f"{commit}:{path.strip('/')}" if path.strip("/") else commit
        dest.mkdir(parents=True, exist_ok=True)

        def keep(member: tarfile.TarInfo, where: str) -> tarfile.TarInfo | None:
            if regular_files_only and not (member.isfile() or member.isdir()):
                return None
            return tarfile.data_filter(member, where)

        proc = subprocess.Popen(
            ["git", "-C", str(self.mirror_dir), "archive", "--format=tar", treeish],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_git_env(),
        )
        assert proc.stdout is not None and proc.stderr is not None
        unpacked: tarfile.TarError | None = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter=keep)  # noqa: S202 - keep() applies tar's "data" filter to each member
                else:  # Python < 3.11.4 (Debian bookworm's 3.11.2) has no filters: the same rules, checked here
                    for member in tar:
                        if _data_member(member, dest, regular_files_only):
                            tar.extract(member, dest)  # noqa: S202 - checked above
        except tarfile.TarError as exc:  # an empty stream when git failed, or a member the filter refused
            unpacked = exc
        finally:
            proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            last = stderr.splitlines()[-1] if stderr else "no output"
            raise GitFailure(f"git archive {treeish} failed: {redact(last, self.remote_url)}")
        if unpacked is not None:
            raise GitFailure(f"git archive {treeish}: {unpacked}")

    def diff(self, base: str, head: str, path: str) -> str:
        """The change `head` makes to `path` since its merge base with `base` (what a reviewer reads)."""
        return self.git("diff", "--no-color", "--no-ext-diff", f"{base}...{head}", "--", path)

    def diff_files(self, base: str, base_path: str, head: str, head_path: str) -> str:
        """The change from one file at one commit to another file at another (a config opened from another one)."""
        out = self.git("diff", "--no-color", "--no-ext-diff", f"{base}:{base_path}", f"{head}:{head_path}")
        return out.replace(f"a/{base}:{base_path}", f"a/{base_path}").replace(f"b/{head}:{head_path}", f"b/{head_path}")

    def log(self, ref: str, path: str | None = None, limit: int | None = 50, merges_only: bool = False) -> list[dict]:
        """Commits of `ref` (newest first) with their parents and trailers, as Git itself finds the trailer block;
        `merges_only`: the merges on `ref`'s first-parent line (what lfops' merges into main are)."""
        fmt = "%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%s%x1f%(trailers:only,unfold)%x1e"
        args = ["log", *([f"-{limit}"] if limit else []), f"--format={fmt}", ref]
        if merges_only:
            args[1:1] = ["--merges", "--first-parent"]
        if path:
            args += ["--", path]
        out = self.git(*args)
        entries = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\x1f")
            if len(fields) == 7:
                sha, parents, name, email, date, subject, trailer_lines = fields
                entries.append(
                    {
                        "commit": sha,
                        "parents": parents.split(),
                        "author": name,
                        "email": email,
                        "date": date,
                        "subject": subject,
                        "trailers": _trailer_dict(trailer_lines),
                    }
                )
        return entries

    def is_ancestor(self, commit: str, ref: str) -> bool:
        return self._proc(["merge-base", "--is-ancestor", commit, ref]).returncode == 0

    # ---- writing ------------------------------------------------------------------------------------------------

    def commit_file(self, parent: str, path: str, content: str, message: str, identity: Identity) -> str:
        """A new commit on top of `parent` with `path` set to `content`; touches no ref and no working copy.

        The blob, trees and commit are written into the mirror's object database in-process (GitPython), which is
        what keeps a save close to raw git's cost.
        """
        repo = self.objects()
        try:
            blob = self._store(repo, "blob", content.encode())
            root = repo.commit(parent).tree.binsha
            tree = self._tree_with(repo, root, path.split("/"), blob)
            if tree == root:
                raise Conflict(f"{path} on {self.main} is already exactly this config: nothing to change")
            stamp = f"{int(time.time())} +0000"
            raw = (
                f"tree {tree.hex()}\nparent {parent}\n"
                f"author {identity.name} <{identity.email}> {stamp}\n"
                f"committer {identity.name} <{identity.email}> {stamp}\n\n{message}"
            )
            return self._store(repo, "commit", raw.encode()).hex()
        except (OSError, git.GitError, ValueError) as exc:
            # a full disk, a read-only mirror: one line; a loose object half-written is never referenced by a ref
            raise GitFailure(f"cannot write the commit into the mirror {self.mirror_dir}: {_reason(exc)}") from None

    @staticmethod
    def _store(repo: git.Repo, kind: str, data: bytes) -> bytes:
        return repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def _tree_with(self, repo: git.Repo, tree: bytes | None, parts: list[str], blob: bytes) -> bytes:
        """The id of `tree` with the file at `parts` set to `blob` (new subtrees made as needed)."""
        entries = tree_entries_from_data(repo.odb.stream(tree).read()) if tree else []
        name = parts[0]
        if len(parts) == 1:
            new = (blob, 0o100644, name)
        else:
            sub = next((e[0] for e in entries if e[2] == name and e[1] == 0o040000), None)
            new = (self._tree_with(repo, sub, parts[1:], blob), 0o040000, name)
        entries = [e for e in entries if e[2] != name] + [new]
        entries.sort(key=lambda e: e[2].encode() + (b"/" if e[1] == 0o040000 else b""))  # Git's tree order
        buf = io.BytesIO()
        tree_to_stream(entries, buf.write)
        return self._store(repo, "tree", buf.getvalue())

    def merge_commit(self, main: str, head: str, message: str, identity: Identity) -> str:
        """A merge commit of `head` into `main`, made without a working copy; a conflict raises and writes no ref."""
        proc = self._proc(["merge-tree", "--write-tree", "--name-only", "--no-messages", main, head])
        out = proc.stdout.decode(errors="replace")
        if proc.returncode == 1:
            files = [f for f in out.splitlines()[1:] if f]
            raise Conflict(
                f"merge conflict with {self.main} in {', '.join(files) or 'the config'}: "
                "update the change request's branch first"
            )
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitFailure(f"git merge-tree failed: {redact(lines[-1]) if lines else f'exit {proc.returncode}'}")
        tree = out.splitlines()[0].strip()
        return self.git(
            "commit-tree", tree, "-p", main, "-p", head, "-F", "-", env=identity.env(), input=message
        ).strip()

    def push(self, commit: str, branch: str, expect: str | None) -> None:
        """Point origin's `branch` at `commit` only if it is now at `expect` (None: only if it does not exist).

        A refused push is judged by what origin holds afterwards, not by git's wording (a ref-lock race reads
        "failed to update ref", a stale lease "stale info"): the branch already at `commit` is success (an earlier
        try landed), a branch that exists where none was expected is BranchExists, one that moved is LostRace, and
        anything else (a hook's refusal, a full disk) is GitFailure with git's last line.
        """
        lease = f"--force-with-lease=refs/heads/{branch}:{expect or ''}"
        with self._locked(shared=True):
            proc = self._proc(["push", "--porcelain", "--quiet", lease, "origin", f"{commit}:refs/heads/{branch}"])
        if proc.returncode == 0:
            return
        text = redact((proc.stdout + proc.stderr).decode(errors="replace").strip(), self.remote_url)
        refused = GitFailure(f"push of {branch!r} to origin was rejected: {_push_reason(text)}")
        try:
            now = self.remote_head(branch)
        except GitFailure:
            raise refused from None
        if now == commit:
            return
        if expect is None and now is not None:
            raise BranchExists(f"branch {branch!r} already exists on origin; choose another name")
        if expect is not None and now != expect:
            raise LostRace(f"branch {branch!r} moved on origin while this change was prepared; try again")
        raise refused

    def delete_branch(self, branch: str, expect: str) -> None:
        """Delete origin's `branch` if it still points at `expect`; a branch already gone is fine (idempotent)."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expect}"
        with self._locked(shared=True):
            proc = self._proc(["push", "--quiet", lease, "origin", f":refs/heads/{branch}"])
        if proc.returncode != 0 and self.remote_head(branch) is not None:
            err = redact(proc.stderr.decode(errors="replace").strip(), self.remote_url)
            raise GitFailure(f"could not delete branch {branch!r} on origin: {err}")
        with self._locked():
            self.git("update-ref", "-d", f"refs/remotes/origin/{branch}", check=False)

    def branches(self) -> dict[str, str]:
        """Origin's branches as the mirror last fetched them: name -> commit."""
        prefix = "refs/remotes/origin/"
        out = self.git("for-each-ref", "--format=%(refname)%00%(objectname)", prefix)
        heads = {}
        for line in out.splitlines():
            ref, _, sha = line.partition("\0")
            if ref != prefix + "HEAD":
                heads[ref.removeprefix(prefix)] = sha
        return heads


def _error_line(text: str) -> str:
    """The line of git's output that says what went wrong: its first `fatal:`/`error:` line, else its last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (errors or lines or ["no output"])[0 if errors else -1]


def _push_reason(text: str) -> str:
    """The line of a refused push's output that says why: what the remote said (its errors first), else git's
    verdict on the ref, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and line.strip() != "Done"]
    remote = [line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")]
    remote = [line for line in remote if line]
    errors = [line for line in remote if line.startswith(("fatal:", "error:"))]
    if errors or remote:
        return (errors or remote)[0].removeprefix("fatal:").removeprefix("error:").strip()
    verdicts = [line.split("\t")[-1] for line in lines if line.startswith("!")]
    return verdicts[0] if verdicts else (lines[-1] if lines else "no output")


def _reason(exc: BaseException) -> str:
    """The one line that says why an object write failed (GitPython's errors span several lines)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    raw = exc.args[2] if isinstance(exc, git.GitCommandError) and len(exc.args) > 2 else str(exc)
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[-1].removeprefix("fatal: ")) if lines else type(exc).__name__


def parse_trailers(message: str) -> dict[str, list[str]]:
    """The trailers of a commit message, found by Git's own parser (as `git log`'s `%(trailers)` finds them).

    Only the message's final trailer block counts, never a `Word: value` line inside the description; a `---` line
    does not end a commit message (it does a patch's), hence --no-divider.
    """
    proc = _git_proc(["interpret-trailers", "--parse", "--no-divider"], input=message.encode())
    if proc.returncode != 0:
        raise GitFailure(f"git interpret-trailers failed: {proc.stderr.decode(errors='replace').strip()}")
    return _trailer_dict(proc.stdout.decode())


def _trailer_dict(lines: str) -> dict[str, list[str]]:
    """Git's normalised trailer lines ("Key: value", one per line, unfolded) -> key -> values in order."""
    result: dict[str, list[str]] = {}
    for line in lines.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            result.setdefault(key, []).append(value)
    return result


def _git_proc(
    args: list[str], *, env: dict | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Every `git` subprocess: never prompts for credentials, messages in English for matching."""
    return subprocess.run(["git", *args], input=input, capture_output=True, env=_git_env(env))


def init_origin(path: Path, files: dict[str, str | bytes], identity: Identity, main_branch: str = "main") -> str:
    """Create a bare repository at `path` whose main holds `files` (the `lfops init` seed)."""
    git.Repo.init(path, bare=True, initial_branch=main_branch)
    store = GitStore(path, str(path), main_branch)
    with tempfile.TemporaryDirectory(prefix="lfops-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        for rel, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content  # bytes: the CI's vendored wheel
            blob = store._run(["hash-object", "-w", "--stdin"], input=data).decode().strip()
            store.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
        tree = store.git("write-tree", env=env).strip()
    commit = store.git("commit-tree", tree, "-m", "Initial config repository (lfops init)", env=identity.env()).strip()
    store.git("update-ref", f"refs/heads/{main_branch}", commit)
    return commit
