"""The app's container image: built with buildah from the Dockerfile and smoke-tested with podman (scripts/image.sh),
and what the image relies on in the app: Debian bookworm's Python 3.11.2 (no tar filters) and a first admin whose
password comes from a secret file instead of the log.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from backend.errors import GitFailure
from backend.gitstore import _data_member, init_origin
from backend.settings import Settings
from backend.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SH = ROOT / "scripts" / "image.sh"
REQUIRE_SERVICES = os.environ.get("LFOPS_REQUIRE_SERVICES") == "1"  # CI: a missing buildah fails instead of skipping


# ---- Python 3.11.2 (Debian bookworm, the locally made base) has no tarfile.data_filter --------------------------


@pytest.fixture
def python_without_tar_filters(monkeypatch):
    """The interpreter as bookworm's 3.11.2 is: tarfile without `data_filter` (extractall has no `filter=` there)."""
    monkeypatch.delattr(tarfile, "data_filter")


def _origin_with_link(tmp_path: Path) -> Path:
    from backend.gitstore import Identity

    origin = tmp_path / "origin.git"
    init_origin(origin, {"data/a.json": b"{}", "data/sub/b.txt": b"b", "README.md": b"r"}, Identity("t", "t@x"), "main")
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    (work / "data" / "link").symlink_to("a.json")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "link"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    return origin


def test_extract_works_without_tar_filters(tmp_path, python_without_tar_filters):
    from backend.gitstore import GitStore

    repo = GitStore(tmp_path / "mirror.git", str(_origin_with_link(tmp_path)), "main")
    repo.ensure_mirror()
    main = repo.sync_main()
    everything = tmp_path / "all"
    repo.extract(main, everything)
    assert (everything / "data" / "sub" / "b.txt").read_text() == "b"
    assert (everything / "data" / "link").is_symlink()  # a link inside the tree stays, as tar's data filter allows
    data_only = tmp_path / "data"
    repo.extract(main, data_only, "data", regular_files_only=True)
    assert sorted(p.relative_to(data_only).as_posix() for p in data_only.rglob("*")) == ["a.json", "sub", "sub/b.txt"]
    with pytest.raises(GitFailure, match="git archive"):
        repo.extract("0" * 40, tmp_path / "missing")


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("/etc/passwd"), "outside the destination"),
        (_member("../escape.txt"), "outside the destination"),
        (_member("data/../../escape.txt"), "outside the destination"),
        (_member("data/l", tarfile.SYMTYPE, "/etc/passwd"), "links outside"),
        (_member("data/l", tarfile.SYMTYPE, "../../etc/passwd"), "links outside"),
        (_member("data/h", tarfile.LNKTYPE, "../outside"), "links outside"),
        (_member("data/dev", tarfile.CHRTYPE), "special file"),
        (_member("data/fifo", tarfile.FIFOTYPE), "special file"),
    ],
)
def test_the_fallback_refuses_what_the_data_filter_refuses(tmp_path, member, reason):
    with pytest.raises(tarfile.TarError, match=reason):
        _data_member(member, tmp_path, regular_files_only=False)


def test_the_fallback_drops_links_when_asked_and_strips_dangerous_mode_bits(tmp_path):
    assert _data_member(_member("data/l", tarfile.SYMTYPE, "a.json"), tmp_path, regular_files_only=True) is False
    assert _data_member(_member("data/l", tarfile.SYMTYPE, "a.json"), tmp_path, regular_files_only=False) is True
    setuid = _member("data/run.sh", mode=0o4777)
    assert _data_member(setuid, tmp_path, regular_files_only=True) is True
    assert setuid.mode == 0o755
    # and a real archive goes through it as the app would unpack it
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"x"
        info = _member("d/f.txt", mode=0o666)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r|") as tar:
        for m in tar:
            if _data_member(m, tmp_path, regular_files_only=True):
                tar.extract(m, tmp_path)  # noqa: S202 - checked by _data_member
    assert (tmp_path / "d" / "f.txt").stat().st_mode & 0o777 == 0o644


# ---- the first admin from a Secret: no password in the log --------------------------------------------------------


def test_the_first_admin_gets_the_password_from_the_secrets_directory(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "LFOPS_ADMIN_PASSWORD").write_text("correct horse battery")
    monkeypatch.setenv("LFOPS_SECRETS_DIR", str(secrets))
    monkeypatch.delenv("LFOPS_ADMIN_PASSWORD", raising=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "--workspace", str(tmp_path / "ws"), "init"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "correct horse battery" not in result.stdout + result.stderr
    assert "users created: admin (password from LFOPS_ADMIN_PASSWORD)" in result.stdout
    ws = Workspace(Settings.from_env(tmp_path / "ws"))
    assert ws.login("admin", "correct horse battery").name == "admin"
    with pytest.raises(Exception, match="password"):
        ws.login("alice", "anything")  # no demo users beside a real admin
    assert "correct horse battery" not in repr(ws.settings)


def test_without_an_admin_password_init_still_shows_the_generated_ones_once(tmp_path, monkeypatch):
    monkeypatch.delenv("LFOPS_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("LFOPS_SECRETS_DIR", str(tmp_path))
    result = Workspace(Settings.from_env(tmp_path / "ws")).init(with_model=False)
    assert set(result.credentials) == set(result.users) == {"admin", "alice", "rita"}


# ---- the image itself -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_image_builds_and_passes_its_smoke_test(capsys):
    """scripts/image.sh all: buildah builds the Dockerfile (on a base made from Debian packages when no registry
    answers), then podman runs it: uid 10001, read-only root, health endpoint, CLI sign-in and merge, SIGTERM."""
    if shutil.which("buildah") is None and not REQUIRE_SERVICES:
        pytest.skip("buildah not installed (scripts/image.sh installs it; CI requires it)")
    if os.geteuid() != 0:
        pytest.skip("building and running images here needs root (rootless storage is not set up)")
    result = subprocess.run(
        ["bash", str(IMAGE_SH), "all"], capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("image ", "ok ", "FAIL", "smoke"))]
    with capsys.disabled():
        print("\n" + "\n".join(summary))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert any(line.startswith("smoke passed") for line in summary)
