"""`lfops cluster profiles | preview`: what an admin configured, and the objects a launch would create, for review.

No cluster is needed: the preview is built by the same pure functions the runner sends to the API server.
"""

from __future__ import annotations

import json

import pytest
import yaml

from backend.cli import main
from backend.errors import LfopsError
from backend.settings import Settings, parse_cluster_profiles
from tests.runs_fixtures import approved_merge

PROFILES = {
    "a100": {"namespace": "ml", "image": "registry.example.com/train:0.9.5", "gpus_per_node": 8},
    "cpu": {"namespace": "ml", "image": "registry.example.com/train:0.9.5", "gpus_per_node": 0},
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profiles_are_listed_and_bad_ones_flagged(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(PROFILES))
    code, out, _ = run_cli(capsys, "--workspace", str(tmp_path), "cluster", "profiles")
    assert code == 0
    assert "a100         namespace=ml image=registry.example.com/train:0.9.5 gpus/node=8" in out
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps({"x": {"namespace": "Bad_NS"}}))
    code, out, _ = run_cli(capsys, "--workspace", str(tmp_path), "cluster", "profiles")
    assert code == 1 and "error: cluster_profiles.x.namespace: 'Bad_NS' is not a valid namespace name" in out


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "LFOPS_CLUSTER_PROFILES: not valid JSON"),
        ('["a100"]', "LFOPS_CLUSTER_PROFILES: must be a JSON object"),
        ('{"a100": {"gpus": 8}}', "LFOPS_CLUSTER_PROFILES.a100: unknown field 'gpus'"),
    ],
)
def test_malformed_profiles_setting_is_a_one_line_error(raw, message, capsys, monkeypatch, tmp_path):
    with pytest.raises(LfopsError, match=message):
        parse_cluster_profiles(raw)
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", raw)
    code, _, err = run_cli(capsys, "--workspace", str(tmp_path), "cluster", "profiles")
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_preview_shows_the_launch_manifests_with_lineage(env, capsys, monkeypatch):
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(PROFILES))
    cr, merge = approved_merge(env, "k8s-preview")
    ws = str(env.ws.settings.workspace)
    code, out, _ = run_cli(
        capsys, "--workspace", ws, "cluster", "preview", str(cr), "--profile", "a100", "--nodes", "2"
    )
    assert code == 0
    job, config_map, service = yaml.safe_load_all(out)
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed" and service["kind"] == "Service"
    notes = job["metadata"]["annotations"]
    assert notes["lfops.io/commit"] == merge and notes["lfops.io/change-request"] == str(cr)
    settings = Settings.from_env(ws)
    from backend.config import parse_and_validate

    raw = env.ws.repo.read(merge, "configs/k8s-preview.yaml")
    config, dataset_version = parse_and_validate(raw, env.ws.repo.files(merge), "configs/k8s-preview.yaml")
    assert notes["lfops.io/config-hash"] == config.config_hash()
    assert notes["lfops.io/dataset-version"] == dataset_version
    delivered = yaml.safe_load(config_map["data"]["train.yaml"])
    assert delivered["output_dir"] == "/outputs/model" and "lfops" not in delivered
    assert settings.cluster_profiles["a100"].gpus_per_node == 8
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}


def test_preview_refuses_unknown_profiles_and_unmerged_targets(env, capsys, monkeypatch):
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(PROFILES))
    cr, _ = approved_merge(env, "k8s-preview2")
    ws = str(env.ws.settings.workspace)
    code, _, err = run_cli(capsys, "--workspace", ws, "cluster", "preview", str(cr), "--profile", "h100")
    assert code == 2 and "resources.profile: no cluster profile named 'h100' (known: a100, cpu)" in err
    code, _, err = run_cli(capsys, "--workspace", ws, "cluster", "preview", "999", "--profile", "a100")
    assert code == 2 and "change request #999 does not exist" in err
