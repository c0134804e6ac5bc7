"""/preflight and /change-requests/{id}/preflight through FastAPI's TestClient with real tokens: the verdicts of
`lfops preflight` (the same table, run here through the CLI on the same config and profile), per target with the
findings and the fixes; bad configs and profiles named by field; a read token is enough and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.runs_fixtures import small_config
from tests.snapshots import snapshot
from tests.test_api import Api, serve_api
from tests.test_api_monitoring import warm
from tests.test_preflight import with_gpu_profile

# the profile tests.test_preflight.with_gpu_profile gives the workspace, as LFOPS_CLUSTER_PROFILES writes it
GPU_PROFILE = {"gpu": {"gpus_per_node": 1, "gpu_memory_gib": 80, "gpu_compute_capability": "9.0"}}


@pytest.fixture
def api(env) -> Iterator[Api]:
    with_gpu_profile(env)
    yield from serve_api(env)


def test_a_change_requests_preflight_is_what_lfops_preflight_says(api, tmp_path, capsys, monkeypatch):
    from backend.cli import main

    env = api.env
    bf16 = small_config(env, bf16=True)
    cr = env.ws.changes.save(env.actor("alice"), bf16, "bf16", "bf16 as LlamaBoard's default").change_request
    warm(api)
    before = snapshot(env)
    answer = api.ok(api.get(f"/change-requests/{cr}/preflight", ("alice", "read")))
    local, gpu = answer["verdicts"]
    assert (local["target"]["name"], local["runnable"], gpu["target"]["name"], gpu["runnable"]) == (
        "local",
        False,
        "gpu",
        True,
    )
    [blocking] = [f for f in local["findings"] if f["blocking"]]
    assert blocking["key"] == "bf16" and blocking["fix"] == "set compute type fp32 (bf16: false)"
    assert local["elsewhere"] == ["profile gpu"] and local["why_not"].endswith("or launch on profile gpu")
    assert gpu["target"]["hardware"] == "1 x GPU (80 GiB, compute 9.0)" and gpu["memory"]["on_gpu"] is True
    assert answer["runnable_on"] == ["profile gpu"]
    # the lines the review shows, and the table `lfops preflight` prints for the same file
    review = env.ws.changes.show(env.actor("rita"), cr).preflight
    assert [f"preflight: {v['line']}" for v in answer["verdicts"]] == review[:2]
    config = tmp_path / "bf16.yaml"
    config.write_text(bf16.canonical_yaml())
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(GPU_PROFILE))
    capsys.readouterr()
    assert main(["--workspace", str(env.ws.settings.workspace), "preflight", str(config)]) == 0
    assert capsys.readouterr().out == answer["table"] + "\n"

    only_local = api.ok(api.get(f"/change-requests/{cr}/preflight", params={"profile": "local"}))
    assert [v["target"]["name"] for v in only_local["verdicts"]] == ["local"] and only_local["runnable_on"] == []
    unknown = api.get(f"/change-requests/{cr}/preflight", params={"profile": "nope"})
    assert (unknown.status_code, unknown.json()["field"], unknown.json()["message"]) == (
        400,
        "profile",
        "profile: 'nope' is not a launch target; known: local, gpu",
    )
    missing = api.get("/change-requests/999/preflight")
    assert (missing.status_code, missing.json()["message"]) == (404, "change request #999 does not exist")
    assert snapshot(env) == before


def test_a_config_not_saved_yet_is_checked_against_main_and_bad_ones_are_named(api):
    env = api.env
    yaml = small_config(env).canonical_yaml()
    warm(api)
    before = snapshot(env)
    answer = api.ok(api.post("/preflight", ("alice", "read"), json={"yaml": yaml}))
    assert [(v["target"]["name"], v["runnable"]) for v in answer["verdicts"]] == [("local", True), ("gpu", True)]
    assert answer["runnable_on"] == ["this machine (local runner)", "profile gpu"]
    one = api.ok(api.post("/preflight", ("alice", "read"), json={"yaml": yaml, "profile": "gpu"}))
    assert [v["target"]["label"] for v in one["verdicts"]] == ["profile gpu"]

    cases = [
        ({"yaml": "lora_rnk: 8\n" + yaml}, 400, "lora_rnk", "not a LLaMA-Factory training argument"),
        ({"yaml": yaml, "profile": "nope"}, 400, "profile", "is not a launch target"),
        ({"profile": "gpu"}, 422, "yaml", "Field required"),
        ({"yaml": yaml, "profile": "x" * 101}, 422, "profile", "at most 100 characters"),
    ]
    for body, status, field, message in cases:
        bad = api.post("/preflight", ("alice", "read"), json=body)
        assert (bad.status_code, bad.json()["field"]) == (status, field), bad.text
        assert message in bad.json()["message"]
    not_yaml = api.post("/preflight", ("alice", "read"), json={"yaml": "[1, 2"})
    assert not_yaml.status_code == 400 and "\n" not in not_yaml.json()["message"]
    unauthenticated = api.client.post("/api/v1/preflight", json={"yaml": yaml})
    assert unauthenticated.status_code == 401
    assert snapshot(env) == before
