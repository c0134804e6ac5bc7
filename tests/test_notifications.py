"""Notifications against real HTTP receivers (a local server in the test): signed webhooks verified with the HMAC,
retries on 500, a timeout ending as failed without holding up the request that caused the event, mutes, one delivery
per event and target however many dispatchers run, apprise's json:// to a local server; targets are an admin's and
their secrets never reach the database in clear. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from backend import audit
from backend.api import create_app
from backend.errors import LfopsError, NotFound, PermissionDenied
from backend.notifications import Dispatcher, Notifier, Policy
from backend.store.models import NotifyDelivery, NotifyTarget
from tests.helpers import run_lfops, wait_for
from tests.runs_fixtures import small_config

FAST = Policy(max_attempts=3, backoff_s=0.05, timeout_s=5.0)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str


@dataclass
class Receiver:
    """A local HTTP server answering each POST with the next status of `answers` (the last one repeats); `hang`
    holds every request until `release` is set."""

    answers: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(Received(dict(self.headers), body, self.path))
                if receiver.hang:
                    receiver.in_flight += 1
                    receiver.entered.set()
                    receiver.release.wait(60)
                    receiver.in_flight -= 1
                status = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up (timeout)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs).start())
        return made[-1]

    yield make
    for r in made:
        r.stop()


def audited(env, action: str, subject: str, **detail) -> int:
    """An audit event as a feature module writes it (the dispatcher reads nothing else)."""
    with env.ws.store.session() as s:
        event = audit.record(s, "lfops", action, subject, **detail)
        s.flush()
        return event.id


def deliveries(env) -> list[NotifyDelivery]:
    with env.ws.store.session() as s:
        return list(s.scalars(select(NotifyDelivery).order_by(NotifyDelivery.id)))


def dispatcher(env, policy: Policy = FAST) -> Dispatcher:
    notifications = env.ws.notifications
    return Dispatcher(env.ws.store, notifications.dispatcher.sealer, policy)


def settle(d: Dispatcher, until) -> None:
    """Dispatch passes until `until()` holds (back-off waits are short under FAST)."""
    wait_for(lambda: d.run_once() and until(), timeout=60, what="the deliveries to settle")


def test_a_signed_webhook_is_delivered_once_per_event(any_db_env, receiver):
    env = any_db_env
    hook = receiver()
    added = env.ws.notifications.targets.add(env.actor("admin"), "team", "webhook", hook.url)
    secret = added.signing_secret
    assert secret.startswith("whsec_") and added.target.kinds == []
    alice = env.actor("alice")
    saved = env.ws.changes.save(alice, small_config(env, lora_rank=16), "rank16", "rank 16")  # a real change request
    first, second = dispatcher(env), dispatcher(env)  # two app replicas
    settle(first, lambda: len(hook.received) >= 1)
    for _ in range(3):
        second.run_once()
        first.run_once()
    assert len(hook.received) == 1  # one event, one target: one delivery, whoever dispatches
    got = hook.received[0]
    timestamp, signed = got.headers["X-Lfops-Timestamp"], got.headers["X-Lfops-Signature"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert signed == f"sha256={expected}"
    body = json.loads(got.body)
    assert body["kind"] == "review.requested" and got.headers["X-Lfops-Event"] == "review.requested"
    assert body["subject"] == f"change_request:{saved.change_request}" and body["actor"] == "alice"
    assert body["summary"] == f"change_request:{saved.change_request}: a change request waits for review, by alice"
    (delivery,) = deliveries(env)
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert got.headers["X-Lfops-Delivery"] == str(delivery.id)
    # events that notify nobody make no delivery; a target only hears of events after it was added
    audited(env, "token.create", "user:alice")
    settle(first, lambda: True)
    assert len(deliveries(env)) == 1


def test_a_500_is_retried_with_backoff_then_delivered_or_failed(env, receiver):
    flaky = receiver(answers=[500, 500, 200])
    broken = receiver(answers=[500])
    admin = env.actor("admin")
    env.ws.notifications.targets.add(admin, "flaky", "webhook", flaky.url)
    env.ws.notifications.targets.add(admin, "broken", "webhook", broken.url, kinds=["run.failed"])
    audited(env, "run.failed", "run:7", reason="exit code 1")
    d = dispatcher(env)
    settle(d, lambda: all(x.status != "pending" for x in deliveries(env)) and len(deliveries(env)) == 2)
    by_target = {x.target_id: x for x in deliveries(env)}
    with env.ws.store.session() as s:
        ids = {t.name: t.id for t in s.scalars(select(NotifyTarget))}
    ok, failed = by_target[ids["flaky"]], by_target[ids["broken"]]
    assert (ok.status, ok.attempts, ok.last_status, ok.last_error) == ("delivered", 3, 200, "")
    assert (failed.status, failed.attempts, failed.last_status) == ("failed", FAST.max_attempts, 500)
    assert failed.last_error.startswith("HTTP 500")
    assert len(flaky.received) == 3 and len(broken.received) == FAST.max_attempts  # no attempt after failed
    # every attempt carries the same delivery id, so a receiver drops what it has seen
    assert {r.headers["X-Lfops-Delivery"] for r in flaky.received} == {str(ok.id)}
    view = env.ws.notifications.targets.deliveries(admin, status="failed")
    assert [(v.target, v.kind, v.subject) for v in view] == [("broken", "run.failed", "run:7")]


def test_a_hanging_target_never_holds_up_the_request_and_ends_failed(env, receiver):
    hanging = receiver(hang=True)
    admin = env.actor("admin")
    env.ws.notifications.targets.add(admin, "slow", "webhook", hanging.url)
    audited(env, "run.succeeded", "run:1")
    notifier = Notifier(dispatcher(env, Policy(timeout_s=120)), interval=0.05).start()  # as the WebUI runs it
    try:
        wait_for(hanging.entered.is_set, timeout=60, what="the dispatcher to be inside the hanging request")
        # a request that causes an event while a delivery hangs: it only writes its audit row
        saved = env.ws.changes.save(env.actor("alice"), small_config(env), "while-hanging", "saved meanwhile")
        assert saved.change_request and hanging.in_flight == 1  # returned while the delivery still hangs
    finally:
        hanging.release.set()
        notifier.stop()
    env.ws.notifications.targets.remove(admin, "slow")
    # a target that never answers within the timeout: tried max_attempts times, then failed
    stuck = receiver(hang=True)
    env.ws.notifications.targets.add(admin, "stuck", "webhook", stuck.url)
    audited(env, "run.failed", "run:2")
    quick = dispatcher(env, Policy(max_attempts=2, backoff_s=0.05, timeout_s=0.3))
    settle(quick, lambda: deliveries(env)[-1].status == "failed")
    last = deliveries(env)[-1]
    assert (last.attempts, last.last_status, last.last_error) == (2, None, "timed out after 0.3 s")
    assert len(stuck.received) == 2


def test_a_user_mutes_kinds_for_their_own_targets(env, receiver):
    team, alices = receiver(), receiver()
    admin, alice = env.actor("admin"), env.actor("alice")
    targets = env.ws.notifications.targets
    targets.add(admin, "team", "webhook", team.url)
    targets.add(admin, "alice-dm", "webhook", alices.url, user="alice")
    assert targets.mute(alice, "run.failed") == ["run.failed"]
    with pytest.raises(LfopsError, match=r"^kind: 'run.exploded' must be one of review.requested, "):
        targets.mute(alice, "run.exploded")
    assert targets.mutes(alice) == ["run.failed"]  # nothing changed
    audited(env, "run.failed", "run:3")
    audited(env, "run.succeeded", "run:4")
    d = dispatcher(env)
    settle(d, lambda: len(team.received) == 2 and len(alices.received) == 1)
    assert [json.loads(r.body)["kind"] for r in alices.received] == ["run.succeeded"]
    assert targets.unmute(alice, "run.failed") == []
    audited(env, "run.lost", "run:5")
    settle(d, lambda: len(alices.received) == 2)
    for _ in range(3):
        d.run_once()
    # the event muted then stays muted (logged so); the one after the unmute went out
    assert [json.loads(r.body)["subject"] for r in alices.received] == ["run:4", "run:5"]
    log = env.ws.notifications.targets.deliveries(admin, target="alice-dm")
    assert [(v.subject, v.status) for v in log] == [("run:5", "delivered"), ("run:4", "delivered"), ("run:3", "muted")]


def test_apprise_json_url_to_a_local_server(env, receiver):
    chat = receiver()
    port = chat.server.server_address[1]
    env.ws.notifications.targets.add(
        env.actor("admin"), "chat", "apprise", f"json://127.0.0.1:{port}/chat?token=s3cr3t"
    )
    audited(env, "registry.register", "model:tiny-sft:v3", run=12)
    settle(dispatcher(env), lambda: len(chat.received) == 1 and deliveries(env)[0].status == "delivered")
    got = json.loads(chat.received[0].body)
    assert got["title"] == "lfops: a model version was registered"
    assert got["message"] == "model:tiny-sft:v3: a model version was registered"
    assert chat.received[0].path.startswith("/chat")


def test_targets_are_an_admins_and_their_secrets_stay_sealed(env, receiver):
    hook = receiver()
    targets = env.ws.notifications.targets
    admin, alice = env.actor("admin"), env.actor("alice")
    with pytest.raises(PermissionDenied, match=r"^alice \(analyst\) may not manage notification targets"):
        targets.add(alice, "mine", "webhook", hook.url)
    bad = [
        (("Bad Name", "webhook", hook.url), r"^name: 'Bad Name' must be"),
        (("x", "sms", hook.url), r"^kind: 'sms' must be webhook or apprise$"),
        (("x", "webhook", "ftp://host/x"), r"^url: a webhook's URL must start with http:// or https://$"),
        (("x", "apprise", "nonsense://where"), r"^url: not a URL apprise knows"),
    ]
    for args, message in bad:
        with pytest.raises(LfopsError, match=message):
            targets.add(admin, *args)
    with pytest.raises(LfopsError, match=r"^kind: 'run.done' must be one of"):
        targets.add(admin, "x", "webhook", hook.url, kinds=["run.done"])
    with pytest.raises(NotFound, match=r"^user: 'bob' does not exist$"):
        targets.add(admin, "x", "webhook", hook.url, user="bob")
    assert targets.list(admin) == []  # nothing changed
    secret = targets.add(admin, "hook", "webhook", hook.url).signing_secret
    targets.add(admin, "chat", "apprise", "json://127.0.0.1:9/x?token=TOPSECRET123")
    with env.ws.store.session() as s:
        dump = " ".join(str(row) for row in s.execute(text("SELECT * FROM notify_targets")).all())
        actions = [a for (a,) in s.execute(text("SELECT action FROM audit_events WHERE action LIKE 'notify.%'"))]
    assert secret not in dump and "TOPSECRET123" not in dump and "gAAAA" in dump  # Fernet tokens only
    assert actions == ["notify.target_add", "notify.target_add"]
    assert [(t.name, t.address) for t in targets.list(admin)] == [("chat", "json://"), ("hook", hook.url)]
    targets.remove(admin, "hook")
    assert [t.name for t in targets.list(admin)] == ["chat"]


def test_cli_and_api(env, receiver):
    hook = receiver()
    ws_dir, pw = env.ws.settings.workspace, env.passwords
    added = run_lfops(
        "notify", "targets", "add", "team", "--webhook", hook.url, "--kind", "run.failed",
        workspace=ws_dir, user="admin", password=pw["admin"],
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0] == f"target 'team' (webhook) {hook.url}: run.failed"
    assert added.stdout.splitlines()[2].startswith("whsec_")
    refused = run_lfops("notify", "targets", "list", workspace=ws_dir, user="alice", password=pw["alice"])
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        == "error: alice (analyst) may not manage notification targets and read their delivery log"
    )
    muted = run_lfops("notify", "mute", "review.merged", workspace=ws_dir, user="alice", password=pw["alice"])
    assert muted.stdout.strip() == "alice mutes: review.merged"
    audited(env, "run.failed", "run:9")
    once = run_lfops("notify", "dispatch", "--once", workspace=ws_dir, user="admin", password=pw["admin"])
    assert once.stdout.strip() == "1 deliveries created, 1 delivered, 0 to retry, 0 failed", once.stderr
    log = run_lfops("notify", "deliveries", workspace=ws_dir, user="admin", password=pw["admin"])
    assert "team" in log.stdout and "delivered" in log.stdout and "run:9" in log.stdout

    app = create_app(env.ws)
    tokens = {n: env.ws.tokens.create(env.actor(n), "t", scope="write").token for n in ("admin", "alice")}
    with TestClient(app, raise_server_exceptions=False) as client:

        def call(method: str, path: str, who: str, **kw):
            return client.request(method, "/api/v1" + path, headers={"Authorization": f"Bearer {tokens[who]}"}, **kw)

        body = {"name": "api-hook", "kind": "webhook", "url": hook.url, "kinds": ["model.registered"]}
        assert call("POST", "/notify/targets", "alice", json=body).status_code == 403
        made = call("POST", "/notify/targets", "admin", json=body)
        assert made.status_code == 201 and made.json()["signing_secret"].startswith("whsec_")
        bad = call("POST", "/notify/targets", "admin", json=body | {"name": "other", "kinds": ["nope"]})
        assert bad.status_code == 400 and bad.json()["field"] == "kind"
        assert call("PUT", "/notify/mutes/run.failed", "alice").json()["muted"] == ["review.merged", "run.failed"]
        page = call("GET", "/notify/deliveries", "admin", params={"status": "delivered"}).json()
        assert [i["subject"] for i in page["items"]] == ["run:9"]
        assert call("DELETE", "/notify/targets/api-hook", "admin").status_code == 204
    app.state.readiness.close()
