"""The metadata store on SQLite (WAL) and on a real PostgreSQL server: migrations, transactions, errors."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select, text

from backend import audit
from backend.auth import add_user, authenticate
from backend.errors import AuthenticationFailed, Conflict, LfopsError, StoreUnavailable
from backend.store import Store, redact_url
from backend.store.models import AuditEvent, User


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    s = Store(url)
    s.upgrade()
    yield s
    s.dispose()


def test_migrations_create_every_table(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "users",
        "change_requests",
        "reviews",
        "configs",
        "runs",
        "metrics",
        "model_versions",
        "deployments",
        "audit_events",
        "alembic_version",
    } <= tables
    Store(store.url).upgrade()  # upgrading an up-to-date database is a no-op


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/w.db")
    with s.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_users_passwords_are_hashed_and_checked(store):
    with store.session() as s:
        add_user(s, "carol", "reviewer", "correct horse")
    with store.session() as s:
        user = s.scalar(select(User).where(User.name == "carol"))
        assert "correct horse" not in user.password_hash and user.password_hash.startswith("$argon2")
        assert authenticate(s, "carol", "correct horse").role == "reviewer"
        with pytest.raises(AuthenticationFailed):
            authenticate(s, "carol", "wrong")
        with pytest.raises(AuthenticationFailed):
            authenticate(s, "nobody", "x")


@pytest.mark.parametrize(
    ("name", "role", "password", "expected"),
    [
        ("Bad Name", "analyst", "longenough", "name:"),
        ("dave", "owner", "longenough", "role:"),
        ("dave", "analyst", "short", "password:"),
    ],
)
def test_bad_user_input_is_refused_and_nothing_written(store, name, role, password, expected):
    with pytest.raises(LfopsError, match=expected), store.session() as s:
        add_user(s, name, role, password)
    with store.session() as s:
        assert s.scalar(select(User).where(User.name == name)) is None


def test_a_failed_transaction_leaves_no_trace(store):
    with store.session() as s:
        add_user(s, "erin", "analyst", "password1")
    with pytest.raises(Conflict), store.session() as s:
        audit.record(s, "erin", "test.action", "x")
        add_user(s, "erin", "analyst", "password2")
    with store.session() as s:
        assert s.scalars(select(AuditEvent).where(AuditEvent.action == "test.action")).all() == []


def test_unreachable_database_is_a_clear_error_without_the_password():
    with pytest.raises(StoreUnavailable) as info:
        Store("postgresql+psycopg://app:hunter2@127.0.0.1:1/db").upgrade()
    message = str(info.value)
    assert "unreachable" in message and "hunter2" not in message and "127.0.0.1:1" in message
    assert "hunter2" not in redact_url("postgresql://app:hunter2@h/db")


def test_reading_runs_each_statement_on_its_own_and_hands_the_connection_back_as_it_was(store):
    """Store.reading: no transaction (autocommit: no BEGIN or COMMIT sent) and, on PostgreSQL, nothing prepared; the
    connection goes back to the pool transactional and preparing again, as the next session finds it."""
    from psycopg.pq import TransactionStatus

    postgres = store.engine.dialect.name == "postgresql"
    with store.reading() as s:
        assert s.scalar(select(func.count()).select_from(User)) >= 0
        raw = s.connection().connection.dbapi_connection
        if postgres:
            assert raw.autocommit and raw.prepare_threshold is None
            assert raw.info.transaction_status == TransactionStatus.IDLE
        else:
            assert raw.isolation_level is None and not raw.in_transaction
    with store.session() as s:
        s.scalar(select(func.count()).select_from(User))
        raw = s.connection().connection.dbapi_connection
        if postgres:
            assert not raw.autocommit and raw.prepare_threshold == 5
            assert raw.info.transaction_status == TransactionStatus.INTRANS
        else:
            assert raw.isolation_level is not None
