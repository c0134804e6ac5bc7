"""Deploying the app: k8s/ (kustomize base + sqlite/postgres overlays) builds, applies to a real API server, and its
ServiceAccount can do exactly what the Kubernetes runner needs in its own namespace, and nothing elsewhere.

"Acting as the ServiceAccount" is Kubernetes impersonation (Impersonate-User: system:serviceaccount:NS:NAME) by the
cluster admin, so the API server's real RBAC authorizer decides every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from backend.errors import ClusterError
from backend.runners.base import Resources, RunSpec, RunState
from backend.runners.kubernetes import KubernetesRunner
from backend.settings import ClusterProfile
from tests.helpers import wait_for
from tests.k8s_fixtures import (
    ROOT,
    TRAINING_LOG,
    create_namespace,
    delete_namespace,
    job_names,
    kustomize_build,
    pods_of,
    serve_pod_logs,
)

OVERLAYS = ROOT / "k8s" / "overlays"
RUNNER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "configmaps"): {"create", "get"},
    ("", "services"): {"create", "get"},
    ("", "events"): {"list"},
}
# backend/serving/kubernetes.py: apply (create + patch), rollout progress, undeploy by label; Secrets never read
SERVING_RULES = {
    ("apps", "deployments"): {"get", "create", "patch", "deletecollection"},
    ("", "secrets"): {"create", "patch", "deletecollection"},
    ("", "services"): {"create", "patch", "deletecollection"},
    ("autoscaling", "horizontalpodautoscalers"): {"create", "patch", "deletecollection"},
    ("policy", "poddisruptionbudgets"): {"create", "patch", "deletecollection"},
}
APP_RULES = {k: RUNNER_RULES.get(k, set()) | SERVING_RULES.get(k, set()) for k in RUNNER_RULES | SERVING_RULES}


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}


def webui_container(objs: list[dict]) -> dict:
    return by_kind(objs)["Deployment/lfops-webui"]["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    try:
        return {name: kustomize_build(OVERLAYS / name) for name in ("sqlite", "postgres")}
    except FileNotFoundError as exc:  # neither the cluster's kubectl nor Go to build kustomize
        pytest.skip(f"no kustomize: {exc}")


def test_overlays_build_the_app_with_least_privilege_and_secret_references_only(built):
    for name, objs in built.items():
        kinds = by_kind(objs)
        assert {
            "Namespace/lfops",
            "ServiceAccount/lfops-webui",
            "Role/lfops-runner",
            "RoleBinding/lfops-runner",
            "ConfigMap/lfops-settings",
            "Deployment/lfops-webui",
            "Service/lfops-webui",
            "PersistentVolumeClaim/lfops-workspace",
            "PersistentVolumeClaim/lfops-registry",
            "PersistentVolumeClaim/lfops-outputs",
            "NetworkPolicy/lfops-webui",
        } == set(kinds), name
        assert all(o["metadata"].get("namespace") == "lfops" for o in objs if o["kind"] != "Namespace")
        assert not [o for o in objs if o["kind"] in ("Secret", "ClusterRole", "ClusterRoleBinding")]
        rules: dict[tuple[str, str], set[str]] = {}
        for rule in kinds["Role/lfops-runner"]["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    rules.setdefault((g, r), set()).update(rule["verbs"])
        assert rules == APP_RULES
        binding = kinds["RoleBinding/lfops-runner"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lfops-webui", "namespace": "lfops"}]
        pod = kinds["Deployment/lfops-webui"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "lfops-webui" and pod["securityContext"]["runAsNonRoot"] is True
        container = webui_container(objs)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "lfops-hub-token",
            "key": "HF_TOKEN",
            "optional": True,
        }
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"lfops-workspace", "lfops-registry", "lfops-outputs"}
    sqlite_env = {e["name"] for e in webui_container(built["sqlite"])["env"]}
    sqlite_egress = by_kind(built["sqlite"])["NetworkPolicy/lfops-webui"]["spec"]["egress"]
    pg_egress = by_kind(built["postgres"])["NetworkPolicy/lfops-webui"]["spec"]["egress"]
    assert {p["port"] for rule in pg_egress for p in rule["ports"]} - {
        p["port"] for rule in sqlite_egress for p in rule["ports"]
    } == {5432}
    assert "LFOPS_DATABASE_URL" not in sqlite_env
    assert by_kind(built["sqlite"])["ConfigMap/lfops-settings"]["data"]["LFOPS_DATABASE_URL"].startswith("sqlite:")
    pg_env = {e["name"]: e for e in webui_container(built["postgres"])["env"]}
    assert pg_env["LFOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lfops-database", "key": "url"}
    assert "LFOPS_DATABASE_URL" not in by_kind(built["postgres"])["ConfigMap/lfops-settings"]["data"]


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def test_the_app_is_locked_down_probed_and_gets_its_first_admin_from_a_secret(built):
    for name, objs in built.items():
        kinds = by_kind(objs)
        assert RESTRICTED.items() <= kinds["Namespace/lfops"]["metadata"]["labels"].items(), name
        container = webui_container(objs)
        pod = kinds["Deployment/lfops-webui"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        kinds_of_probe = ("startupProbe", "readinessProbe", "livenessProbe")
        probes = {kind: container[kind]["httpGet"]["path"] for kind in kinds_of_probe}
        assert probes == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
        # the admin's password: a file from the Secret lfops-admin where Settings reads LFOPS_* secrets, never an env
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["admin-password"]["secret"]["secretName"] == "lfops-admin"
        assert volumes["admin-password"]["secret"]["items"] == [{"key": "password", "path": "LFOPS_ADMIN_PASSWORD"}]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["admin-password"] == {"name": "admin-password", "mountPath": "/run/secrets", "readOnly": True}
        assert "LFOPS_ADMIN_PASSWORD" not in {e["name"] for e in container["env"]}
        policy = kinds["NetworkPolicy/lfops-webui"]["spec"]
        selector = kinds["Deployment/lfops-webui"]["spec"]["selector"]["matchLabels"]
        assert policy["podSelector"]["matchLabels"] == selector
        assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 7860}]}]
        egress_ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
        assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443), ("TCP", 22)} <= egress_ports


def test_shipped_cluster_profiles_are_valid_profiles(built):
    from backend.runners.kubernetes.manifests import check_profile

    data = by_kind(built["sqlite"])["ConfigMap/lfops-settings"]["data"]
    profiles = json.loads(data["LFOPS_CLUSTER_PROFILES"])
    for name, spec in profiles.items():
        assert check_profile(ClusterProfile(name=name, **spec)) == []
        assert spec["namespace"] == "lfops"  # the Role grants nothing outside the app's namespace
        assert spec["outputs_mount"] in {m["mountPath"] for m in webui_container(built["sqlite"])["volumeMounts"]}


def _relocated_overlay(tmp: Path, overlay: Path, namespace: str) -> list[dict]:
    """The overlay built into another namespace (a kustomization on top of it), as an admin would for a second team."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {namespace}\nresources:\n  - {os.path.relpath(overlay, tmp)}\n"
    )
    return kustomize_build(tmp)


def _apply(api: client.ApiClient, objs: list[dict]) -> None:
    dyn = dynamic.DynamicClient(api)
    for obj in objs:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager="lfops-test",
            force_conflicts=True,
        )


@pytest.fixture
def deployed(k8s_cluster, tmp_path):
    """k8s/overlays/sqlite applied (server-side apply) into a fresh namespace; yields (namespace, objects)."""
    namespace = f"lfops-app-{uuid.uuid4().hex[:8]}"
    objs = _relocated_overlay(tmp_path / "kustomize", OVERLAYS / "sqlite", namespace)
    pv = f"{namespace}-outputs"
    with k8s_cluster.client() as api:
        core = client.CoreV1Api(api)
        # no storage provisioner here: a volume waits for the overlay's outputs claim, so training pods can schedule
        core.create_persistent_volume(
            {
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "500Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{pv}"},
                    "claimRef": {"namespace": namespace, "name": "lfops-outputs"},
                },
            }
        )
        try:
            _apply(api, objs)
            wait_for(
                lambda: core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items,
                60,
                what="default ServiceAccount",
            )
            serve_pod_logs(k8s_cluster, namespace, tmp_path / "train.log", TRAINING_LOG)
            yield namespace, objs
        finally:
            with contextlib.suppress(ApiException):
                client.CustomObjectsApi(api).delete_cluster_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", "clusterlogs", f"logs-{namespace}"
                )
            delete_namespace(k8s_cluster, namespace)
            core.delete_persistent_volume(pv)


def _spec(run_id: int) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        repo_url="https://git.example.com/configs.git",
        commit="a" * 40,
        config_path="configs/x.yaml",
        training_yaml="stage: sft\n",
        resources=Resources(gpus_per_node=1, profile="app"),
    )


@pytest.mark.slow
def test_the_apps_service_account_runs_jobs_in_its_namespace_and_nowhere_else(k8s_cluster, deployed):
    namespace, objs = deployed
    sa = f"system:serviceaccount:{namespace}:lfops-webui"
    (shipped,) = json.loads(by_kind(objs)["ConfigMap/lfops-settings"]["data"]["LFOPS_CLUSTER_PROFILES"]).values()
    # the shipped profile, pointed at the namespace this copy of the app was deployed to
    app = ClusterProfile(name="app", **{**shipped, "namespace": namespace})
    long = ClusterProfile(**{**app.__dict__, "name": "long", "pod_annotations": {"lfops.test/run-duration": "60s"}})
    runner = KubernetesRunner(profiles={"app": app, "long": long}, client_factory=k8s_cluster.factory(sa))
    other = create_namespace(k8s_cluster)
    try:
        # its own namespace: create, watch, read logs, delete
        eid = runner.submit(_spec(1))
        assert runner.wait(eid, timeout=60).state == RunState.SUCCEEDED
        assert list(runner.logs(eid)) == TRAINING_LOG
        running = runner.submit(
            RunSpec(**{**_spec(2).__dict__, "resources": Resources(gpus_per_node=1, profile="long")})
        )
        wait_for(lambda: runner.status(running).state == RunState.RUNNING, 30, what="running")
        runner.cancel(running)
        assert runner.wait(running, timeout=30).state == RunState.CANCELLED
        # another namespace: refused by the API server, nothing created
        elsewhere = ClusterProfile(**{**app.__dict__, "name": "elsewhere", "namespace": other})
        stray = KubernetesRunner(profiles={"elsewhere": elsewhere}, client_factory=k8s_cluster.factory(sa))
        with pytest.raises(ClusterError, match=r"create job .*: forbidden \(HTTP 403\)"):
            stray.submit(RunSpec(**{**_spec(3).__dict__, "resources": Resources(profile="elsewhere")}))
        assert job_names(k8s_cluster, other) == []
        # and nothing beyond the runner's needs in its own namespace
        with k8s_cluster.client(sa) as api:
            core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
            forbidden = {
                "read secrets": lambda: core.list_namespaced_secret(namespace),
                "create pods": lambda: core.create_namespaced_pod(
                    namespace, {"metadata": {"name": "direct"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
                ),
                "delete pods": lambda: core.delete_collection_namespaced_pod(namespace),
                "patch jobs": lambda: batch.patch_namespaced_job("lfops-run-1", namespace, {"metadata": {}}),
                "delete configmaps": lambda: core.delete_namespaced_config_map("lfops-run-1-config", namespace),
                "list jobs elsewhere": lambda: batch.list_namespaced_job(other),
                "read nodes": lambda: core.list_node(),
            }
            for what, call in forbidden.items():
                with pytest.raises(ApiException) as err:
                    call()
                assert err.value.status == 403, what
    finally:
        runner.close()
        delete_namespace(k8s_cluster, other)


def _as_pod(name: str, template: dict) -> dict:
    metadata = {**template.get("metadata", {}), "name": name}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def _serving_pod_template(namespace: str) -> dict | None:
    """The pod template of a model deployment (backend.serving), where this checkout has serving."""
    try:
        from backend.serving import manifests as sm
        from backend.serving.keys import new_api_key
    except ImportError:
        return None
    spec = sm.ServingSpec(
        name="support-bot",
        model="sft-demo",
        version=3,
        kind="adapter",
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        template="qwen",
        lora_rank=8,
        lineage={"commit": "a" * 40},
    )
    target = sm.ServingTarget(name="gpu", namespace=namespace, gpus=1)
    _key, stored = new_api_key()
    return sm.build_manifests(spec, target, [stored]).deployment["spec"]["template"]


@pytest.mark.slow
def test_everything_lfops_creates_is_admitted_where_restricted_is_enforced(k8s_cluster, deployed):
    """The overlay's namespace enforces the "restricted" Pod Security Standard (the API server's built-in PodSecurity
    admission); the app's pod, every training pod lfops builds (one node, several nodes, with the clone init
    container and its credentials) and a model deployment's pod are admitted there; a plain pod is not."""
    from backend.runners.kubernetes.manifests import build_manifests

    namespace, objs = deployed
    with k8s_cluster.client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        labels = core.read_namespace(namespace).metadata.labels
        assert RESTRICTED.items() <= labels.items()
        # the control: PodSecurity is enforced here, so a plain pod is refused by the API server
        plain = {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(namespace, plain, dry_run="All")
        assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body
        # the app: its pod template, and the pod its ReplicaSet really creates
        template = by_kind(objs)["Deployment/lfops-webui"]["spec"]["template"]
        core.create_namespaced_pod(namespace, _as_pod("webui-admission", template), dry_run="All")
        wait_for(
            lambda: (
                (apps.read_namespaced_deployment("lfops-webui", namespace).status.replicas or 0) >= 1
                and core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=webui").items
            ),
            60,
            what="the app's pod",
        )
        # training pods: as built for the shipped profile, with and without clone and several nodes
        (shipped,) = json.loads(by_kind(objs)["ConfigMap/lfops-settings"]["data"]["LFOPS_CLUSTER_PROFILES"]).values()
        profile = ClusterProfile(name="app", **{**shipped, "namespace": namespace})
        cloning = ClusterProfile(
            **{**profile.__dict__, "clone_image": "alpine/git:2.47.2", "repo_credentials_secret": "git-creds"}
        )
        cases = {
            "one-node": (_spec(11), profile),
            "two-nodes": (RunSpec(**{**_spec(12).__dict__, "resources": Resources(gpus_per_node=2, nodes=2)}), profile),
            "clone": (_spec(13), cloning),
        }
        batch = client.BatchV1Api(api)
        serving = _serving_pod_template(namespace)
        if serving is not None:
            core.create_namespaced_pod(namespace, _as_pod("admission-serving", serving), dry_run="All")
        for case, (run, prof) in cases.items():
            job = build_manifests(run, prof).job
            core.create_namespaced_pod(namespace, _as_pod(f"admission-{case}", job["spec"]["template"]), dry_run="All")
            batch.create_namespaced_job(namespace, job)  # the Job controller's pods pass the same admission
            name = job["metadata"]["name"]
            wait_for(lambda name=name: pods_of(k8s_cluster, namespace, name), 60, what=f"pods of {case}")


@pytest.mark.slow
def test_the_network_policy_and_probes_apply(k8s_cluster, deployed):
    namespace, _objs = deployed
    with k8s_cluster.client() as api:
        policy = client.NetworkingV1Api(api).read_namespaced_network_policy("lfops-webui", namespace)
        assert policy.spec.policy_types == ["Ingress", "Egress"]
        deployment = client.AppsV1Api(api).read_namespaced_deployment("lfops-webui", namespace)
        container = deployment.spec.template.spec.containers[0]
        assert container.startup_probe.http_get.path == "/healthz"
        assert container.readiness_probe.http_get.path == "/readyz"


def _docs_block(containing: str) -> str:
    """The ```bash block of docs/cluster.md that contains `containing`, as an admin would paste it."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


@pytest.mark.slow
def test_the_admin_walkthrough_in_the_docs_runs(k8s_cluster, tmp_path):
    """docs/cluster.md step 2, run as written against the real API server (namespace lfops, as shipped), with
    kubectl from the k8s/dev build; the test plays the storage provisioner a real cluster has."""
    from tests.k8s_fixtures import kubectl_binary

    kubectl = kubectl_binary()
    assert kubectl is not None
    namespace = "lfops"
    with k8s_cluster.client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)
        wait_for(lambda: namespace not in {n.metadata.name for n in core.list_namespace().items}, 120, what="gone")
        rwo, rwx = "ReadWriteOnce", "ReadWriteMany"
        volumes = {"lfops-workspace": rwo, "lfops-registry": rwo, "lfops-outputs": rwx}
        pvs = [f"lfops-docs-{claim}" for claim in volumes]
        for (claim, mode), pv in zip(volumes.items(), pvs, strict=True):
            with contextlib.suppress(ApiException):
                core.delete_persistent_volume(pv)
            wait_for(lambda pv=pv: pv not in {v.metadata.name for v in core.list_persistent_volume().items}, 60)
            core.create_persistent_volume(
                {
                    "metadata": {"name": pv},
                    "spec": {
                        "capacity": {"storage": "500Gi"},
                        "accessModes": [mode],
                        "storageClassName": "",
                        "hostPath": {"path": f"/tmp/{pv}"},
                        "claimRef": {"namespace": namespace, "name": claim},
                    },
                }
            )
        shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
        script = f'kubectl() {{ "{kubectl}" --kubeconfig "{k8s_cluster.kubeconfig}" "$@"; }}\n' + _docs_block(
            "kubectl apply --server-side -k my-lfops"
        )
        try:
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=420,
                check=False,
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert 'deployment "lfops-webui" successfully rolled out' in result.stdout
            deployment = apps.read_namespaced_deployment("lfops-webui", namespace)
            assert deployment.spec.template.spec.containers[0].image == "registry.example.com/lfops:0.1.0"
            assert (deployment.status.ready_replicas or 0) == 1
            secret = core.read_namespaced_secret("lfops-admin", namespace)
            assert set(secret.data) == {"password"}
            labels = core.read_namespace(namespace).metadata.labels
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
            password = (tmp_path / "admin-password").read_text()
            assert len(password) == 32 and password not in result.stdout + result.stderr
        finally:
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)
            for pv in pvs:
                with contextlib.suppress(ApiException):
                    core.delete_persistent_volume(pv)
