"""Saving configs to the Git repository, change requests, review policy and merge — on real repos and databases."""

from __future__ import annotations

import subprocess
import threading

import pytest
from sqlalchemy import func, select

from backend.errors import Conflict, GitFailure, LfopsError, PermissionDenied, StoreUnavailable, ValidationFailed
from backend.gitstore import parse_trailers
from backend.settings import Settings
from backend.store.models import AuditEvent, ChangeRequest, Config
from backend.workspace import Workspace
from tests.snapshots import snapshot


def changed(env, **values) -> bytes:
    text = env.example_yaml().decode()
    for key, value in values.items():
        lines = [ln for ln in text.splitlines() if ln.startswith(f"{key}:")]
        assert lines, key
        text = text.replace(lines[0], f"{key}: {value}")
    return text.encode()


def test_save_commits_on_a_new_branch_and_opens_a_change_request(any_db_env):
    env = any_db_env
    alice = env.actor("alice")
    main_before = env.origin_git("rev-parse", "main").strip()
    result = env.ws.changes.save(alice, changed(env, lora_rank=16), "rank16", "Try LoRA rank 16")
    assert result.branch == "alice/rank16"
    assert env.origin_git("rev-parse", "refs/heads/alice/rank16").strip() == result.commit
    assert env.origin_git("rev-parse", "main").strip() == main_before  # main untouched until merge
    assert env.origin_git("log", "-1", "--format=%an <%ae>", result.commit).strip() == "alice <alice@lfops.local>"
    msg = env.origin_git("log", "-1", "--format=%B", result.commit)
    trailers = parse_trailers(msg)
    assert trailers["Config-Hash"] == [result.config_hash]
    assert trailers["Dataset-Version"] == [result.dataset_version]
    assert trailers["Change-Request"] == [str(result.change_request)]
    content = env.origin_git("show", f"{result.commit}:configs/rank16.yaml")
    assert "lora_rank: 16" in content
    view = env.ws.changes.get(alice, result.change_request)
    assert (view.status, view.author, view.head_commit, view.base_commit) == (
        "open",
        "alice",
        result.commit,
        main_before,
    )
    with env.ws.store.session() as s:
        assert s.scalar(select(Config.config_hash).where(Config.commit == result.commit)) == result.config_hash
        actions = s.scalars(select(AuditEvent.action)).all()
    assert "config.save" in actions


def test_review_policy_and_merge_with_trailers(any_db_env):
    env = any_db_env
    alice, rita, admin = env.actor("alice"), env.actor("rita"), env.actor("admin")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=16, learning_rate="5.0e-4"), "tuned", "Tune").change_request

    detail = env.ws.changes.show(rita, cr)
    changes = {row.key: (row.before, row.after) for row in detail.params if row.change != "unchanged"}
    assert changes["lora_rank"][1] == 16 and changes["learning_rate"][1] == 5e-4
    assert "+lora_rank: 16" in detail.yaml_diff

    with pytest.raises(PermissionDenied, match="alice \\(analyst\\) may not approve"):
        env.ws.changes.approve(alice, cr)
    with pytest.raises(Conflict, match="is open, not approved"):
        env.ws.changes.merge(rita, cr)
    env.ws.changes.request_changes(rita, cr, "lower the rank")
    assert env.ws.changes.get(rita, cr).status == "changes_requested"
    env.ws.changes.approve(admin, cr, "fine")
    with pytest.raises(PermissionDenied, match="may not merge"):
        env.ws.changes.merge(alice, cr)
    merged = env.ws.changes.merge(rita, cr)
    assert merged.status == "merged" and merged.merged_by == "rita"
    main = env.origin_git("rev-parse", "main").strip()
    assert main == merged.merged_commit
    parents = env.origin_git("log", "-1", "--format=%P", main).split()
    assert parents[1] == merged.head_commit
    trailers = parse_trailers(env.origin_git("log", "-1", "--format=%B", main))
    assert trailers["Approved-by"] == ["admin <admin@lfops.local>"]
    assert trailers["Change-Request"] == [str(cr)]
    assert "alice/tuned" not in env.origin_git("branch", "--list")  # merged branch removed
    with pytest.raises(Conflict):
        env.ws.changes.approve(rita, cr)


def test_author_cannot_approve_even_as_reviewer(env):
    rita = env.actor("rita")
    cr = env.ws.changes.save(rita, changed(env, lora_rank=4), "mine", "My own change").change_request
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match="cannot review their own"):
        env.ws.changes.approve(rita, cr)
    assert snapshot(env) == before


@pytest.mark.parametrize("name", ["../evil", "a/b", "has space", "x..y", ".hidden", "a~1", "tab\tname", "", "a" * 101])
def test_bad_names_are_refused_and_change_nothing(env, name):
    before = snapshot(env)
    with pytest.raises(LfopsError, match="name: "):
        env.ws.changes.save(env.actor("alice"), env.example_yaml(), name, "msg")
    assert snapshot(env) == before


@pytest.mark.parametrize("branch", ["feature/../x", "a//b", "x.lock", "-start", "a b"])
def test_bad_branch_names_are_refused(env, branch):
    before = snapshot(env)
    with pytest.raises(LfopsError, match="branch"):
        env.ws.changes.save(env.actor("alice"), env.example_yaml(), "good", "msg", branch=branch)
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b"learning_rate: [1\n", "invalid YAML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"- 1\n", "must be a YAML mapping"),
        (b"a: &x 1\nb: *x\n", "anchors"),
    ],
)
def test_malformed_yaml_is_refused_and_changes_nothing(env, doc, expected):
    before = snapshot(env)
    with pytest.raises(ValidationFailed, match=expected):
        env.ws.changes.save(env.actor("alice"), doc, "broken", "msg")
    assert snapshot(env) == before


def test_invalid_config_is_refused_with_every_problem_named(env):
    before = snapshot(env)
    bad = changed(env, learning_rate='"fast"', dataset="nope", stage="xyz")
    with pytest.raises(ValidationFailed) as info:
        env.ws.changes.save(env.actor("alice"), bad, "bad", "msg")
    text = str(info.value)
    assert "learning_rate: must be a number" in text and "stage: must be one of" in text
    assert snapshot(env) == before


def test_existing_branch_is_a_conflict_and_changes_nothing(env):
    alice = env.actor("alice")
    env.ws.changes.save(alice, changed(env, lora_rank=4), "dup", "first")
    before = snapshot(env)
    with pytest.raises(Conflict, match="already has an open change request"):
        env.ws.changes.save(alice, changed(env, lora_rank=2), "dup", "second")
    # a branch someone pushed directly, unknown to the database
    head = env.origin_git("rev-parse", "main").strip()
    env.origin_git("update-ref", "refs/heads/alice/other", head)
    before = snapshot(env)
    with pytest.raises(Conflict, match="branch 'alice/other' already exists on origin"):
        env.ws.changes.save(alice, changed(env, lora_rank=2), "other", "third")
    assert snapshot(env) == before


def test_remote_rejecting_the_push_changes_nothing(env):
    hook = env.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = snapshot(env)
    with pytest.raises(GitFailure, match="rejected"):
        env.ws.changes.save(env.actor("alice"), changed(env, lora_rank=4), "frozen", "msg")
    assert snapshot(env) == before


def test_unreachable_database_changes_nothing_on_the_remote(env, tmp_path):
    refs = env.origin_git("for-each-ref")
    url = "postgresql+psycopg://user:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreUnavailable) as info:
        Workspace(Settings(**{**env.ws.settings.__dict__, "database_url": url})).store.check()
    assert "unreachable" in str(info.value) and "s3cret" not in str(info.value)
    # the database vanishes after login: the save must not push
    alice = env.actor("alice")
    db = env.ws.settings.workspace / "lfops.db"
    env.ws.store.dispose()
    db.rename(tmp_path / "moved.db")
    db.mkdir()  # a directory where the file was: SQLite cannot open it
    with pytest.raises(StoreUnavailable):
        env.ws.changes.save(alice, changed(env, lora_rank=4), "nodb", "msg")
    assert env.origin_git("for-each-ref") == refs


def test_merge_conflict_is_clear_and_changes_nothing(env):
    alice, bob_like, rita = env.actor("alice"), env.actor("admin"), env.actor("rita")
    first = env.ws.changes.save(alice, changed(env, lora_rank=4), "shared", "rank 4", branch="alice/a").change_request
    second = env.ws.changes.save(
        bob_like, changed(env, lora_rank=32), "shared", "rank 32", branch="admin/b"
    ).change_request
    env.ws.changes.approve(rita, first)
    env.ws.changes.approve(rita, second)
    env.ws.changes.merge(rita, first)
    before = snapshot(env)
    with pytest.raises(Conflict, match="merge conflict with main in configs/shared.yaml"):
        env.ws.changes.merge(rita, second)
    assert snapshot(env) == before


def test_sixteen_concurrent_saves_all_land(env):
    alice = env.actor("alice")
    base = changed(env, lora_rank=8)
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            env.ws.changes.save(alice, base.replace(b"seed: 42", f"seed: {i}".encode()), f"c{i}", f"save {i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    branches = [b for b in env.origin_git("for-each-ref", "--format=%(refname:short)", "refs/heads/alice").split()]
    assert sorted(branches) == sorted(f"alice/c{i}" for i in range(16))
    with env.ws.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ChangeRequest)) == 16
    for i in range(16):  # nothing mixed: each branch holds exactly its own config
        assert f"seed: {i}\n" in env.origin_git("show", f"alice/c{i}:configs/c{i}.yaml")


def test_saves_from_two_processes_do_not_collide(env):
    script = (
        "import sys; from backend.workspace import Workspace; from backend.settings import Settings;"
        "ws = Workspace(Settings.from_env(sys.argv[1])); a = ws.login('alice', sys.argv[2]);"
        "data = ws.repo.read(ws.repo.sync_main(), 'configs/example.yaml');"
        "[ws.changes.save(a, data.replace(b'seed: 42', b'seed: 1%s%d' % (sys.argv[3].encode(), i)),"
        " f'p{sys.argv[3]}{i}', 'msg') for i in range(4)]"
    )
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(env.ws.settings.workspace), env.passwords["alice"], tag])
        for tag in "12"
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(env.origin_git("for-each-ref", "refs/heads/alice").splitlines()) == 8


def test_any_git_url_works_as_origin(template_workspace, tmp_path):
    from tests.workspace_fixtures import make_env

    env = make_env(template_workspace, tmp_path / "ws")
    url = "file://" + str(env.origin)
    subprocess.run(["git", "-C", str(env.ws.settings.mirror_dir), "remote", "set-url", "origin", url], check=True)
    ws = Workspace(Settings(**{**env.ws.settings.__dict__, "repo_url": url}))
    result = ws.changes.save(env.actor("alice"), changed(env, lora_rank=4), "viafile", "msg")
    assert env.origin_git("rev-parse", "alice/viafile").strip() == result.commit


def test_same_config_as_main_is_refused(env):
    before = snapshot(env)
    with pytest.raises(Conflict, match="already exactly this config"):
        env.ws.changes.save(env.actor("alice"), env.example_yaml(), "example", "no change")
    assert snapshot(env) == before


def test_close_removes_the_branch(env):
    alice = env.actor("alice")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=4), "closeme", "msg").change_request
    with pytest.raises(PermissionDenied):
        env.ws.changes.close(_other_analyst(env), cr)
    env.ws.changes.close(alice, cr)
    assert env.ws.changes.get(alice, cr).status == "closed"
    assert "alice/closeme" not in env.origin_git("branch", "--list")


def _other_analyst(env):
    from backend.auth import add_user

    with env.ws.store.session() as s:
        add_user(s, "bob", "analyst", "bob-password")
    return env.ws.login("bob", "bob-password")


def test_status_filter_and_labels_come_from_one_enum(env):
    from backend.review_status import ChangeRequestStatus, ReviewDecision

    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=4), "labelled", "msg").change_request
    view = env.ws.changes.request_changes(rita, cr, "smaller steps")
    assert view.status == "changes_requested" and view.status.label == "changes requested"
    assert view.reviews[0].decision.label == "changes requested" and view.reviews[0].counts is False
    assert [v.id for v in env.ws.changes.list(alice, status="changes_requested")] == [cr]
    assert env.ws.changes.list(alice, status=ChangeRequestStatus.OPEN) == []
    with pytest.raises(LfopsError, match="status: 'pending' must be one of open, changes_requested, approved"):
        env.ws.changes.list(alice, status="pending")
    assert {d.status for d in ReviewDecision} == {ChangeRequestStatus.APPROVED, ChangeRequestStatus.CHANGES_REQUESTED}
