"""/deployments through FastAPI's TestClient against the app `lfops webui` serves, with real tokens, for real: a
version trained and registered in this module is deployed once, by a reviewer through the API (LLaMA-Factory's API
behind the lfops gateway on this machine), called with its key, given and revoked keys, refused a rollout, undeployed.
The policy is the backend's (backend.serving.service); every refusal leaves the database, the config repository and
the machine as they were.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backend.store.models import AuditEvent
from tests.runs_fixtures import approved_merge, wait_for
from tests.snapshots import db_state, quiet_snapshot, snapshot
from tests.test_api import Api, serve_api
from tests.test_api_monitoring import only_audited_refusal, warm
from tests.test_serving_local import kill_all_under, processes_under
from tests.test_serving_service import train

pytestmark = pytest.mark.slow
NAME = "tiny-api"
KEY = re.compile(r"^lfk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def trained_api(template_workspace, tmp_path_factory) -> Iterator[tuple[Api, int]]:
    """tiny-api:v1 trained and registered; the API over its workspace, every token used once; the change request."""
    from tests.workspace_fixtures import make_env

    env = make_env(template_workspace, tmp_path_factory.mktemp("api-serving") / "ws")
    cr, _ = approved_merge(env, NAME)
    train(env, cr)
    serving = serve_api(env)
    api = next(serving)
    try:
        yield api, cr
    finally:
        next(serving, None)
        env.ws.serving.close()
        kill_all_under(env.ws.settings.workspace / "serving")
        env.ws.store.dispose()


@pytest.fixture(scope="module")
def deployed(trained_api) -> dict:
    """The one deployment of this module: deployed by rita through POST /deployments; its answer."""
    api, _ = trained_api
    return api.ok(api.post("/deployments", ("rita", "write"), json={"model": NAME}), 201)


def root(api: Api) -> Path:
    return api.env.ws.settings.workspace / "serving"


def accepted(endpoint: str, key: str) -> bool:
    return httpx.get(endpoint + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code == 200


def test_refused_deploys_leave_nothing_and_name_the_field(trained_api):
    api, _ = trained_api
    env = api.env
    warm(api)
    before = snapshot(env)
    refused = api.post("/deployments", ("alice", "write"), json={"model": NAME})
    assert refused.status_code == 403 and refused.json() == {
        "error": "forbidden",
        "field": None,
        "message": "alice (analyst) may not deploy, roll out or undeploy models and manage their API keys",
    }
    cases = [
        ({"model": f"{NAME}:v9"}, 404, "model", f"model {NAME}:v9 is not in the registry"),
        ({"model": NAME, "target": "gpu-nope"}, 400, "target", "target: 'gpu-nope' is neither local nor"),
        ({"model": NAME, "name": "Bad_Name"}, 400, "name", "name: 'Bad_Name' must be 1-47 lower-case letters"),
        ({"model": NAME, "port": "eighty"}, 422, "port", "port: "),
        ({"model": NAME, "ready_timeout_s": 0}, 422, "ready_timeout_s", "ready_timeout_s: "),
        ({"target": "local"}, 422, "model", "model: "),
    ]
    for body, status, field, message in cases:
        bad = api.post("/deployments", ("rita", "write"), json=body)
        assert (bad.status_code, bad.json()["field"]) == (status, field), bad.text
        assert bad.json()["message"].startswith(message), bad.text
    for method, path in (
        ("GET", "/deployments/nosuch"),
        ("GET", "/deployments/nosuch/keys"),
        ("DELETE", "/deployments/nosuch"),
        ("POST", "/deployments/nosuch/keys"),
        ("POST", "/deployments/nosuch/rollout"),
    ):
        missing = api.call(method, path, ("rita", "write"))
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found"), (method, path, missing.text)
        assert missing.json()["message"] == "deployment 'nosuch' does not exist"
    assert snapshot(env) == before
    read_only = api.post("/deployments", ("rita", "read"), json={"model": NAME})
    assert read_only.status_code == 403 and read_only.json()["field"] == "scope"
    only_audited_refusal(env, before)
    assert processes_under(root(api)) == []
    assert api.ok(api.get("/deployments"))["items"] == []


def test_a_reviewer_deploys_through_the_api_and_its_key_works_once_shown(trained_api, deployed):
    api, _ = trained_api
    env = api.env
    info, key = deployed["deployment"], deployed["api_key"]
    assert (info["name"], info["model"], info["status"], info["target"], info["created_by"]) == (
        NAME,
        f"{NAME}:v1",
        "running",
        "local",
        "rita",
    )
    assert info["follows_config"] is None and info["endpoint"] == f"http://127.0.0.1:{info['port']}/v1"
    key_id = KEY.match(key).group(1)
    assert accepted(info["endpoint"], key)

    listed = api.ok(api.get("/deployments", params={"live": "true"}))
    [row] = listed["items"]
    assert row["name"] == NAME and row["live"]["state"] == "running" and row["live"]["model_version"] == f"{NAME}:v1"
    assert listed["next_offset"] is None and api.ok(api.get("/deployments", params={"offset": 1}))["items"] == []
    shown = api.ok(api.get(f"/deployments/{NAME}"))
    assert shown["deployment"]["live"]["state"] == "running"
    [rollout] = shown["rollouts"]
    assert (rollout["trigger"], rollout["from_model"], rollout["to_model"], rollout["actor"]) == (
        "deploy",
        None,
        f"{NAME}:v1",
        "rita",
    )
    assert [(k["key_id"], k["label"], k["revoked_at"]) for k in shown["keys"]] == [(key_id, "first key", None)]
    # the key is answered once: not in any later answer, nor stored; no hash is ever answered
    later = repr([listed, shown, api.ok(api.get(f"/deployments/{NAME}/keys"))])
    assert key not in later and "sha256" not in later and key not in repr(db_state(env.ws.store))
    with env.ws.store.session() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "serving.deploy"))
    assert (event.actor, event.subject, event.detail["key_id"]) == ("rita", f"deployment:{NAME}", key_id)

    taken = api.post("/deployments", ("admin", "write"), json={"model": NAME})
    assert (taken.status_code, taken.json()["field"]) == (409, "name")


def test_keys_are_made_shown_once_listed_by_id_and_revoked(trained_api, deployed):
    api, _ = trained_api
    env = api.env
    endpoint = deployed["deployment"]["endpoint"]
    made = api.ok(api.post(f"/deployments/{NAME}/keys", ("rita", "write"), json={"label": "app"}), 201)
    key, details = made["api_key"], made["details"]
    key_id = KEY.match(key).group(1)
    assert (details["key_id"], details["label"], details["created_by"]) == (key_id, "app", "rita")
    wait_for(lambda: accepted(endpoint, key), timeout=10, what="the new key accepted")  # the gateway re-reads keys
    listed = api.ok(api.get(f"/deployments/{NAME}/keys"))
    assert [k["label"] for k in listed] == ["first key", "app"] and key not in repr(listed)
    long = api.post(f"/deployments/{NAME}/keys", ("rita", "write"), json={"label": "x" * 101})
    assert (long.status_code, long.json()["field"]) == (422, "label")

    warm(api)

    before = quiet_snapshot(env)  # the gateway may still be writing a request it sampled
    refused = api.call("DELETE", f"/deployments/{NAME}/keys/{key_id}", ("alice", "write"))
    assert refused.status_code == 403 and "alice (analyst) may not deploy" in refused.json()["message"]
    unknown = api.call("DELETE", f"/deployments/{NAME}/keys/00000000", ("rita", "write"))
    assert (unknown.status_code, unknown.json()["field"]) == (404, "key")
    assert snapshot(env) == before
    assert accepted(endpoint, key)

    revoked = api.ok(api.call("DELETE", f"/deployments/{NAME}/keys/{key_id}", ("rita", "write")))
    assert revoked["key_id"] == key_id and revoked["revoked_at"] is not None
    wait_for(lambda: not accepted(endpoint, key), timeout=10, what="the revoked key refused")
    again = api.call("DELETE", f"/deployments/{NAME}/keys/{key_id}", ("rita", "write"))
    assert (again.status_code, again.json()["message"]) == (
        409,
        f"key: {key_id} of deployment {NAME} is already revoked",
    )


def test_a_rollout_to_what_it_serves_is_refused_and_to_a_new_version_keeps_its_keys(trained_api, deployed):
    api, cr = trained_api
    env = api.env
    endpoint, key = deployed["deployment"]["endpoint"], deployed["api_key"]
    warm(api)
    before = quiet_snapshot(env)
    refused = api.post(f"/deployments/{NAME}/rollout", ("alice", "write"), json={"model": f"{NAME}:v1"})
    assert refused.status_code == 403
    same = api.post(f"/deployments/{NAME}/rollout", ("rita", "write"), json={"model": f"{NAME}:v1"})
    assert (same.status_code, same.json()["field"]) == (409, "model")
    assert same.json()["message"] == f"model: deployment {NAME} already serves {NAME}:v1"
    newest = api.post(f"/deployments/{NAME}/rollout", ("rita", "write"))  # no body: the newest of the model
    assert newest.status_code == 409
    missing = api.post(f"/deployments/{NAME}/rollout", ("rita", "write"), json={"model": f"{NAME}:v7"})
    assert (missing.status_code, missing.json()["field"]) == (404, "model")
    assert snapshot(env) == before

    train(env, cr)  # the same config once more: tiny-api:v2 (the deployment is pinned: it stays on v1)
    assert api.ok(api.get(f"/deployments/{NAME}"))["deployment"]["model"] == f"{NAME}:v1"
    rolled = api.ok(api.post(f"/deployments/{NAME}/rollout", ("rita", "write")))
    assert (rolled["model"], rolled["status"]) == (f"{NAME}:v2", "running")
    shown = api.ok(api.get(f"/deployments/{NAME}"))
    assert shown["deployment"]["live"]["model_version"] == f"{NAME}:v2"
    assert [(r["trigger"], r["from_model"], r["to_model"], r["status"]) for r in shown["rollouts"]] == [
        ("deploy", None, f"{NAME}:v1", "succeeded"),
        ("manual", f"{NAME}:v1", f"{NAME}:v2", "succeeded"),
    ]
    assert accepted(endpoint, key)  # the keys go with the deployment, not the version


def test_undeploy_stops_everything_keeps_the_record_and_twice_is_refused(trained_api, deployed):
    api, _ = trained_api
    env = api.env
    warm(api)
    before = quiet_snapshot(env)
    refused = api.call("DELETE", f"/deployments/{NAME}", ("alice", "write"))
    assert refused.status_code == 403
    assert snapshot(env) == before and processes_under(root(api)) != []

    stopped = api.ok(api.call("DELETE", f"/deployments/{NAME}", ("rita", "write")))
    assert (stopped["status"], stopped["reason"]) == ("stopped", "undeployed by rita")
    assert processes_under(root(api)) == []
    assert not accepted_or_down(deployed["deployment"]["endpoint"], deployed["api_key"])
    keys = api.ok(api.get(f"/deployments/{NAME}/keys"))
    assert all(k["revoked_at"] is not None for k in keys)
    assert api.ok(api.get("/deployments", params={"all": "false"}))["items"] == []
    assert [d["status"] for d in api.ok(api.get("/deployments"))["items"]] == ["stopped"]
    twice = api.call("DELETE", f"/deployments/{NAME}", ("rita", "write"))
    assert (twice.status_code, twice.json()["field"]) == (409, "name")


def accepted_or_down(endpoint: str, key: str) -> bool:
    """Whether the endpoint still answers with the key (False once nothing listens)."""
    try:
        return accepted(endpoint, key)
    except httpx.TransportError:
        return False
