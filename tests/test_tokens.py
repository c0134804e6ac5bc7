"""Personal API tokens in the backend and the CLI: shown once, stored hashed, scoped, expiring, revocable by their
owner or an admin; refused tokens audited without the token."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, update

from backend.auth import READ, WRITE, require
from backend.cli import main as lfops
from backend.errors import AuthenticationFailed, LfopsError, NotFound, PermissionDenied
from backend.store.models import ApiToken, AuditEvent, Base, User, utcnow


def audit_rows(ws, action: str) -> list[AuditEvent]:
    with ws.store.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def secret_of(token: str) -> str:
    """The secret part of `lfops_<key id>_<secret>` (the secret itself may hold '_')."""
    return token.split("_", 2)[2]


def everything_stored(ws) -> str:
    """Every value of every token and audit row, as text: where a token must never appear."""
    with ws.store.session() as s:
        rows = [vars(r) for r in s.scalars(select(ApiToken))] + [vars(r) for r in s.scalars(select(AuditEvent))]
    return repr(rows)


def test_a_token_is_shown_once_and_stored_only_as_its_sha256(env):
    alice = env.actor("alice")
    new = env.ws.tokens.create(alice, "notebook", scope=READ, expires_in_days=7)
    assert new.token.startswith(f"lfops_{new.view.key_id}_") and len(new.token) == len("lfops_") + 12 + 1 + 43
    with env.ws.store.session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.id == new.view.id))
        assert row.secret_hash == hashlib.sha256(new.token.encode()).hexdigest()
    secret = secret_of(new.token)
    assert secret not in everything_stored(env.ws) and new.token not in everything_stored(env.ws)
    assert new.view.state == "active" and new.view.scope == "read" and new.view.owner == "alice"
    assert timedelta(days=6, hours=23) < new.view.expires_at - utcnow() <= timedelta(days=7)
    again = env.ws.tokens.authenticate(new.token, where="test")
    assert (again.name, again.role, again.scope) == ("alice", "analyst", READ)
    assert [e.subject for e in audit_rows(env.ws, "token.create")] == [f"token:{new.view.key_id}"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x" * 101, "scope": "read"}, "name"),
        ({"name": "ci", "scope": "admin"}, "scope"),
        ({"name": "ci", "scope": "read", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ci", "scope": "read", "expires_in_days": 366}, "expires_in_days"),
    ],
)
def test_bad_token_requests_name_the_field_and_create_nothing(env, kwargs, field):
    with pytest.raises(LfopsError) as caught:
        env.ws.tokens.create(env.actor("alice"), **kwargs)
    assert caught.value.field == field
    assert env.ws.tokens.list(env.actor("alice")) == []


def test_a_read_token_reads_but_the_backend_refuses_every_change(env):
    token = env.ws.tokens.create(env.actor("rita"), "ro").token
    rita = env.ws.tokens.authenticate(token)
    assert require(rita, "read") is rita
    with pytest.raises(PermissionDenied, match="rita's credentials are read-only; to approve or request changes") as e:
        require(rita, "review.decide")
    assert e.value.field == "scope"
    with pytest.raises(PermissionDenied):  # a read token cannot mint a write token either
        env.ws.tokens.create(rita, "escalate", scope=WRITE)
    writer = env.ws.tokens.authenticate(env.ws.tokens.create(env.actor("rita"), "rw", scope=WRITE).token)
    assert require(writer, "review.decide").scope == WRITE
    analyst = env.ws.tokens.authenticate(env.ws.tokens.create(env.actor("alice"), "rw", scope=WRITE).token)
    with pytest.raises(PermissionDenied, match=r"alice \(analyst\) may not approve"):  # the role still rules
        require(analyst, "review.decide")


def _expire(ws, token_id: int) -> None:
    with ws.store.session() as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(expires_at=utcnow() - timedelta(seconds=1)))


def _deactivate(ws, name: str) -> None:
    with ws.store.session() as s:
        s.execute(update(User).where(User.name == name).values(active=False))


def test_refused_tokens_are_audited_without_the_token(env):
    tokens = env.ws.tokens
    good = tokens.create(env.actor("alice"), "good")
    revoked = tokens.create(env.actor("alice"), "revoked")
    tokens.revoke(env.actor("alice"), revoked.view.id)
    expired = tokens.create(env.actor("alice"), "expired")
    _expire(env.ws, expired.view.id)
    rita = tokens.create(env.actor("rita"), "rita's")
    _deactivate(env.ws, "rita")
    wrong_secret = good.token[:-4] + ("AAAA" if not good.token.endswith("AAAA") else "BBBB")
    unknown = "lfops_000000000000_" + secret_of(good.token)
    cases = [
        ("", "malformed token", "token:-", None),
        ("Basic YWxpY2U6cHc=", "malformed token", "token:-", None),
        (good.token[:-1], "malformed token", f"token:{good.view.key_id}", None),
        (unknown, "unknown token", "token:000000000000", None),
        (wrong_secret, "wrong secret", f"token:{good.view.key_id}", "alice"),
        (revoked.token, "revoked token", f"token:{revoked.view.key_id}", "alice"),
        (expired.token, "expired token", f"token:{expired.view.key_id}", "alice"),
        (rita.token, "the token's user is deactivated", f"token:{rita.view.key_id}", "rita"),
    ]
    for token, reason, subject, owner in cases:
        with pytest.raises(AuthenticationFailed, match=f"^token: {reason}$"):
            tokens.authenticate(token, where="GET /api/v1/runs")
        last = audit_rows(env.ws, "api.auth_failed")[-1]
        expected = {"reason": reason, "where": "GET /api/v1/runs"} | ({"owner": owner} if owner else {})
        assert (last.actor, last.subject, last.detail) == ("-", subject, expected)
    stored = everything_stored(env.ws)
    for secret_part in {secret_of(t) for t, *_ in cases if t.startswith("lfops_")}:
        assert secret_part not in stored
    assert tokens.authenticate(good.token).name == "alice"  # the good one still works


def test_owners_revoke_their_own_tokens_admins_anyone_s(env):
    tokens = env.ws.tokens
    alice, rita, admin = env.actor("alice"), env.actor("rita"), env.actor("admin")
    mine = tokens.create(alice, "mine")
    with pytest.raises(NotFound, match=f"token #{mine.view.id} does not exist"):  # rita cannot even see it
        tokens.revoke(rita, mine.view.id)
    assert tokens.authenticate(mine.token).name == "alice"
    view = tokens.revoke(admin, mine.view.id)
    assert (view.state, view.revoked_by) == ("revoked", "admin")
    with pytest.raises(AuthenticationFailed, match="revoked token"):
        tokens.authenticate(mine.token)
    own = tokens.create(alice, "own")
    assert tokens.revoke(alice, own.view.id).revoked_by == "alice"
    assert [e.actor for e in audit_rows(env.ws, "token.revoke")] == ["admin", "alice"]


def test_lists_show_one_s_own_tokens_and_admins_everyone_s(env):
    tokens = env.ws.tokens
    for name in ("a1", "a2", "a3"):
        tokens.create(env.actor("alice"), name)
    tokens.create(env.actor("rita"), "r1")
    assert [v.name for v in tokens.list(env.actor("alice"))] == ["a3", "a2", "a1"]
    assert [v.name for v in tokens.list(env.actor("alice"), limit=2, offset=1)] == ["a2", "a1"]
    assert [v.name for v in tokens.list(env.actor("admin"), everyone=True)] == ["r1", "a3", "a2", "a1"]
    with pytest.raises(PermissionDenied, match=r"alice \(analyst\) may not list everyone's tokens"):
        tokens.list(env.actor("alice"), everyone=True)
    admin_read = tokens.authenticate(tokens.create(env.actor("admin"), "ro").token)
    assert len(tokens.list(admin_read, everyone=True)) == 5


def test_the_migration_makes_the_api_tokens_table_the_model_describes(env):
    with env.ws.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "api_tokens" in repr(d)] == []


def test_cli_token_create_list_revoke(env, capsys, monkeypatch):
    base = ["--workspace", str(env.ws.settings.workspace)]
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    assert lfops([*base, "--user", "alice", "token", "create", "ci", "--scope", "write", "--days", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("token #1 'ci' of alice: scope write, expires ")
    token = out[-1]
    assert env.ws.tokens.authenticate(token).scope == WRITE
    assert lfops([*base, "--user", "alice", "token", "create", "x", "--scope", "admin"]) == 2
    assert "error: scope: 'admin' must be one of read, write" in capsys.readouterr().err
    assert lfops([*base, "--user", "alice", "token", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"lfops_{token.split('_')[1]}_" in listing and " write " in listing and " active " in listing
    assert secret_of(token) not in listing
    with pytest.raises(SystemExit):  # argparse refuses a page size out of range
        lfops([*base, "--user", "alice", "token", "list", "--limit", "0"])
    assert "--limit: must be from 1 to 200, got 0" in capsys.readouterr().err
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["admin"])
    assert lfops([*base, "--user", "admin", "token", "revoke", "1"]) == 0
    assert capsys.readouterr().out.strip() == "token #1 'ci' of alice revoked by admin"
    assert lfops([*base, "--user", "admin", "token", "list", "--all"]) == 0
    assert " revoked " in capsys.readouterr().out
