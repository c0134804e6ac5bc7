"""`lfops webui` serves the REST API, the operations endpoints and the WebUI from one process and one port: started
as README starts it, asked over real HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.webui_fixtures import start_webui


@pytest.fixture
def served(env, tmp_path):
    token = env.ws.tokens.create(env.actor("alice"), "server test", scope="write").token
    server = start_webui(env.ws.settings.workspace, tmp_path / "webui.log", env={"LFOPS_LOG_FORMAT": "json"})
    try:
        with httpx.Client(base_url=server.url.rstrip("/"), timeout=30) as client:
            yield env, server, client, token
    finally:
        server.stop()


def test_one_process_serves_the_webui_the_api_and_the_operations_endpoints(served):
    env, server, client, token = served
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["failing"] == []
    metrics = client.get("/metrics")  # from 127.0.0.1: no token needed
    assert metrics.status_code == 200 and 'lfops_runs{state="succeeded"}' in metrics.text
    page = client.get("/")
    assert page.status_code == 200 and "gradio" in page.text.lower()  # the WebUI, still at /
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "lfops API"

    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=bearer).json()["name"] == "alice"
    assert client.get("/api/v1/runs", headers=bearer).json()["items"] == []
    assert client.get("/api/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401

    # the WebUI's sign-in (Gradio's cookie) reads the API too, and writes nothing
    signed_in = client.post("/login", data={"username": "rita", "password": env.passwords["rita"]})
    assert signed_in.status_code == 200, signed_in.text
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json() == {
        "name": "rita",
        "role": "reviewer",
        "email": "rita@lfops.local",
        "scope": "read",
    }
    assert client.post("/api/v1/tokens", json={"name": "from the browser"}).status_code == 401
    assert client.get("/config").status_code == 200  # Gradio's own routes work as before for the signed-in user
    metrics = client.get("/metrics").text
    assert 'lfops_http_requests_total{method="GET",route="/api/v1/me",status="200"} 2.0' in metrics
    assert 'route="/api/v1/tokens",status="401"' in metrics

    # LFOPS_LOG_FORMAT=json: one object a line, API requests with their route, never a token
    server.stop()
    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert any(r.get("route") == "/api/v1/me" and r.get("status") == 200 for r in records), lines[-10:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert token.split("_", 2)[2] not in server.output()
