"""User administration, the audit log's search and sign-in sessions in the store, on SQLite and PostgreSQL.

The last-admin rule (demote, deactivate, delete), a deactivated user's sign-in, session and tokens refused, sessions
that outlive the process that made them, and bad input: one line naming the field, nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend import audit
from backend.audit import AuditFilter
from backend.errors import AuthenticationFailed, Conflict, LfopsError, NotFound, PermissionDenied
from backend.sessions import WebSessions
from backend.workspace import Workspace


def _snapshot(env) -> list[tuple]:
    """Every user as stored, and the audit log's length: what 'nothing changed' compares."""
    ws, admin = env.ws, env.actor("admin")
    users = [(u.name, u.role, u.active) for u in ws.users.list(admin)]
    with ws.store.session() as s:
        events = len(audit.recent(s, limit=100_000))
    return [*users, ("audit", events)]


def test_last_admin_cannot_be_demoted_deactivated_or_deleted(any_db_env):
    ws, admin = any_db_env.ws, any_db_env.actor("admin")
    before = _snapshot(any_db_env)
    for change in (
        lambda: ws.users.set_role(admin, "admin", "reviewer"),
        lambda: ws.users.set_active(admin, "admin", False),
        lambda: ws.users.delete(admin, "admin"),
    ):
        with pytest.raises(Conflict, match=r"^user: admin is the last active admin") as err:
            change()
        assert err.value.field == "user"
    assert _snapshot(any_db_env) == before

    # with a second admin, the first may step down; then the second is the last one
    ws.users.set_role(admin, "rita", "admin")
    assert ws.users.set_role(admin, "admin", "analyst").role == "analyst"
    rita = any_db_env.actor("rita")
    with pytest.raises(Conflict, match="rita is the last active admin"):
        ws.users.set_active(rita, "rita", False)
    # a deactivated admin does not count
    ws.users.set_role(rita, "admin", "admin")
    ws.users.set_active(rita, "admin", False)
    with pytest.raises(Conflict, match="rita is the last active admin"):
        ws.users.set_role(rita, "rita", "analyst")


def test_deactivated_user_cannot_sign_in_and_their_token_and_sessions_stop(any_db_env):
    ws, admin = any_db_env.ws, any_db_env.actor("admin")
    alice = any_db_env.actor("alice")
    token = ws.tokens.create(alice, "ci", scope="read").token
    ws.sessions.open("browser-cookie-alice", "alice")
    assert ws.tokens.authenticate(token).name == "alice"
    assert ws.sessions.user_of("browser-cookie-alice") == "alice"

    ws.users.set_active(admin, "alice", False)
    with pytest.raises(AuthenticationFailed):
        ws.login("alice", any_db_env.passwords["alice"])
    with pytest.raises(AuthenticationFailed, match="deactivated"):
        ws.tokens.authenticate(token)
    assert ws.sessions.user_of("browser-cookie-alice") is None
    ws.sessions.open("browser-cookie-alice-2", "alice")  # a sign-in that raced the deactivation gets nothing
    assert ws.sessions.user_of("browser-cookie-alice-2") is None

    # reactivated: the password and the token work again, the ended session stays ended
    ws.users.set_active(admin, "alice", True)
    assert ws.login("alice", any_db_env.passwords["alice"]).name == "alice"
    assert ws.tokens.authenticate(token).name == "alice"
    assert ws.sessions.user_of("browser-cookie-alice") is None


def test_password_reset_ends_sessions_and_only_the_new_password_works(any_db_env):
    ws, admin = any_db_env.ws, any_db_env.actor("admin")
    ws.sessions.open("cookie-rita", "rita")
    new = ws.users.reset_password(admin, "rita")
    assert ws.sessions.user_of("cookie-rita") is None
    assert ws.login("rita", new).name == "rita"
    with pytest.raises(AuthenticationFailed):
        ws.login("rita", any_db_env.passwords["rita"])
    with ws.store.session() as s:
        event = audit.recent(s, limit=1)[0]
    assert (event.action, event.subject, event.detail["sessions_ended"]) == ("user.password_reset", "user:rita", 1)
    assert new not in str(event.detail)


def test_sessions_survive_a_new_process_and_expire(any_db_env):
    ws = any_db_env.ws
    ws.sessions.open("cookie-1", "alice")
    # another process (a restarted app, the other replica): a new Workspace on the same settings
    other = Workspace(ws.settings)
    assert other.sessions.user_of("cookie-1") == "alice"
    other.sessions.close("cookie-1")
    assert ws.sessions.user_of("cookie-1") is None
    short = WebSessions(ws.store, ttl=timedelta(seconds=-1))  # made already expired
    short.open("cookie-2", "alice")
    assert ws.sessions.user_of("cookie-2") is None
    assert ws.sessions.user_of("never-issued") is None and ws.sessions.user_of("") is None
    with ws.store.session() as s:  # only the hash is stored
        from backend.store.models import WebSession

        assert all("cookie" not in row.id_hash for row in s.query(WebSession))
    other.store.dispose()


def test_user_admin_needs_an_admin_and_bad_input_changes_nothing(any_db_env):
    ws, admin, alice = any_db_env.ws, any_db_env.actor("admin"), any_db_env.actor("alice")
    before = _snapshot(any_db_env)
    with pytest.raises(PermissionDenied, match="alice \\(analyst\\) may not manage users"):
        ws.users.set_role(alice, "alice", "admin")
    with pytest.raises(LfopsError, match=r"^role: 'owner' must be one of analyst, reviewer, admin$") as err:
        ws.users.set_role(admin, "alice", "owner")
    assert err.value.field == "role"
    with pytest.raises(LfopsError, match="^role: 'owner'"):
        ws.users.add(admin, "bob", "owner")
    with pytest.raises(LfopsError, match="^name: "):
        ws.users.add(admin, "Bob Smith", "analyst")
    with pytest.raises(NotFound, match="^user: 'nobody' does not exist"):
        ws.users.set_active(admin, "nobody", False)
    with pytest.raises(LfopsError, match="^password: must be at least 8 characters"):
        ws.users.reset_password(admin, "alice", "short")
    assert _snapshot(any_db_env) == before
    assert ws.login("alice", any_db_env.passwords["alice"])


def test_delete_only_a_user_without_history(any_db_env):
    ws, admin = any_db_env.ws, any_db_env.actor("admin")
    view, password = ws.users.add(admin, "typo", "analyst")
    assert ws.login("typo", password).name == "typo"
    ws.tokens.create(ws.login("typo", password), "t")
    ws.users.delete(admin, "typo")
    assert "typo" not in [u.name for u in ws.users.list(admin)]
    with pytest.raises(AuthenticationFailed):
        ws.login("typo", password)


def test_audit_search_filters_and_pages(any_db_env):
    ws, admin = any_db_env.ws, any_db_env.actor("admin")
    start = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(5):
        ws.users.add(admin, f"user{n}", "analyst")
    ws.users.set_role(admin, "user1", "reviewer")
    alice = any_db_env.actor("alice")
    ws.tokens.create(alice, "mine")

    first = audit.search(ws.store, admin, AuditFilter(action="user.add", since=start), limit=2)
    assert [e.subject for e in first.items] == ["user:user4", "user:user3"] and first.next_offset == 2
    last = audit.search(ws.store, admin, AuditFilter(action="user.add", since=start), limit=2, offset=4)
    assert [e.subject for e in last.items] == ["user:user0"] and last.next_offset is None
    prefix = audit.search(ws.store, admin, AuditFilter(action="user.", since=start))
    assert [e.action for e in prefix.items][:1] == ["user.role"] and len(prefix.items) == 6
    by_actor = audit.search(ws.store, admin, AuditFilter(actor="alice", since=start))
    assert [(e.actor, e.action) for e in by_actor.items] == [("alice", "token.create")]
    subject = audit.search(ws.store, admin, AuditFilter(subject="user:user1"))
    assert [e.action for e in subject.items] == ["user.role", "user.add"]
    assert subject.items[0].detail == {"role": "reviewer", "was": "analyst"}
    future = audit.search(ws.store, admin, AuditFilter(since=datetime.now(UTC) + timedelta(hours=1)))
    assert future.items == []
    before_start = audit.search(ws.store, admin, AuditFilter(action="user.add", until=start))
    assert before_start.items == []

    with pytest.raises(PermissionDenied, match="may not read the audit log"):
        audit.search(ws.store, alice, AuditFilter())
    with pytest.raises(LfopsError, match=r"^offset: must be from 0 to 1000000, got -1$"):
        audit.search(ws.store, admin, AuditFilter(), offset=-1)
    with pytest.raises(LfopsError, match=r"^limit: must be from 1 to 200, got 500$"):
        audit.search(ws.store, admin, AuditFilter(), limit=500)
    with pytest.raises(LfopsError, match=r"^since: must be before until$"):
        audit.search(ws.store, admin, AuditFilter(since=start, until=start))
    with pytest.raises(LfopsError, match=r"^since: give a time zone"):
        audit.search(ws.store, admin, AuditFilter(since=datetime(2026, 1, 1)))


# ---- the same through the CLI and the API ------------------------------------------------------------------------


def test_cli_user_admin_and_audit_list(env):
    from tests.helpers import run_lfops

    ws, pw = env.ws.settings.workspace, env.passwords

    def lfops(*args: str, stdin: str | None = None):
        return run_lfops(*args, workspace=ws, user="admin", password=pw["admin"], stdin=stdin)

    refused = lfops("user", "role", "admin", "analyst")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("user: admin is the last active admin; make another user admin first")
    unknown = lfops("user", "role", "alice", "owner")
    assert unknown.returncode == 2 and "role: 'owner' must be one of analyst, reviewer, admin" in unknown.stderr
    assert lfops("user", "deactivate", "alice").returncode == 0
    assert run_lfops("runs", "list", workspace=ws, user="alice", password=pw["alice"]).returncode == 2
    reset = lfops("user", "reset-password", "rita", "--password-stdin", stdin="rita-new-password\n")
    assert reset.returncode == 0 and "rita-new-password" not in reset.stdout

    listed = lfops("audit", "list", "--action", "user.", "--since", "2020-01-01", "--json")
    assert listed.returncode == 0, listed.stderr
    import json

    events = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["action"], e["subject"]) for e in events] == [
        ("user.password_reset", "user:rita"),
        ("user.deactivate", "user:alice"),
    ]
    page = lfops("audit", "list", "--actor", "admin", "--limit", "1")
    assert page.returncode == 0 and "(more: --offset 1)" in page.stderr
    assert len(page.stdout.splitlines()) == 2  # the header and one event
    bad = lfops("audit", "list", "--offset", "-1")
    assert bad.returncode == 2 and "--offset: must be from 0 to 1000000, got -1" in bad.stderr
    bad_time = lfops("audit", "list", "--since", "yesterday")
    assert bad_time.returncode == 2 and "'yesterday' is not a time" in bad_time.stderr
    assert run_lfops("audit", "list", workspace=ws, user="rita", password="rita-new-password").returncode == 2


def test_api_admin_routes(env):
    from fastapi.testclient import TestClient

    from backend.api import create_app

    ws = env.ws
    admin_token = ws.tokens.create(env.actor("admin"), "admin", scope="write").token
    alice_token = ws.tokens.create(env.actor("alice"), "alice", scope="write").token
    with TestClient(create_app(ws)) as client:
        as_admin = {"Authorization": f"Bearer {admin_token}"}
        added = client.post("/api/v1/users", json={"name": "dave", "role": "analyst"}, headers=as_admin)
        assert added.status_code == 201 and len(added.json()["password"]) >= 8
        demote = client.patch("/api/v1/users/admin", json={"role": "reviewer"}, headers=as_admin)
        assert demote.status_code == 409 and demote.json()["field"] == "user"
        # role and activity in one call: refused as a whole when a part is refused
        both = client.patch("/api/v1/users/dave", json={"role": "owner", "active": False}, headers=as_admin)
        assert both.status_code == 400 and both.json()["field"] == "role"
        users = {u["name"]: u for u in client.get("/api/v1/users", headers=as_admin).json()["items"]}
        assert (users["dave"]["role"], users["dave"]["active"]) == ("analyst", True)
        off = client.patch("/api/v1/users/alice", json={"active": False}, headers=as_admin)
        assert off.status_code == 200 and off.json()["active"] is False
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {alice_token}"}).status_code == 401
        audit_page = client.get("/api/v1/audit?actor=admin&action=user.&limit=1", headers=as_admin).json()
        assert [e["action"] for e in audit_page["items"]] == ["user.deactivate"] and audit_page["next_offset"] == 1
        assert client.get("/api/v1/audit?offset=-1", headers=as_admin).status_code == 422
        assert client.get("/api/v1/audit?since=2026-01-01T00:00:00", headers=as_admin).json()["field"] == "since"
        rita = ws.tokens.create(env.actor("rita"), "rita", scope="write").token
        assert client.get("/api/v1/audit", headers={"Authorization": f"Bearer {rita}"}).status_code == 403
