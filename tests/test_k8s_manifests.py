"""The Kubernetes objects of a run, as pure functions (what the UI shows for review before launch).

The same manifests are created on a real API server in test_k8s_runner.py; here: their content and bad input.
"""

from __future__ import annotations

import re

import pytest
import yaml

from backend.errors import ValidationFailed
from backend.runners.base import Resources, RunSpec
from backend.runners.kubernetes import KubernetesRunner
from backend.runners.kubernetes import manifests as km
from backend.settings import ClusterProfile, Settings

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TRAIN_YAML = """\
model_name_or_path: models/tiny-llama
stage: sft
do_train: true
finetuning_type: lora
dataset: demo
template: default
learning_rate: 5e-5
output_dir: saves/tiny
lfops:
  description: kept out of the pod
"""
LINEAGE = {
    "config_hash": "f" * 64,
    "dataset_version": "sha256:" + "e" * 64,
    "change_request": "12",
    "approved_by": "rita, ruth and a very long list of reviewers that does not fit in a label value at all",
}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def spec(nodes: int = 1, gpus: int = 2, run_id: int = 42, **resources) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        repo_url="https://git.example.com/team/configs.git",
        commit=COMMIT,
        config_path="configs/tiny.yaml",
        training_yaml=TRAIN_YAML,
        resources=Resources(gpus_per_node=gpus, nodes=nodes, profile="a100", **resources),
        labels=LINEAGE,
    )


PROFILE = ClusterProfile(
    name="a100",
    namespace="ml-train",
    image="registry.example.com/train:0.9.5",
    node_selector={"nvidia.com/gpu.product": "A100"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    priority_class="training",
    hub_token_secret="hf-token",
    active_deadline_seconds=3600,
    backoff_limit=1,
    ttl_seconds_after_finished=600,
)


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_one_node_is_a_job_with_gpu_limits_profile_placement_and_config_map():
    m = km.build_manifests(spec(), PROFILE)
    job, cm = m.job, m.config_map
    assert m.service is None and m.external_id == "ml-train/lfops-run-42"
    assert (job["kind"], job["metadata"]["name"], job["metadata"]["namespace"]) == ("Job", "lfops-run-42", "ml-train")
    assert "completionMode" not in job["spec"] and job["spec"]["completions"] == 1
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["priorityClassName"] == "training"
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert container(job)["image"] == "registry.example.com/train:0.9.5"
    assert container(job)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert env_of(job)["NPROC_PER_NODE"] == "2" and "NNODES" not in env_of(job)
    # the training YAML travels in an immutable ConfigMap, without lfops metadata, output_dir on the outputs volume
    assert cm["immutable"] is True and cm["metadata"]["name"] == "lfops-run-42-config"
    delivered = yaml.safe_load(cm["data"]["train.yaml"])
    assert "lfops" not in delivered and delivered["output_dir"] == "/outputs/model"
    assert delivered["learning_rate"] == 5e-5 and delivered["dataset"] == "demo"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert volumes["outputs"]["persistentVolumeClaim"]["claimName"] == "lfops-outputs"
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["outputs"]["subPath"] == "runs/42" and mounts["config"]["readOnly"] is True
    assert container(job)["command"] == ["llamafactory-cli", "train", "/etc/lfops/train.yaml"]


def test_hub_token_is_only_a_secret_reference():
    m = km.build_manifests(spec(), PROFILE)
    ref = env_of(m.job)["HF_TOKEN"]
    assert ref == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}}
    without = km.build_manifests(spec(), ClusterProfile(name="a100", namespace="ml-train"))
    assert "HF_TOKEN" not in env_of(without.job)


def test_several_nodes_are_an_indexed_job_with_headless_service_and_torchrun_env():
    m = km.build_manifests(spec(nodes=3, gpus=8), PROFILE)
    job, svc = m.job, m.service
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"] == "lfops-run-42"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "lfops-run-42"}
    env = env_of(job)
    assert env["FORCE_TORCHRUN"] == "1" and env["NNODES"] == "3" and env["NPROC_PER_NODE"] == "8"
    assert env["NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert "RANK" not in env  # LLaMA-Factory reads NODE_RANK; RANK would confuse torchrun (hiyouga/LlamaFactory#7326)
    assert env["MASTER_ADDR"] == "lfops-run-42-0.lfops-run-42.ml-train.svc"
    assert env["MASTER_PORT"] == "29500"


def test_lineage_labels_are_valid_and_annotations_keep_full_values():
    m = km.build_manifests(spec(), PROFILE)
    for obj in [*m.objects(), m.job["spec"]["template"]]:
        for key, value in obj["metadata"]["labels"].items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    labels, notes = m.job["metadata"]["labels"], m.job["metadata"]["annotations"]
    assert labels["app.kubernetes.io/managed-by"] == "lfops" and labels["lfops.io/run-id"] == "42"
    assert labels["lfops.io/commit"] == COMMIT[:12] and notes["lfops.io/commit"] == COMMIT
    assert labels["lfops.io/config-hash"] == "f" * 12 and notes["lfops.io/config-hash"] == "f" * 64
    assert labels["lfops.io/dataset-version"] == "sha256-" + "e" * 12
    assert notes["lfops.io/dataset-version"] == LINEAGE["dataset_version"]
    assert labels["lfops.io/change-request"] == "12"
    assert notes["lfops.io/approved-by"] == LINEAGE["approved_by"]
    assert "kueue.x-k8s.io/queue-name" not in labels and "suspend" not in m.job["spec"]


def test_kueue_queue_label_and_suspended_job():
    profile = ClusterProfile(name="a100", namespace="ml-train", kueue_queue="team-a")
    m = km.build_manifests(spec(), profile)
    assert m.job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert m.job["spec"]["suspend"] is True


def test_manifests_are_pure_and_the_review_yaml_is_what_is_sent():
    a, b = km.build_manifests(spec(), PROFILE), km.build_manifests(spec(), PROFILE)
    assert a == b
    docs = list(yaml.safe_load_all(a.to_yaml()))
    assert docs == a.objects()
    assert "train.yaml: |" in a.to_yaml()  # the config reads as a block for the reviewer


def test_owner_reference_points_at_the_created_job_without_extra_privileges():
    m = km.build_manifests(spec(), PROFILE)
    created = {"metadata": {"name": "lfops-run-42", "uid": "1234"}}
    owned = km.owned_by(m.config_map, created)
    assert owned["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "lfops-run-42", "uid": "1234", "controller": False}
    ]
    assert "ownerReferences" not in m.config_map["metadata"]  # the original is untouched


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "resources.nodes: must be at least 1"),
        ({"gpus": -1}, "resources.gpus_per_node: must be 0 or more"),
        ({"memory": "lots"}, "resources.memory: 'lots' is not a Kubernetes quantity"),
        ({"run_id": 0}, "run_id: must be a positive integer"),
    ],
)
def test_bad_resources_name_the_field(change, message):
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(spec(**change), PROFILE)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "Not_A_Namespace"}, "cluster_profiles.a100.namespace: 'Not_A_Namespace' is not a valid"),
        ({"image": " "}, "cluster_profiles.a100.image: required"),
        ({"tolerations": {"key": "x"}}, "cluster_profiles.a100.tolerations: must be a list"),
        ({"outputs_pvc": "Bad Name"}, "cluster_profiles.a100.outputs_pvc: 'Bad Name' is not a valid object name"),
        ({"master_port": 0}, "cluster_profiles.a100.master_port: must be a TCP port"),
        ({"pod_labels": {"team": "a b"}}, "cluster_profiles.a100.pod_labels: 'a b' is not a valid label value"),
    ],
)
def test_bad_profiles_name_the_field(change, message):
    profile = ClusterProfile(**{**PROFILE.__dict__, **change})
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(spec(), profile)
    assert message in str(err.value)


def test_bad_training_yaml_and_commit_are_refused():
    bad = RunSpec(run_id=1, repo_url="r", commit="main", config_path="c.yaml", training_yaml="")
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(bad, PROFILE)
    assert "training_yaml: is empty" in str(err.value) and "commit: 'main' is not a commit id" in str(err.value)


def test_runner_picks_the_named_profile_and_explains_unknown_ones(tmp_path):
    settings = Settings.from_env(tmp_path)
    runner = KubernetesRunner(settings, profiles={"a100": PROFILE, "cpu": ClusterProfile(name="cpu")})
    assert "namespace: ml-train" in runner.preview(spec())
    other = RunSpec(**{**spec().__dict__, "resources": Resources(profile="h100")})
    with pytest.raises(
        ValidationFailed, match=r"resources.profile: no cluster profile named 'h100' \(known: a100, cpu\)"
    ):
        runner.preview(other)
    with pytest.raises(ValidationFailed, match="no cluster profiles configured"):
        KubernetesRunner(settings, profiles={}).preview(spec())


def test_output_dir_is_on_the_outputs_mount_when_the_app_mounts_it():
    mounted = ClusterProfile(**{**PROFILE.__dict__, "outputs_mount": "/outputs"})
    assert KubernetesRunner(profiles={"a100": mounted}).output_dir("ml-train/lfops-run-42") == "/outputs/runs/42/model"
    assert KubernetesRunner(profiles={"a100": PROFILE}).output_dir("ml-train/lfops-run-42") == ""


def test_clone_init_container_checks_out_exactly_the_commit(tmp_path):
    """The init container's own command, run here with real git against a real repository."""
    import subprocess

    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "data").mkdir()
    (origin / "data" / "dataset_info.json").write_text('{"demo": {"file_name": "demo.json"}}')
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (origin / "data" / "dataset_info.json").write_text("{}")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)

    profile = ClusterProfile(**{**PROFILE.__dict__, "clone_image": "alpine/git:2.47.2"})
    run = RunSpec(**{**spec().__dict__, "repo_url": str(origin), "commit": commit})
    pod = km.build_manifests(run, profile).job["spec"]["template"]["spec"]
    (clone,) = pod["initContainers"]
    assert clone["image"] == "alpine/git:2.47.2"
    assert container({"spec": {"template": {"spec": pod}}})["workingDir"] == "/repo"
    env = {e["name"]: e["value"] for e in clone["env"]}
    env["REPO_DIR"] = str(tmp_path / "repo")  # the emptyDir mounted at /repo in the pod
    subprocess.run(clone["command"], env={**env, "PATH": "/usr/bin:/bin"}, check=True)
    checked_out = tmp_path / "repo" / "data" / "dataset_info.json"
    assert checked_out.read_text() == '{"demo": {"file_name": "demo.json"}}'  # the commit's tree, not main's


def test_private_repo_credentials_come_from_a_secret_volume():
    profile = ClusterProfile(
        **{**PROFILE.__dict__, "clone_image": "alpine/git", "repo_credentials_secret": "git-creds"}
    )
    pod = km.build_manifests(spec(), profile).job["spec"]["template"]["spec"]
    assert {"name": "git-credentials", "secret": {"secretName": "git-creds"}} in pod["volumes"]
    assert "store --file=/etc/lfops-git/.git-credentials" in pod["initContainers"][0]["command"][2]


@pytest.mark.parametrize(
    "url",
    [
        "https://bot:ghp_abcdefghijklmnopqrstuvwxyz0123456789@git.example/team/configs.git",
        "https://glpat-abcdefghijklmnopqrstuvwxyz0123@git.example/team/configs.git",
    ],
)
def test_a_repo_url_with_credentials_is_refused_before_it_reaches_the_job(url):
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(RunSpec(**{**spec().__dict__, "repo_url": url}), PROFILE)
    assert "LFOPS_REPO_URL: carries credentials" in str(err.value)
    assert "abcdefghijklmnop" not in str(err.value)


def test_every_container_runs_as_restricted_asks_whatever_the_images_user():
    profile = ClusterProfile(**{**PROFILE.__dict__, "clone_image": "alpine/git", "run_as_user": 1234})
    for nodes in (1, 3):
        pod = km.build_manifests(spec(nodes=nodes), profile).job["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 1234,
            "runAsGroup": 1234,
            "fsGroup": 1234,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for c in pod["containers"] + pod["initContainers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
            assert {"name": "HOME", "value": "/tmp"} in c["env"]  # the uid has no home in the image
    assert ClusterProfile(name="x").run_as_user == 10001  # the app's own uid by default


def test_cpu_and_memory_come_from_the_profile_unless_the_run_names_them():
    sized = ClusterProfile(
        **{**PROFILE.__dict__, "cpu_request": "8", "memory_request": "64Gi", "cpu_limit": "16", "memory_limit": "96Gi"}
    )
    assert container(km.build_manifests(spec(), sized).job)["resources"] == {
        "limits": {"nvidia.com/gpu": "2", "cpu": "16", "memory": "96Gi"},
        "requests": {"cpu": "8", "memory": "64Gi"},
    }
    # the run's own request wins; its memory is then also its limit
    assert container(km.build_manifests(spec(cpu="4", memory="32Gi"), sized).job)["resources"] == {
        "limits": {"nvidia.com/gpu": "2", "cpu": "16", "memory": "32Gi"},
        "requests": {"cpu": "4", "memory": "32Gi"},
    }
    # no limit given: the memory limit is the request, and CPU is not capped
    requests_only = ClusterProfile(**{**PROFILE.__dict__, "cpu_request": "500m", "memory_request": "8Gi"})
    assert container(km.build_manifests(spec(gpus=1), requests_only).job)["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
        "requests": {"cpu": "500m", "memory": "8Gi"},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory_request": "lots"}, "cluster_profiles.a100.memory_request: 'lots' is not a Kubernetes quantity"),
        ({"cpu_limit": "0"}, "cluster_profiles.a100.cpu_limit: '0' must be more than 0"),
        ({"run_as_user": 0}, "cluster_profiles.a100.run_as_user: must be a uid of 1 or more"),
    ],
)
def test_bad_pod_sizes_and_users_name_the_profile_field(change, message):
    with pytest.raises(ValidationFailed) as err:
        km.build_manifests(spec(), ClusterProfile(**{**PROFILE.__dict__, **change}))
    assert message in str(err.value)


def test_profile_sizes_are_checked_when_the_settings_are_read():
    from backend.errors import SettingsError
    from backend.settings import parse_cluster_profiles

    parsed = parse_cluster_profiles('{"gpu": {"cpu_request": "8", "memory_limit": "64Gi", "run_as_user": "2000"}}')
    assert (parsed["gpu"].cpu_request, parsed["gpu"].memory_limit, parsed["gpu"].run_as_user) == ("8", "64Gi", 2000)
    with pytest.raises(SettingsError, match=r"LFOPS_CLUSTER_PROFILES.gpu.run_as_user: must be an integer >= 1"):
        parse_cluster_profiles('{"gpu": {"run_as_user": 0}}')
