"""Deploying the app: k8s/ (kustomize base + sqlite/postgres overlays) builds, applies to a real API server, and its
ServiceAccount can do exactly what the Kubernetes runner needs in its own namespace, and nothing elsewhere.

"Acting as the ServiceAccount" is Kubernetes impersonation (Impersonate-User: system:serviceaccount:NS:NAME) by the
cluster admin, so the API server's real RBAC authorizer decides every call.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from backend.errors import ClusterError
from backend.runners.base import Resources, RunSpec, RunState
from backend.runners.kubernetes import KubernetesRunner
from backend.settings import ClusterProfile
from tests.k8s_fixtures import (
    ROOT,
    TRAINING_LOG,
    create_namespace,
    delete_namespace,
    job_names,
    k8s_cluster_fixture,  # noqa: F401 - fixture k8s_cluster
    kustomize_build,
    serve_pod_logs,
    wait_until,
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
    assert "LFOPS_DATABASE_URL" not in sqlite_env
    assert by_kind(built["sqlite"])["ConfigMap/lfops-settings"]["data"]["LFOPS_DATABASE_URL"].startswith("sqlite:")
    pg_env = {e["name"]: e for e in webui_container(built["postgres"])["env"]}
    assert pg_env["LFOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lfops-database", "key": "url"}
    assert "LFOPS_DATABASE_URL" not in by_kind(built["postgres"])["ConfigMap/lfops-settings"]["data"]


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
            wait_until(
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
        wait_until(lambda: runner.status(running).state == RunState.RUNNING, 30, what="running")
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
