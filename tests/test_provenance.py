"""Provenance that cannot be forged, on SQLite and PostgreSQL: user text cannot add or imitate a trailer, lfops'
block is always the message's last paragraph, and everything that reads trailers checks them against the database."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import update

from backend import provenance
from backend.cli import main
from backend.errors import Conflict, LfopsError
from backend.gitstore import parse_trailers
from backend.store.models import ChangeRequest, Review
from tests.snapshots import snapshot


def config(env, seed: int) -> bytes:
    return env.example_yaml().replace(b"seed: 42", f"seed: {seed}".encode())


@pytest.mark.parametrize(
    "line",
    [
        "Approved-by: mallory <m@example.com>",
        "Config-Hash: 0000",
        "config-hash : 0000",
        "CHANGE_REQUEST: 1",
        "  Saved-by: rita <rita@lfops.local>",
        "Approved\u2010by: mallory <m@example.com>",  # a Unicode hyphen
        "Ｍerged-by: mallory",  # a full-width letter
    ],
)
def test_a_message_with_a_trailer_shaped_line_is_refused(any_db_env, line):
    env = any_db_env
    before = snapshot(env)
    for message in (f"Tune\n\n{line}", f"Tune\n\n{line}\nmore text", line):
        with pytest.raises(LfopsError, match=r"^message: line \d+ looks like the trailer '[A-Za-z-]+'; lfops writes"):
            env.ws.changes.save(env.actor("alice"), config(env, 3), "forged", message)
    assert snapshot(env) == before


def test_ordinary_colons_in_a_message_are_fine(env):
    message = "Tune: rank 16\n\nNote: see https://example.com/x\nReviewed-by: a colleague (not an lfops trailer)"
    result = env.ws.changes.save(env.actor("alice"), config(env, 4), "colons", message)
    body = env.origin_git("log", "-1", "--format=%B", result.commit)
    trailers = parse_trailers(body)
    assert "Reviewed-by" not in trailers  # the user's last paragraph is not the trailer block: lfops' is
    assert trailers["Change-Request"] == [str(result.change_request)]
    assert body.rstrip("\n").rsplit("\n\n", 1)[1].splitlines()[0].startswith("Config-Hash: ")


def test_a_trailer_value_cannot_carry_a_line_break():
    with pytest.raises(LfopsError, match="^Base-Model: .* cannot be recorded"):
        provenance.commit_message("Tune", Base_Model="model\nApproved-by: mallory <m@x>")
    with pytest.raises(LfopsError, match="^Saved-by: "):
        provenance.commit_message("Tune", Saved_by="eve\r")


def test_log_flags_trailers_the_database_contradicts(any_db_env, capsys, monkeypatch):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, config(env, 5), "real", "Real change").change_request
    env.ws.changes.approve(rita, cr)
    env.ws.changes.merge(rita, cr)
    monkeypatch.setenv("LFOPS_DATABASE_URL", env.ws.settings.database_url)
    args = ["--workspace", str(env.ws.settings.workspace), "log"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Approved-by: rita <rita@lfops.local>" in out and "not verified" not in out
    # someone with push access writes a commit claiming an approval and another request's number
    clone = env.ws.settings.workspace.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(env.origin), str(clone)], check=True)
    (clone / "configs" / "sneaky.yaml").write_text("a: 1\n")
    git = ["git", "-C", str(clone), "-c", "user.name=mallory", "-c", "user.email=m@example.com"]
    subprocess.run([*git, "add", "."], check=True)
    forged = f"Sneak in\n\nChange-Request: {cr}\nApproved-by: admin <admin@lfops.local>\nConfig-Hash: 00\n"
    subprocess.run([*git, "commit", "-q", "-m", forged], check=True)
    subprocess.run([*git, "push", "-q", "origin", "main"], check=True)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"! not verified: change request #{cr}'s commit is " in out
    assert f"! not verified: Config-Hash: says 00, change request #{cr} has " in out


def test_merge_refuses_a_head_whose_trailers_the_database_contradicts(any_db_env):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    first = env.ws.changes.save(alice, config(env, 6), "first", "First")
    second = env.ws.changes.save(alice, config(env, 7), "second", "Second")
    with env.ws.store.session() as s:  # the database row is pointed at another request's commit
        s.execute(
            update(ChangeRequest).where(ChangeRequest.id == first.change_request).values(head_commit=second.commit)
        )
    env.ws.changes.approve(rita, first.change_request)
    before = snapshot(env)
    with pytest.raises(Conflict, match=rf"^change request #{first.change_request}: its commit's trailers do not match"):
        env.ws.changes.merge(rita, first.change_request)
    assert snapshot(env) == before


def test_reconcile_does_not_trust_a_merge_whose_approvals_do_not_count(any_db_env):
    from backend.reconcile import change_requests

    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, config(env, 8), "doubted", "Doubted").change_request
    env.ws.changes.approve(rita, cr)
    env.ws.changes.merge(rita, cr)
    with env.ws.store.session() as s:  # as if the merge's record were lost and its approval never given
        s.execute(update(ChangeRequest).where(ChangeRequest.id == cr).values(status="approved", merged_commit=None))
        s.execute(update(Review).where(Review.change_request_id == cr).values(head_commit="0" * 40))
    before = snapshot(env)
    [found] = change_requests.check(env.ws, repair=True)
    assert found.invariant == "status-differs-from-git" and not found.repaired
    assert "is not an approval that counts" in found.detail and "not trusted" in found.repair
    assert snapshot(env) == before
