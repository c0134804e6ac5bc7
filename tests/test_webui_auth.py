"""Sign-in for the WebUI: passwords checked against the store (argon2), audited, slowed after repeated failures;
a trusted proxy's user header; and no unauthenticated server on a network address."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select
from starlette.requests import Request

from backend.errors import LfopsError, PermissionDenied
from backend.store.models import AuditEvent
from tests.helpers import LFOPS
from tests.webui_fixtures import start_webui
from webui.auth import NONE, PASSWORD, PROXY, Authenticator, check_bind, is_loopback


def http_request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_may_run_without_sign_in(host):
    assert is_loopback(host)
    check_bind(host, NONE)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])  # noqa: S104 - that is the point
def test_network_hosts_need_sign_in(host):
    with pytest.raises(LfopsError, match=f"host: {host} is reachable from other machines"):
        check_bind(host, NONE)
    check_bind(host, PASSWORD)
    check_bind(host, PROXY)


def test_lfops_webui_refuses_a_network_address_without_sign_in_before_creating_anything(tmp_path):
    workspace = tmp_path / "ws"
    proc = subprocess.run(
        [LFOPS, "--workspace", str(workspace), "webui", "--host", "0.0.0.0", "--no-auth"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: host: 0.0.0.0 is reachable from other machines")
    assert not workspace.exists()


def test_passwords_are_checked_against_the_store_and_audited(env):
    auth = Authenticator(env.ws)
    assert auth.mode == PASSWORD and "auth" in auth.launch_kwargs()
    assert asyncio.run(auth.check_password("alice", env.passwords["alice"])) is True
    assert asyncio.run(auth.check_password("alice", "wrong")) is False
    assert asyncio.run(auth.check_password("mallory", "anything")) is False
    with env.ws.store.session() as s:
        events = [(e.actor, e.action) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert events[-3:] == [("alice", "user.login"), ("alice", "user.login_failed"), ("mallory", "user.login_failed")]


def test_repeated_failures_lock_the_name_for_a_while(env):
    auth = Authenticator(env.ws)
    for _ in range(10):
        assert asyncio.run(auth.check_password("rita", "guess")) is False
    assert asyncio.run(auth.check_password("rita", env.passwords["rita"])) is False  # even the right one, for now
    assert asyncio.run(auth.check_password("alice", env.passwords["alice"])) is True  # other users are not affected
    with env.ws.store.session() as s:
        last = s.scalars(select(AuditEvent).where(AuditEvent.actor == "rita").order_by(AuditEvent.id.desc())).first()
        assert last.action == "user.login_refused"


def test_a_trusted_proxy_names_the_user(env):
    auth = Authenticator(env.ws, PROXY, "X-Forwarded-User")
    assert set(auth.launch_kwargs()) == {"auth_dependency"}
    assert auth.proxy_user(http_request({"X-Forwarded-User": "rita"})) == "rita"
    assert auth.proxy_user(http_request({"X-Forwarded-User": "someone-else"})) is None
    assert auth.proxy_user(http_request({})) is None


def test_the_store_is_asked_on_every_event(env):
    """A role change or a deactivation takes effect at the next click, not at the next sign-in."""
    from backend.store.models import User

    auth = Authenticator(env.ws)

    class Req:
        username = "alice"

    assert auth.actor(Req()).role == "analyst"
    with env.ws.store.session() as s:
        s.scalars(select(User).where(User.name == "alice")).one().role = "reviewer"
    assert auth.actor(Req()).role == "reviewer"
    with env.ws.store.session() as s:
        s.scalars(select(User).where(User.name == "alice")).one().active = False
    with pytest.raises(PermissionDenied, match="no longer active"):
        auth.actor(Req())
    Req.username = None
    assert auth.actor(Req()) is None


@pytest.mark.slow
def test_behind_a_proxy_every_route_needs_the_header(env, tmp_path):
    """`lfops webui` with LFOPS_TRUSTED_USER_HEADER: no header or an unknown user gets 401 everywhere."""
    server = start_webui(
        env.ws.settings.workspace, tmp_path / "server.log", env={"LFOPS_TRUSTED_USER_HEADER": "X-Forwarded-User"}
    )
    try:

        def status(path: str, user: str | None) -> int:
            headers = {"X-Forwarded-User": user} if user else {}
            req = urllib.request.Request(server.url + path, headers=headers)  # noqa: S310 - our local server
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our local server
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        for path in ("", "config", "gradio_api/info"):
            assert status(path, None) == 401, path
            assert status(path, "mallory") == 401, path
            assert status(path, "rita") == 200, path
        assert "sign-in: proxy header X-Forwarded-User" in server.output()
    finally:
        server.stop()
