"""The REST API through FastAPI's TestClient against the very app `lfops webui` serves (backend.api.create_app):
every route, bearer tokens, pages, errors by code, the backend's policy, operations endpoints.

tests/test_api_server.py starts the real server for what only it can show (Gradio beside the API, its sign-in
cookie, loopback metrics, JSON logs)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from backend import errors as backend_errors
from backend.api import create_app
from backend.api.errors import STATUS_BY_CODE
from backend.errors import LfopsError
from backend.paging import MAX_LIMIT, MAX_OFFSET
from backend.settings import Settings
from backend.store.models import ApiToken, AuditEvent, ChangeRequest, utcnow
from backend.workspace import Workspace
from tests.runs_fixtures import kill_leftover_runs, small_config

USERS = ("alice", "rita", "admin")
ROUTES = {
    ("get", "/change-requests"),
    ("post", "/change-requests"),
    ("get", "/change-requests/{cr_id}"),
    ("post", "/change-requests/{cr_id}/revisions"),
    ("post", "/change-requests/{cr_id}/approve"),
    ("post", "/change-requests/{cr_id}/request-changes"),
    ("post", "/change-requests/{cr_id}/merge"),
    ("post", "/change-requests/{cr_id}/close"),
    ("get", "/runs"),
    ("post", "/runs"),
    ("get", "/runs/{run_id}"),
    ("get", "/runs/{run_id}/metrics"),
    ("get", "/runs/{run_id}/model"),
    ("get", "/runs/{run_id}/logs"),
    ("post", "/runs/{run_id}/cancel"),
    ("get", "/models"),
    ("get", "/models/{ref}"),
    ("get", "/models/{ref}/verify"),
    ("get", "/lineage/models/{ref}"),
    ("get", "/lineage/commits/{commit}"),
    ("get", "/lineage/datasets/{version}"),
    ("get", "/me"),
    ("get", "/tokens"),
    ("post", "/tokens"),
    ("delete", "/tokens/{token_id}"),
    ("get", "/notify/targets"),
    ("post", "/notify/targets"),
    ("delete", "/notify/targets/{name}"),
    ("get", "/notify/mutes"),
    ("put", "/notify/mutes/{kind}"),
    ("delete", "/notify/mutes/{kind}"),
    ("get", "/notify/deliveries"),
    ("get", "/users"),
    ("post", "/users"),
    ("patch", "/users/{name}"),
    ("post", "/users/{name}/password"),
    ("delete", "/users/{name}"),
    ("get", "/audit"),
    ("post", "/forge/webhook"),  # signed by the forge, no bearer token (tests/test_forge_wiring_gitea.py)
    # tests/test_api_serving.py, test_api_monitoring.py, test_api_preflight.py
    ("get", "/deployments"),
    ("post", "/deployments"),
    ("get", "/deployments/{name}"),
    ("delete", "/deployments/{name}"),
    ("post", "/deployments/{name}/rollout"),
    ("get", "/deployments/{name}/keys"),
    ("post", "/deployments/{name}/keys"),
    ("delete", "/deployments/{name}/keys/{key_id}"),
    ("get", "/monitoring/{deployment}"),
    ("get", "/monitoring/{deployment}/reports"),
    ("get", "/monitoring/{deployment}/reports/{report_id}"),
    ("post", "/monitoring/{deployment}/check"),
    ("get", "/monitoring/{deployment}/sampling"),
    ("patch", "/monitoring/{deployment}/sampling"),
    ("get", "/retrain/signals"),
    ("get", "/retrain/requests"),
    ("post", "/retrain/check"),
    ("post", "/preflight"),
    ("get", "/change-requests/{cr_id}/preflight"),
}
LIST_ROUTES = ["/change-requests", "/runs", "/models", "/tokens"]


@dataclass
class Api:
    env: object
    client: TestClient
    tokens: dict[tuple[str, str], str]

    def call(self, method: str, path: str, who: tuple[str, str] | None, **kwargs):
        headers = kwargs.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)

    def get(self, path: str, who: tuple[str, str] | None = ("alice", "read"), **kwargs):
        return self.call("GET", path, who, **kwargs)

    def post(self, path: str, who: tuple[str, str], **kwargs):
        return self.call("POST", path, who, **kwargs)

    def ok(self, response, status: int = 200):
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
def api(env):
    yield from serve_api(env)


def serve_api(env) -> Iterator[Api]:
    """The app over `env` and a TestClient with a read and a write token of each user (the `api` fixture)."""
    app = create_app(env.ws)
    tokens = {
        (name, scope): env.ws.tokens.create(env.actor(name), f"{name} {scope}", scope=scope).token
        for name in USERS
        for scope in ("read", "write")
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(env, client, tokens)
    app.state.readiness.close()


def rank16(env) -> str:
    return env.example_yaml().decode().replace("lora_rank: 8", "lora_rank: 16")


def save(api: Api, name: str, who: str = "alice", yaml: str | None = None) -> int:
    body = {"name": name, "message": f"{name}: tune", "yaml": yaml or rank16(api.env)}
    return api.ok(api.post("/change-requests", (who, "write"), json=body), 201)["change_request"]


def audit(env, action: str) -> list[AuditEvent]:
    with env.ws.store.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


# ---- the description --------------------------------------------------------------------------------------------


def test_openapi_describes_every_route_with_bearer_auth_and_page_bounds(api):
    doc = api.ok(api.client.get("/api/v1/openapi.json"))
    assert doc["info"]["title"] == "lfops API"
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert described == ROUTES
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    limit = next(p for p in doc["paths"]["/runs"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, MAX_LIMIT)
    status = next(p for p in doc["paths"]["/runs"]["get"]["parameters"] if p["name"] == "status")
    assert "succeeded" in str(doc["components"]["schemas"]) and status["required"] is False
    docs = api.client.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_backend_error_code_has_one_http_status():
    codes = {cls.code for cls in vars(backend_errors).values() if isinstance(cls, type) and issubclass(cls, LfopsError)}
    assert codes <= set(STATUS_BY_CODE), codes - set(STATUS_BY_CODE)
    assert STATUS_BY_CODE["invalid"] == 400 and STATUS_BY_CODE["not_found"] == 404
    assert STATUS_BY_CODE["conflict"] == 409 and STATUS_BY_CODE["unavailable"] == 503


# ---- change requests and the policy -----------------------------------------------------------------------------


def test_change_requests_save_list_show_decide_merge_close(api):
    env = api.env
    cr = save(api, "example")  # an existing config: its table is against main
    listed = api.ok(api.get("/change-requests", params={"status": "open", "author": "alice"}))
    assert [c["id"] for c in listed["items"]] == [cr] and listed["next_offset"] is None
    assert api.ok(api.get("/change-requests", params={"author": "rita"}))["items"] == []
    detail = api.ok(api.get(f"/change-requests/{cr}"))
    assert detail["request"]["author"] == "alice" and detail["request"]["status"] == "open"
    assert "+" in detail["yaml_diff"] and "lora_rank: 16" in detail["yaml_diff"]
    row = next(p for p in detail["params"] if p["key"] == "lora_rank")
    assert (row["before"], row["after"], row["change"], detail["baseline"]) == (8, 16, "changed", "main")

    # the policy is the backend's: an analyst may not approve, nobody approves their own change
    refused = api.post(f"/change-requests/{cr}/approve", ("alice", "write"), json={"comment": "mine"})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "forbidden",
        "field": None,
        "message": "alice (analyst) may not approve or request changes",
    }
    own = save(api, "rita-own", who="rita")
    refused = api.post(f"/change-requests/{own}/approve", ("rita", "write"))
    assert refused.status_code == 403 and "rita cannot review their own change request" in refused.json()["message"]

    bad = api.post(f"/change-requests/{cr}/request-changes", ("rita", "write"), json={"comment": " "})
    assert (bad.status_code, bad.json()["field"]) == (400, "comment")
    changed = api.ok(api.post(f"/change-requests/{cr}/request-changes", ("rita", "write"), json={"comment": "why?"}))
    assert changed["status"] == "changes_requested"
    approved = api.ok(api.post(f"/change-requests/{cr}/approve", ("rita", "write"), json={"comment": "ok"}))
    assert approved["status"] == "approved" and approved["approvers"] == ["rita"]
    merged = api.ok(api.post(f"/change-requests/{cr}/merge", ("rita", "write")))
    assert merged["status"] == "merged" and merged["merged_by"] == "rita" and len(merged["merged_commit"]) == 40
    again = api.post(f"/change-requests/{cr}/approve", ("admin", "write"))
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert env.origin_git("log", "-1", "--format=%B", "main").count("Approved-by: rita") == 1

    closed = api.ok(api.post(f"/change-requests/{own}/close", ("rita", "write")))
    assert closed["status"] == "closed"
    missing = api.get("/change-requests/999")
    assert missing.status_code == 404 and missing.json()["message"] == "change request #999 does not exist"


def test_an_invalid_config_is_refused_with_each_problem_named(api):
    bad = rank16(api.env).replace("learning_rate: ", "learning_rate: -")
    response = api.post("/change-requests", ("alice", "write"), json={"name": "neg", "message": "m", "yaml": bad})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid" and body["field"] == "learning_rate"
    assert any(p["field"] == "learning_rate" for p in body["problems"])
    missing = api.post("/change-requests", ("alice", "write"), json={"name": "x"})
    assert missing.status_code == 422 and missing.json()["field"] in ("message", "yaml")
    assert api.ok(api.get("/change-requests"))["items"] == []


# ---- pages --------------------------------------------------------------------------------------------------------


BAD_PAGES = [
    ({"limit": 0}, "limit"),
    ({"limit": MAX_LIMIT + 1}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": MAX_OFFSET + 1}, "offset"),
]


def test_out_of_range_pages_are_422_naming_the_field_on_every_list(api):
    for path in [*LIST_ROUTES, "/lineage/commits/0123456789", "/lineage/datasets/sha256:01234567"]:
        for params, field in BAD_PAGES:
            response = api.get(path, params=params)
            assert response.status_code == 422, (path, params, response.text)
            body = response.json()
            assert (body["error"], body["field"]) == ("invalid", field), (path, params)
            assert body["message"].startswith(f"{field}: ")
        assert api.get(path, params={"limit": MAX_LIMIT, "offset": MAX_OFFSET}).status_code == 200, path


def test_pages_follow_next_offset_to_the_end(api):
    ids = [save(api, f"cfg{i}") for i in range(5)]
    seen, offset = [], 0
    while offset is not None:
        page = api.ok(api.get("/change-requests", params={"limit": 2, "offset": offset}))
        assert page["limit"] == 2 and len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        offset = page["next_offset"]
    assert seen == sorted(ids, reverse=True)
    last = api.ok(api.get("/change-requests", params={"limit": 5}))
    assert len(last["items"]) == 5 and last["next_offset"] is None


# ---- tokens on the API --------------------------------------------------------------------------------------------


def test_tokens_over_the_api_created_once_listed_revoked(api):
    body = {"name": "nb", "scope": "read", "expires_in_days": 3}
    made = api.ok(api.post("/tokens", ("alice", "write"), json=body), 201)
    token, details = made["token"], made["details"]
    assert details["scope"] == "read" and details["state"] == "active" and token.startswith(details["prefix"])
    me = api.ok(api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}))
    assert me == {"name": "alice", "role": "analyst", "email": "alice@lfops.local", "scope": "read"}
    listed = api.ok(api.get("/tokens", ("alice", "read")))
    assert token not in str(listed) and [t["name"] for t in listed["items"]][0] == "nb"
    assert all(t["owner"] == "alice" for t in listed["items"])
    assert api.get("/tokens", ("alice", "read"), params={"all": "true"}).status_code == 403
    everyone = api.ok(api.get("/tokens", ("admin", "read"), params={"all": "true", "limit": 200}))
    assert {t["owner"] for t in everyone["items"]} == set(USERS)
    refused = api.call("DELETE", f"/tokens/{details['id']}", ("rita", "write"))  # not hers: not even named
    assert refused.status_code == 404
    revoked = api.ok(api.call("DELETE", f"/tokens/{details['id']}", ("admin", "write")))
    assert (revoked["state"], revoked["revoked_by"]) == ("revoked", "admin")
    after = api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401 and after.json()["message"] == "token: revoked token"
    bad = api.post("/tokens", ("alice", "write"), json={"name": "x", "scope": "admin"})
    assert (bad.status_code, bad.json()["field"]) == (422, "scope")
    bad = api.post("/tokens", ("alice", "write"), json={"name": "x", "expires_in_days": 366})
    assert (bad.status_code, bad.json()["field"]) == (422, "expires_in_days")


def test_refused_credentials_are_401_or_403_change_nothing_and_are_audited(api):
    env = api.env
    cr = save(api, "target")
    expired = env.ws.tokens.create(env.actor("rita"), "old", scope="write")
    with env.ws.store.session() as s:
        s.execute(
            update(ApiToken).where(ApiToken.id == expired.view.id).values(expires_at=utcnow() - timedelta(minutes=1))
        )
    revoked = env.ws.tokens.create(env.actor("rita"), "gone", scope="write")
    env.ws.tokens.revoke(env.actor("rita"), revoked.view.id)
    good = api.tokens["rita", "write"]
    cases = {
        "malformed": ("Bearer not-a-token", 401, "token: malformed token"),
        "not bearer": (f"Basic {good}", 401, "token: malformed token"),
        "wrong secret": (f"Bearer {good[:-3]}xyz" if not good.endswith("xyz") else f"Bearer {good[:-3]}abc", 401, None),
        "expired": (f"Bearer {expired.token}", 401, "token: expired token"),
        "revoked": (f"Bearer {revoked.token}", 401, "token: revoked token"),
        "read scope": (f"Bearer {api.tokens['rita', 'read']}", 403, None),
    }
    before = len(audit(env, "api.auth_failed")), len(audit(env, "api.refused"))
    for name, (header, status, message) in cases.items():
        response = api.client.post(
            f"/api/v1/change-requests/{cr}/approve", headers={"Authorization": header}, json={"comment": "x"}
        )
        assert response.status_code == status, (name, response.text)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["field"] == "token"
        if message:
            assert response.json()["message"] == message, name
    scope_refusal = api.client.post(
        f"/api/v1/change-requests/{cr}/approve", headers={"Authorization": f"Bearer {api.tokens['rita', 'read']}"}
    ).json()
    assert scope_refusal["field"] == "scope" and "needs a write token" in scope_refusal["message"]
    with env.ws.store.session() as s:  # nothing changed
        assert s.get(ChangeRequest, cr).status == "open" and not s.get(ChangeRequest, cr).reviews
    failed, refused = audit(env, "api.auth_failed")[before[0] :], audit(env, "api.refused")[before[1] :]
    assert len(failed) == 5 and len(refused) == 2
    assert all(e.detail["where"] == "POST /api/v1/change-requests/{cr_id}/approve" for e in failed + refused)
    assert [e.detail["reason"] for e in failed] == [
        "malformed token",
        "malformed token",
        "wrong secret",
        "expired token",
        "revoked token",
    ]
    stored = repr([vars(e) for e in failed + refused])
    for header, _, _ in cases.values():
        token = header.split(" ", 1)[1]
        assert token.split("_", 2)[-1] not in stored
    missing = api.client.get("/api/v1/runs")
    assert missing.status_code == 401 and missing.json()["field"] == "authorization"


def test_a_browser_session_reads_the_api_but_never_writes(env):
    app = create_app(env.ws, session_user=lambda request: "rita" if request.cookies.get("session") == "s1" else None)
    with TestClient(app, cookies={"session": "s1"}) as client:
        me = client.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["scope"] == "read" and me.json()["name"] == "rita"
        assert client.get("/api/v1/change-requests").status_code == 200
        write = client.post("/api/v1/tokens", json={"name": "from a page", "scope": "write"})
        assert write.status_code == 401  # a cookie is sent by any page the browser opens: never enough to write
    assert env.ws.tokens.list(env.actor("rita")) == []
    app.state.readiness.close()


# ---- operations ---------------------------------------------------------------------------------------------------


def test_health_needs_nothing_readiness_names_the_failing_part(api, tmp_path):
    assert api.ok(api.client.get("/healthz")) == {"status": "ok"}
    ready = api.ok(api.client.get("/readyz"))
    assert ready["status"] == "ready" and [c["name"] for c in ready["checks"]] == ["database", "config_repository"]
    origin = api.env.origin
    origin.rename(origin.with_name("moved.git"))
    time.sleep(2.1)  # the repository check's answer is reused for 2 s
    try:
        response = api.client.get("/readyz")
        assert response.status_code == 503 and response.json()["failing"] == ["config_repository"]
    finally:
        origin.with_name("moved.git").rename(origin)
    down = Workspace(
        Settings(workspace=api.env.ws.settings.workspace, database_url="postgresql+psycopg://u:secret@127.0.0.1:1/x")
    )
    app = create_app(down)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # liveness never asks the database
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["failing"] == ["database"]
        assert "secret" not in response.text
    app.state.readiness.close()


def test_metrics_need_a_token_off_loopback_and_count_routes_by_template(api):
    assert api.client.get("/metrics").status_code == 401  # the test client is not a loopback address
    save(api, "counted")
    api.get("/change-requests/1")
    api.get("/change-requests/999")
    text = api.client.get("/metrics", headers={"Authorization": f"Bearer {api.tokens['alice', 'read']}"}).text
    assert 'lfops_http_requests_total{method="GET",route="/api/v1/change-requests/{cr_id}",status="200"} 1.0' in text
    assert 'lfops_http_requests_total{method="GET",route="/api/v1/change-requests/{cr_id}",status="404"} 1.0' in text
    assert 'lfops_http_requests_total{method="POST",route="/api/v1/change-requests",status="201"} 1.0' in text
    assert 'lfops_change_requests{status="open"} 1.0' in text
    assert 'lfops_runs{state="running"} 0.0' in text and "lfops_store_up 1.0" in text
    assert 'lfops_git_push_duration_seconds_count{outcome="ok"} 1.0' in text  # the save's push
    assert "process_resident_memory_bytes" in text


# ---- runs, registry and lineage: one real training -----------------------------------------------------------------


@pytest.mark.slow
def test_runs_registry_and_lineage_over_the_api(api):
    env = api.env
    yaml = small_config(env, per_device_train_batch_size=4).canonical_yaml()
    cr = save(api, "api-sft", yaml=yaml)
    api.ok(api.post(f"/change-requests/{cr}/approve", ("rita", "write")))
    merged = api.ok(api.post(f"/change-requests/{cr}/merge", ("rita", "write")))
    unapproved = save(api, "not-reviewed", yaml=yaml)
    refused = api.post("/runs", ("alice", "write"), json={"target": str(unapproved)})
    assert refused.status_code == 409 and "not merged" in refused.json()["message"]
    bad = api.post("/runs", ("alice", "write"), json={"target": str(cr), "nodes": 2})
    assert bad.status_code == 400 and bad.json()["field"] == "nodes"

    monitor = env.ws.runs.start_monitor(interval=0.2)
    try:
        run = api.ok(api.post("/runs", ("alice", "write"), json={"target": f"#{cr}"}), 201)
        assert run["status"] in ("queued", "pending", "running") and run["change_request_id"] == cr
        deadline = time.monotonic() + 300
        while not (view := api.ok(api.get(f"/runs/{run['id']}")))["finished_at"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
        assert view["status"] == "succeeded", view["reason"]
        second = api.ok(api.post("/runs", ("alice", "write"), json={"target": merged["merged_commit"]}), 201)
        cancelled = api.ok(api.post(f"/runs/{second['id']}/cancel", ("alice", "write")))
        assert cancelled["status"] == "cancelled"
    except BaseException:
        kill_leftover_runs(env.ws)
        raise
    finally:
        env.ws.runs.stop_monitor()
    assert not monitor.alive

    listed = api.ok(api.get("/runs", params={"config": "api-sft", "status": "succeeded"}))
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    assert api.ok(api.get("/runs", params={"limit": 1}))["next_offset"] == 1
    assert api.get("/runs", params={"status": "bogus"}).status_code == 422
    assert api.get("/runs", params={"commit": "xyz1234"}).json()["field"] == "commit"
    curves = api.ok(api.get(f"/runs/{run['id']}/metrics", params={"key": ["loss", "lr"]}))["curves"]
    assert len(curves["loss"]) >= 2 and all(len(point) == 2 for point in curves["loss"])
    logs = api.get(f"/runs/{run['id']}/logs")
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain") and logs.text.strip()
    again = api.post(f"/runs/{run['id']}/cancel", ("alice", "write"))
    assert again.status_code == 409
    assert api.post(f"/runs/{second['id']}/cancel", ("rita", "read")).status_code == 403

    models = api.ok(api.get("/models", params={"name": "api-sft"}))["items"]
    assert [m["ref"] for m in models] == ["api-sft:v1"]
    shown = api.ok(api.get("/models/api-sft:v1"))
    assert shown["model"]["ref"] == "api-sft:v1" and shown["manifest"]["run"]["id"] == run["id"]
    assert shown["manifest"]["approvers"] == ["rita <rita@lfops.local>"] and shown["manifest"]["files"]
    assert api.ok(api.get("/models/api-sft/verify"))["ok"] is True
    assert api.ok(api.get(f"/runs/{run['id']}/model"))["ref"] == "api-sft:v1"
    assert api.ok(api.get(f"/runs/{second['id']}/model")) is None
    assert api.get("/models/nothing:v9").status_code == 404
    lineage = api.ok(api.get("/lineage/models/api-sft:v1"))
    assert lineage["run"]["id"] == run["id"] and lineage["approvers"] == ["rita"]
    assert lineage["change_request"]["id"] == cr and lineage["commit"] == merged["merged_commit"]
    assert {n["kind"] for n in lineage["graph"]["nodes"]} >= {"model", "run", "commit", "change_request"}
    from_commit = api.ok(api.get(f"/lineage/commits/{merged['merged_commit']}"))
    assert {r["id"] for r in from_commit["runs"]} == {run["id"], second["id"]}
    assert [m["ref"] for m in from_commit["models"]] == ["api-sft:v1"]
    page = api.ok(api.get(f"/lineage/commits/{merged['merged_commit'][:12]}", params={"limit": 1}))
    assert [r["id"] for r in page["runs"]] == [second["id"]] and page["models"] == [] and page["next_offset"] == 1
    page = api.ok(api.get(f"/lineage/commits/{merged['merged_commit'][:12]}", params={"limit": 1, "offset": 1}))
    assert [r["id"] for r in page["runs"]] == [run["id"]] and [m["ref"] for m in page["models"]] == ["api-sft:v1"]
    from_data = api.ok(api.get(f"/lineage/datasets/{view['dataset_version']}"))
    assert run["id"] in {r["id"] for r in from_data["runs"]}
    bad = api.get("/lineage/datasets/md5:abc")
    assert bad.status_code == 400 and bad.json()["message"].startswith("dataset version: 'md5:abc' must be sha256:")


def test_the_api_and_tokens_on_sqlite_and_postgresql(any_db_env):
    env = any_db_env
    app = create_app(env.ws)
    read = env.ws.tokens.create(env.actor("alice"), "r").token
    write = env.ws.tokens.create(env.actor("alice"), "w", scope="write").token
    expired = env.ws.tokens.create(env.actor("alice"), "old")
    with env.ws.store.session() as s:
        s.execute(update(ApiToken).where(ApiToken.id == expired.view.id).values(expires_at=utcnow() - timedelta(1)))
    with TestClient(app) as client:
        body = {"name": "pg", "message": "on both", "yaml": rank16(env)}
        saved = client.post("/api/v1/change-requests", json=body, headers={"Authorization": f"Bearer {write}"})
        assert saved.status_code == 201, saved.text
        listed = client.get("/api/v1/change-requests", params={"limit": 1}, headers={"Authorization": f"Bearer {read}"})
        assert listed.json()["items"][0]["id"] == saved.json()["change_request"]
        tokens = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {read}"}).json()["items"]
        assert [(t["name"], t["state"]) for t in tokens] == [("old", "expired"), ("w", "active"), ("r", "active")]
        old = client.get("/api/v1/me", headers={"Authorization": f"Bearer {expired.token}"})
        assert old.status_code == 401 and old.json()["message"] == "token: expired token"
        assert client.get("/readyz").json()["failing"] == []
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).text
        assert 'lfops_change_requests{status="open"} 1.0' in metrics
    app.state.readiness.close()


def test_forge_webhook_without_a_forge_is_not_found(api):
    answer = api.client.post("/api/v1/forge/webhook", content=b"{}", headers={"X-Gitea-Signature": "0" * 64})
    assert answer.status_code == 404 and answer.json()["field"] == "LFOPS_FORGE"


def test_a_change_request_is_revised_through_the_api_by_its_author_only(api):
    cr = save(api, "revised")
    api.ok(api.post(f"/change-requests/{cr}/request-changes", ("rita", "write"), json={"comment": "rank 4"}))
    body = {"message": "rank 4", "yaml": rank16(api.env).replace("lora_rank: 16", "lora_rank: 4")}
    refused = api.post(f"/change-requests/{cr}/revisions", ("rita", "write"), json=body)
    assert refused.status_code == 403 and "only alice, its author, can update" in refused.json()["message"]
    revised = api.ok(api.post(f"/change-requests/{cr}/revisions", ("alice", "write"), json=body))
    assert revised["change_request"] == cr
    detail = api.ok(api.get(f"/change-requests/{cr}"))
    assert detail["request"]["status"] == "open" and detail["request"]["head_commit"] == revised["commit"]
    assert [p["key"] for p in detail["review_params"] if p["change"] != "unchanged"] == ["lora_rank"]
    assert "+lora_rank: 4" in detail["review_diff"] and detail["last_reviewed_commit"]
