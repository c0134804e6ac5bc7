"""The Kubernetes objects of a deployment, as pure functions: content, security, rollout safety and bad input.

The last test sends them to a real API server (server-side dry-run apply) when the control plane of k8s/dev runs.
"""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import yaml

from backend.errors import ValidationFailed
from backend.serving import manifests as sm
from backend.serving.keys import new_api_key
from tests.helpers import wait_for
from tests.k8s_fixtures import (
    create_namespace,
    create_outputs_volume,
    delete_namespace,
    delete_outputs_volumes,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LINEAGE = {
    "commit": COMMIT,
    "config_hash": "f" * 64,
    "dataset_version": "sha256:" + "e" * 64,
    "change_request": "12",
}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
GPU = sm.ServingTarget(
    name="a100",
    namespace="ml-serve",
    gpus=1,
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    hub_token_secret="hf-token",
)
CPU = sm.ServingTarget(
    name="cpu", namespace="ml-serve", gpus=0, models_pvc="lfops-workspace", min_replicas=2, max_replicas=2
)


def spec(version: int = 3, kind: str = "adapter", **changes) -> sm.ServingSpec:
    values = {
        "name": "support-bot",
        "model": "sft-demo",
        "version": version,
        "kind": kind,
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "template": "qwen",
        "lora_rank": 12,
        "lineage": LINEAGE,
    }
    return sm.ServingSpec(**{**values, **changes})


def keys(n: int = 2):
    made = [new_api_key() for _ in range(n)]
    return [k for k, _ in made], [s for _, s in made]


def containers(m: sm.ServingManifests) -> dict[str, dict]:
    return {c["name"]: c for c in m.deployment["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_gpu_target_serves_the_adapter_with_vllm_lora_behind_the_gateway_sidecar():
    _, stored = keys()
    m = sm.build_manifests(spec(), GPU, stored)
    c = containers(m)
    assert list(c) == ["model-server", "gateway"]
    server = c["model-server"]
    assert server["image"].startswith("vllm/vllm-openai:") and server["command"] == ["vllm", "serve"]
    args = server["args"]
    assert args[0] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "--enable-lora" in args
    assert args[args.index("--lora-modules") + 1] == "support-bot=/registry/sft-demo/v3"
    assert args[args.index("--max-lora-rank") + 1] == "16"  # rank 12 rounded up to what vLLM accepts
    assert args[args.index("--host") + 1] == "127.0.0.1"  # reachable only through the gateway
    assert "--tensor-parallel-size" not in args
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(server)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}}
    mounts = {v["name"]: v for v in server["volumeMounts"]}
    assert mounts["registry"] == {"name": "registry", "mountPath": "/registry", "readOnly": True}
    assert "dshm" in mounts
    pod = m.deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["registry"]["persistentVolumeClaim"] == {"claimName": "lfops-registry", "readOnly": True}
    assert (
        pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    )
    # the model server's probes run inside the container (it listens on 127.0.0.1); vLLM has /health
    assert server["startupProbe"]["exec"]["command"][-1].endswith("'http://127.0.0.1:8000/health', timeout=4)")
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 1800
    assert server["livenessProbe"]["exec"]

    two = sm.build_manifests(spec(), sm.ServingTarget(**{**GPU.__dict__, "gpus": 2, "max_model_len": 4096}), stored)
    args2 = containers(two)["model-server"]["args"]
    assert args2[args2.index("--tensor-parallel-size") + 1] == "2"
    assert args2[args2.index("--max-model-len") + 1] == "4096"


def test_full_model_on_gpu_is_served_by_name_without_lora():
    _, stored = keys(1)
    args = containers(sm.build_manifests(spec(kind="full", base_model=""), GPU, stored))["model-server"]["args"]
    assert args[:3] == ["/registry/sft-demo/v3", "--served-model-name", "support-bot"]
    assert "--enable-lora" not in args


def test_cpu_target_serves_with_llamafactory_api_and_a_base_model_from_the_models_volume():
    _, stored = keys(1)
    m = sm.build_manifests(spec(base_model="models/tiny-llama", base_model_on_volume=True), CPU, stored)
    server = containers(m)["model-server"]
    assert server["command"] == ["llamafactory-cli", "api"] and server["image"] == CPU.llamafactory_image
    args = dict(zip(server["args"][::2], server["args"][1::2], strict=True))
    assert args == {
        "--model_name_or_path": "/models/models/tiny-llama",
        "--template": "qwen",
        "--infer_backend": "huggingface",
        "--adapter_name_or_path": "/registry/sft-demo/v3",
        "--finetuning_type": "lora",
    }
    env = env_of(server)
    assert env["API_HOST"] == "127.0.0.1" and env["API_PORT"] == "8000" and env["API_MODEL_NAME"] == "support-bot"
    assert env["API_VERBOSE"] == "0"  # LLaMA-Factory would log every prompt
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert server["startupProbe"]["exec"]["command"][-1].endswith("'http://127.0.0.1:8000/v1/models', timeout=4)")
    volumes = {v["name"]: v for v in m.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "lfops-workspace", "readOnly": True}
    assert "dshm" not in volumes


def test_gateway_sidecar_is_the_only_way_in_with_probes_and_keys_from_a_secret():
    plain, stored = keys()
    m = sm.build_manifests(spec(), GPU, stored)
    gw = containers(m)["gateway"]
    args = dict(zip(gw["args"][::2], gw["args"][1::2], strict=True))
    assert gw["command"] == ["python", "-m", "backend.serving.gateway"]
    assert args["--deployment"] == "support-bot" and args["--model-version"] == "sft-demo:v3"
    assert args["--upstream"] == "http://127.0.0.1:8000" and args["--port"] == "8080"
    assert args["--keys-file"] == "/etc/lfops-gateway/keys.json"
    assert gw["ports"] == [{"name": "http", "containerPort": 8080}]
    assert "ports" not in containers(m)["model-server"]
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    mount = gw["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/lfops-gateway" and "subPath" not in mount  # updates reach the gateway
    # the Secret holds hashes only: no key appears anywhere in what is sent
    secret = m.secret
    assert secret["metadata"]["name"] == "lfops-serve-support-bot-keys" and secret["kind"] == "Secret"
    doc = json.loads(secret["stringData"]["keys.json"])
    assert [k["sha256"] for k in doc["keys"]] == [s.sha256 for s in stored]
    text = m.to_yaml()
    assert all(key not in text for key in plain)
    svc = m.service
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == m.deployment["spec"]["selector"]["matchLabels"]
    notes = m.deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/port"] == "8080" and notes["prometheus.io/path"] == "/metrics"


def test_pods_meet_the_restricted_pod_security_standard():
    _, stored = keys(1)
    for target in (GPU, CPU):
        pod = sm.build_manifests(spec(), target, stored).deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert sc["readOnlyRootFilesystem"] is True
            assert "privileged" not in sc and "hostPort" not in json.dumps(c)
            assert c["resources"]["requests"]["cpu"]  # the HPA's CPU utilisation needs a request on every container
        assert not any("hostPath" in v for v in pod["volumes"])


def test_rollout_changes_the_pod_template_not_the_selector_and_never_goes_below_capacity():
    _, stored = keys(1)
    v3, v4 = sm.build_manifests(spec(3), GPU, stored), sm.build_manifests(spec(4), GPU, stored)
    d3, d4 = v3.deployment, v4.deployment
    assert d3["metadata"]["name"] == d4["metadata"]["name"] == "lfops-serve-support-bot"
    assert (
        d3["spec"]["selector"]
        == d4["spec"]["selector"]
        == {"matchLabels": {"app.kubernetes.io/managed-by": "lfops", "lfops.io/deployment": "support-bot"}}
    )
    assert d3["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    t3, t4 = d3["spec"]["template"]["metadata"], d4["spec"]["template"]["metadata"]
    assert (t3["labels"]["lfops.io/model-version"], t4["labels"]["lfops.io/model-version"]) == ("v3", "v4")
    assert t4["annotations"]["lfops.io/model-version"] == "sft-demo:v4"
    # objects a rollout does not touch stay byte-for-byte the same
    assert v3.service == v4.service and v3.hpa == v4.hpa and v3.pdb == v4.pdb
    # the gateway drains before the model server stops
    server, gw = containers(v3)["model-server"], containers(v3)["gateway"]
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] > gw["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert d3["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 20


def test_lineage_labels_are_valid_and_annotations_keep_full_values():
    _, stored = keys(1)
    m = sm.build_manifests(spec(), GPU, stored)
    for obj in [*m.objects(), m.deployment["spec"]["template"]]:
        for key, value in obj["metadata"]["labels"].items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    labels = m.deployment["spec"]["template"]["metadata"]["labels"]
    notes = m.deployment["spec"]["template"]["metadata"]["annotations"]
    assert labels["lfops.io/commit"] == COMMIT[:12] and notes["lfops.io/commit"] == COMMIT
    assert labels["lfops.io/config-hash"] == "f" * 12 and notes["lfops.io/config-hash"] == "f" * 64
    assert labels["lfops.io/dataset-version"] == "sha256-" + "e" * 12
    assert notes["lfops.io/dataset-version"] == LINEAGE["dataset_version"]
    assert labels["lfops.io/model"] == "sft-demo" and labels["lfops.io/change-request"] == "12"
    assert "lfops.io/commit" not in m.service["metadata"]["labels"]


def test_hpa_scales_on_cpu_by_default_and_on_in_flight_requests_when_asked():
    _, stored = keys(1)
    m = sm.build_manifests(spec(), GPU, stored)
    hpa = m.hpa
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": m.name}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert "replicas" not in m.deployment["spec"]  # the HPA owns the count
    pods = sm.build_manifests(spec(), sm.ServingTarget(**{**GPU.__dict__, "in_flight_target": 2.5}), stored).hpa
    assert pods["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "lfops_gateway_in_flight_requests"},
                "target": {"type": "AverageValue", "averageValue": "2500m"},
            },
        }
    ]
    fixed = sm.build_manifests(spec(), CPU, stored)
    assert fixed.hpa is None and fixed.deployment["spec"]["replicas"] == 2
    assert fixed.pdb["spec"]["maxUnavailable"] == 1
    assert fixed.pdb["spec"]["selector"]["matchLabels"] == fixed.deployment["spec"]["selector"]["matchLabels"]
    assert [o["kind"] for o in fixed.objects()] == ["Secret", "Deployment", "Service", "PodDisruptionBudget"]


def test_manifests_are_pure_and_the_yaml_is_what_is_sent():
    _, stored = keys(1)
    a, b = sm.build_manifests(spec(), GPU, stored), sm.build_manifests(spec(), GPU, stored)
    assert a == b
    assert list(yaml.safe_load_all(a.to_yaml())) == a.objects()
    assert [o["kind"] for o in a.objects()] == [
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]


@pytest.mark.parametrize(
    ("spec_change", "target_change", "message"),
    [
        ({"name": "Support_Bot"}, {}, "name: 'Support_Bot' must be"),
        ({"version": 0}, {}, "version: must be a positive integer"),
        ({"kind": "gguf"}, {}, "kind: 'gguf' must be adapter or full"),
        ({"base_model": ""}, {}, "base_model: an adapter needs its base model"),
        ({"base_model": "../etc", "base_model_on_volume": True}, {"models_pvc": "m"}, "base_model: '../etc' must be"),
        ({"base_model_on_volume": True, "base_model": "m"}, {}, "target.a100.models_pvc: required"),
        ({}, {"namespace": "Bad NS"}, "target.a100.namespace: 'Bad NS' is not a valid namespace name"),
        ({}, {"memory": "lots"}, "target.a100.memory: 'lots' is not a Kubernetes quantity"),
        ({}, {"min_replicas": 3, "max_replicas": 2}, "target.a100.max_replicas: must be at least min_replicas"),
        ({}, {"registry_pvc": "Bad_PVC"}, "target.a100.registry_pvc: 'Bad_PVC' is not a valid object name"),
        ({}, {"cpu_target_percent": 0}, "target.a100.cpu_target_percent: must be between 1 and 100"),
        ({}, {"gpus": -1}, "target.a100.gpus: must be 0 or more"),
    ],
)
def test_bad_input_names_the_field(spec_change, target_change, message):
    _, stored = keys(1)
    with pytest.raises(ValidationFailed) as err:
        sm.build_manifests(spec(**spec_change), sm.ServingTarget(**{**GPU.__dict__, **target_change}), stored)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_objects_pass_server_side_dry_run_apply_on_kubernetes(request):
    """Every object, for a GPU and a CPU target, accepted by a real kube-apiserver 1.36 (admission included)."""
    from kubernetes import dynamic

    cluster = request.getfixturevalue("k8s_cluster")
    namespace = create_namespace(cluster, "lfops-serve-t")
    _, stored = keys(2)
    try:
        with cluster.client() as api:
            dyn = dynamic.DynamicClient(api)
            for target in (GPU, sm.ServingTarget(**{**CPU.__dict__, "max_replicas": 3, "in_flight_target": 4})):
                m = sm.build_manifests(spec(), sm.ServingTarget(**{**target.__dict__, "namespace": namespace}), stored)
                for obj in m.objects():
                    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                    resource.server_side_apply(
                        body=obj,
                        name=obj["metadata"]["name"],
                        namespace=namespace,
                        field_manager="lfops-test",
                        dry_run="All",
                    )
            # dry-run: nothing was created
            apps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
            assert apps.get(namespace=namespace).items == []
    finally:
        with contextlib.suppress(Exception):
            delete_namespace(cluster, namespace)


@pytest.mark.slow
def test_applied_deployment_schedules_on_gpu_nodes_rolls_pod_by_pod_and_deletes_cleanly(request):
    """Applied for real: pods land on the GPU nodes, a new version replaces them one by one without ever going
    below the wanted replicas (maxUnavailable 0), and deleting by the deployment's labels leaves nothing."""
    from kubernetes import client, dynamic

    cluster = request.getfixturevalue("k8s_cluster")
    namespace = create_namespace(cluster, "lfops-serve-t")
    _, stored = keys(1)
    target = sm.ServingTarget(**{**GPU.__dict__, "namespace": namespace, "min_replicas": 2, "max_replicas": 2})
    try:
        create_outputs_volume(cluster, namespace, claim="lfops-registry")  # the registry's volume, bound
        with cluster.client() as api:
            dyn = dynamic.DynamicClient(api)
            apps = client.AppsV1Api(api)
            core = client.CoreV1Api(api)

            def apply(m: sm.ServingManifests) -> None:
                for obj in m.objects():
                    dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).server_side_apply(
                        body=obj, name=obj["metadata"]["name"], namespace=namespace, field_manager="lfops-test"
                    )

            def settled(version: str) -> bool:
                d = apps.read_namespaced_deployment("lfops-serve-support-bot", namespace)
                pods = core.list_namespaced_pod(namespace, label_selector="lfops.io/deployment=support-bot").items
                live = [p for p in pods if p.metadata.deletion_timestamp is None]
                return (
                    d.status.observed_generation == d.metadata.generation
                    and d.status.updated_replicas == 2
                    and d.status.available_replicas == 2
                    and (d.status.replicas or 0) == 2
                    and len(live) == 2
                    and all(p.metadata.labels["lfops.io/model-version"] == version for p in live)
                )

            apply(sm.build_manifests(spec(3), target, stored))
            wait_for(lambda: settled("v3"), 120, 0.2, "two v3 pods available")
            pods = core.list_namespaced_pod(namespace, label_selector="lfops.io/deployment=support-bot").items
            assert {p.spec.node_name for p in pods} <= {"gpu-node-0", "gpu-node-1"}
            assert all(p.status.phase == "Running" for p in pods)

            apply(sm.build_manifests(spec(4), target, stored))
            available = [2]

            def rolled_out() -> bool:  # and on the way, how many pods were available
                if settled("v4"):
                    return True
                d = apps.read_namespaced_deployment("lfops-serve-support-bot", namespace)
                available.append(d.status.available_replicas or 0)
                return False

            wait_for(rolled_out, 180, 0.1, "the rollout to v4")
            lowest = min(available)
            assert lowest == 2  # never below capacity during the rollout
            rs = apps.list_namespaced_replica_set(namespace, label_selector="lfops.io/deployment=support-bot").items
            assert len(rs) == 2 and sorted(r.spec.replicas for r in rs) == [0, 2]

            # undeploy: everything lfops made for the deployment, found by its labels
            for obj in reversed(sm.build_manifests(spec(4), target, stored).objects()):
                dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).delete(
                    name=obj["metadata"]["name"], namespace=namespace, body={"propagationPolicy": "Foreground"}
                )
            selector = "lfops.io/deployment=support-bot"

            def nothing_left() -> bool:
                return not any(
                    (
                        apps.list_namespaced_deployment(namespace, label_selector=selector).items,
                        apps.list_namespaced_replica_set(namespace, label_selector=selector).items,
                        core.list_namespaced_pod(namespace, label_selector=selector).items,
                        core.list_namespaced_service(namespace, label_selector=selector).items,
                        core.list_namespaced_secret(namespace, label_selector=selector).items,
                    )
                )

            wait_for(nothing_left, 120, 0.2, "every object of the deployment deleted")
    finally:
        with contextlib.suppress(Exception):
            delete_namespace(cluster, namespace)
        delete_outputs_volumes(cluster, namespace)
