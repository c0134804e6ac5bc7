"""Serving on the real control plane of k8s/dev (kube-apiserver 1.36, controllers, scheduler, kwok GPU nodes), as the
app's ServiceAccount with exactly the Role of k8s/base (impersonation: the API server's RBAC decides every call).

A version trained and registered in this session is deployed through `Serving` (the policy, rows and audit of
backend/serving/service.py), rolled to another version pod by pod, given a new API key, and undeployed; failures
on the cluster leave neither objects nor rows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select

from backend.errors import ClusterError, Conflict, SettingsError, TimedOut
from backend.serving.keys import hash_key
from backend.serving.kubernetes import label_selector, serving_target
from backend.serving.service import Serving
from backend.settings import ClusterProfile
from backend.store.models import Deployment, Rollout
from tests.helpers import wait_for
from tests.k8s_fixtures import (
    ROOT,
    create_namespace,
    create_outputs_volume,
    delete_namespace,
    delete_outputs_volumes,
)
from tests.runs_fixtures import approved_merge, kill_leftover_runs
from tests.snapshots import snapshot

pytestmark = pytest.mark.slow
BASE = ROOT / "k8s" / "base"
NAME = "k8s-tiny"


def install_app_role(cluster, namespace: str) -> str:
    """The app's ServiceAccount, Role and RoleBinding of k8s/base in `namespace`; returns the SA's user name."""
    with cluster.client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(namespace, yaml.safe_load((BASE / "serviceaccount.yaml").read_text()))
        rbac.create_namespaced_role(namespace, yaml.safe_load((BASE / "role.yaml").read_text()))
        binding = yaml.safe_load((BASE / "rolebinding.yaml").read_text())
        binding["subjects"][0]["namespace"] = namespace
        rbac.create_namespaced_role_binding(namespace, binding)
    return f"system:serviceaccount:{namespace}:lfops-webui"


def objects_of(cluster, namespace: str, name: str = NAME) -> dict[str, list[str]]:
    """Every object of the deployment found by its labels (as the cluster admin)."""
    selector = label_selector(name)
    with cluster.client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        hpa, pdb = client.AutoscalingV2Api(api), client.PolicyV1Api(api)
        found = {
            "deployments": apps.list_namespaced_deployment(namespace, label_selector=selector).items,
            "replicasets": apps.list_namespaced_replica_set(namespace, label_selector=selector).items,
            "pods": core.list_namespaced_pod(namespace, label_selector=selector).items,
            "services": core.list_namespaced_service(namespace, label_selector=selector).items,
            "secrets": core.list_namespaced_secret(namespace, label_selector=selector).items,
            "hpas": hpa.list_namespaced_horizontal_pod_autoscaler(namespace, label_selector=selector).items,
            "pdbs": pdb.list_namespaced_pod_disruption_budget(namespace, label_selector=selector).items,
        }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items() if items}


@dataclass
class Served:
    env: Any
    model: str  # NAME:vN of a registered version


_MODEL: dict[str, Served] = {}


def serving_model(template_workspace, tmp_path_factory) -> Served:
    """A version registered in a workspace of its own, once per session: the shared tiny-sft run's lineage is
    asserted exactly by test_lineage, so deployments of it must not appear there."""
    if "v" not in _MODEL:
        from tests.workspace_fixtures import make_env

        env = make_env(template_workspace, tmp_path_factory.mktemp("k8s-serving") / "ws")
        cr, _ = approved_merge(env, "tiny-k8s")
        alice = env.actor("alice")
        env.ws.runs.start_monitor(interval=0.1)
        try:
            run = env.ws.runs.launch(alice, cr)
            final = env.ws.runs.wait(alice, run.id, timeout=300)
        except BaseException:
            kill_leftover_runs(env.ws)
            raise
        finally:
            env.ws.runs.stop_monitor()
        assert final.status == "succeeded", final.reason
        _MODEL["v"] = Served(env, env.ws.registry.for_run(run.id).ref)
    return _MODEL["v"]


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory) -> Served:
    return serving_model(template_workspace, tmp_path_factory)


@pytest.fixture(scope="module")
def cluster_ns(k8s_cluster):
    """A namespace as the app is deployed to: its Role, and bound registry and models volumes."""
    namespace = create_namespace(k8s_cluster, "lfops-serve-app")
    try:
        sa = install_app_role(k8s_cluster, namespace)
        create_outputs_volume(k8s_cluster, namespace, claim="lfops-registry")
        create_outputs_volume(k8s_cluster, namespace, claim="lfops-models")
        yield namespace, sa
    finally:
        delete_namespace(k8s_cluster, namespace)
        delete_outputs_volumes(k8s_cluster, namespace)


@pytest.fixture(scope="module")
def serving(trained, cluster_ns, k8s_cluster):
    namespace, sa = cluster_ns
    env = trained.env
    common = {"namespace": namespace, "gpus_per_node": 8}
    profiles = {
        "gpu": ClusterProfile(
            name="gpu", **common, serving={"models_pvc": "lfops-models", "min_replicas": 2, "max_replicas": 2}
        ),
        "autoscaled": ClusterProfile(
            name="autoscaled", **common, serving={"models_pvc": "lfops-models", "min_replicas": 1, "max_replicas": 3}
        ),
        # 16 GPUs per pod: no node has them, the pods stay Pending
        "too-big": ClusterProfile(name="too-big", **common, serving={"models_pvc": "lfops-models", "gpus": 16}),
        "bad-field": ClusterProfile(name="bad-field", **common, serving={"replicas": 3}),
    }
    settings = env.ws.settings.model_copy(update={"cluster_profiles": profiles})
    svc = Serving(
        env.ws.store,
        env.ws.registry,
        settings,
        kubernetes_options={"client_factory": k8s_cluster.factory(sa), "poll_s": 0.2, "rollout_timeout_s": 180},
    )
    yield env, svc, namespace
    svc.close()


def test_a_profile_maps_onto_a_serving_target_and_bad_fields_are_named(serving):
    env, svc, namespace = serving
    target = serving_target(svc.settings.cluster_profiles["gpu"])
    assert (target.namespace, target.gpus, target.min_replicas, target.models_pvc) == (namespace, 1, 2, "lfops-models")
    assert target.registry_pvc == "lfops-registry" and target.llamafactory_image == "ghcr.io/lfops/train:0.9.5"
    with pytest.raises(SettingsError, match=r"^LFOPS_CLUSTER_PROFILES.bad-field.serving: unknown field 'replicas'$"):
        serving_target(svc.settings.cluster_profiles["bad-field"])
    cpu = ClusterProfile(name="cpu", namespace=namespace, gpus_per_node=0, serving={"max_replicas": "many"})
    with pytest.raises(SettingsError, match=r"^LFOPS_CLUSTER_PROFILES.cpu.serving.max_replicas: Input should be"):
        serving_target(cpu)


def test_deploy_roll_out_key_and_undeploy_as_the_apps_service_account(serving, trained, k8s_cluster):
    env, svc, namespace = serving
    rita, admin = env.actor("rita"), env.actor("admin")
    done = svc.deploy(rita, trained.model, target="gpu", name=NAME)
    info = done.deployment
    assert (info.status, info.target, info.namespace, info.model) == ("running", "gpu", namespace, trained.model)
    assert info.endpoint == f"http://lfops-serve-{NAME}.{namespace}.svc.cluster.local:80/v1"
    objs = objects_of(k8s_cluster, namespace)
    name = f"lfops-serve-{NAME}"
    assert objs["deployments"] == [name] and objs["services"] == [name] and objs["pdbs"] == [name]
    assert objs["secrets"] == [f"{name}-keys"] and "hpas" not in objs  # min == max replicas: no autoscaler
    with k8s_cluster.client() as api:
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(namespace, label_selector=label_selector(NAME)).items
        secret = core.read_namespaced_secret(f"{name}-keys", namespace)
    assert len(pods) == 2 and {p.spec.node_name for p in pods} <= {"gpu-node-0", "gpu-node-1"}
    assert all(p.status.phase == "Running" for p in pods)
    assert all(p.metadata.labels["lfops.io/model-version"] == f"v{trained.model.split(':v')[1]}" for p in pods)
    stored = json.loads(base64.b64decode(secret.data["keys.json"]))
    assert [k["sha256"] for k in stored["keys"]] == [hash_key(done.api_key)]
    # deploy returns once a pod serves; the Deployment's status counts the second one a moment later
    live = wait_for(
        lambda: (s := svc.get(rita, NAME, live=True).live).state != "starting" and s,
        timeout=60,
        what="the Deployment's status to count both pods",
    )
    assert (live.state, live.model_version) == ("running", trained.model) and live.detail.startswith("2/2 available")

    # another version, rolled out pod by pod: never fewer than 2 available pods
    versions = [v for v in env.ws.registry.list(admin, "tiny-k8s") if v.ref != trained.model]
    other = versions[0] if versions else env.ws.registry.export(admin, trained.model)
    lowest, rolling = [2], threading.Event()

    def watch() -> None:
        with k8s_cluster.client() as api:
            apps = client.AppsV1Api(api)
            while not rolling.is_set():
                d = apps.read_namespaced_deployment(name, namespace)
                lowest[0] = min(lowest[0], d.status.available_replicas or 0)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rolled = svc.rollout(rita, NAME, other.ref)
    finally:
        rolling.set()
        watcher.join()
    assert rolled.model == other.ref and rolled.status == "running" and lowest == [2]
    with k8s_cluster.client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        rs = apps.list_namespaced_replica_set(namespace, label_selector=label_selector(NAME)).items
        pods = core.list_namespaced_pod(namespace, label_selector=label_selector(NAME)).items
    assert sorted(r.spec.replicas for r in rs) == [0, 2]
    live_pods = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert {p.metadata.labels["lfops.io/model-version"] for p in live_pods} == {f"v{other.version}"}
    with env.ws.store.session() as s:
        dep = s.scalar(select(Deployment).where(Deployment.name == NAME))
        triggers = [(r.trigger, r.status) for r in s.scalars(select(Rollout).where(Rollout.deployment_id == dep.id))]
    assert triggers == [("deploy", "succeeded"), ("manual", "succeeded")]

    # a new key: only the Secret changes (no rollout, the pods stay)
    key, _ = svc.create_key(rita, NAME, "k8s")
    with k8s_cluster.client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(f"{name}-keys", namespace)
        same_rs = client.AppsV1Api(api).list_namespaced_replica_set(namespace, label_selector=label_selector(NAME))
    stored = json.loads(base64.b64decode(secret.data["keys.json"]))
    assert {k["sha256"] for k in stored["keys"]} == {hash_key(done.api_key), hash_key(key)}
    assert len(same_rs.items) == 2

    # undeploy: everything it made is deleted (pods go with their ReplicaSets)
    stopped = svc.undeploy(rita, NAME)
    assert stopped.status == "stopped"
    wait_for(lambda: objects_of(k8s_cluster, namespace) == {}, 120, 0.2, "every object of the deployment deleted")
    with pytest.raises(Conflict, match=f"^deployment {NAME} is not deployed"):
        svc.undeploy(rita, NAME)


def test_an_autoscaled_profile_gets_an_hpa_the_api_server_accepts(serving, trained, k8s_cluster):
    env, svc, namespace = serving
    rita = env.actor("rita")
    svc.deploy(rita, trained.model, target="autoscaled", name="k8s-hpa")
    try:
        name = "lfops-serve-k8s-hpa"
        with k8s_cluster.client() as api:
            hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
            deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
        assert hpa.spec.scale_target_ref.name == name and hpa.spec.metrics[0].resource.name == "cpu"
        assert deployment.spec.replicas >= 1  # the HPA's to set: the applied Deployment names none
    finally:
        svc.undeploy(rita, "k8s-hpa")
    wait_for(lambda: objects_of(k8s_cluster, namespace, "k8s-hpa") == {}, 120, 0.2, "the HPA deployment deleted")


def test_failures_on_the_cluster_leave_no_object_and_no_row(serving, trained, k8s_cluster):
    env, svc, namespace = serving
    rita = env.actor("rita")
    before = snapshot(env)
    # pods that cannot be scheduled: the deploy times out and takes back everything it applied
    with pytest.raises(TimedOut, match=r"^deployment .*/lfops-serve-k8s-big \(tiny-k8s:v1\) was not ready after 3 s"):
        svc.deploy(rita, trained.model, target="too-big", name="k8s-big", ready_timeout_s=3)
    wait_for(lambda: objects_of(k8s_cluster, namespace, "k8s-big") == {}, 60, 0.2, "nothing left of k8s-big")
    # a name already taken on the cluster (by someone else): refused before anything is applied
    with k8s_cluster.client() as api:
        client.AppsV1Api(api).create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": "lfops-serve-k8s-taken"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"x": "y"}},
                    "template": {
                        "metadata": {"labels": {"x": "y"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                },
            },
        )
    with pytest.raises(Conflict, match=r"^name: .*/lfops-serve-k8s-taken already exists on cluster profile gpu$"):
        svc.deploy(rita, trained.model, target="gpu", name="k8s-taken")
    assert objects_of(k8s_cluster, namespace, "k8s-taken") == {}
    with pytest.raises(SettingsError, match="unknown field 'replicas'"):
        svc.deploy(rita, trained.model, target="bad-field", name="k8s-bad")
    assert snapshot(env) == before


def test_a_quota_refusing_the_deployment_takes_back_the_secret(trained, k8s_cluster):
    """The Secret is applied, the Deployment is refused (exceeded quota): the Secret is deleted again."""
    env = trained.env
    namespace = create_namespace(k8s_cluster, "lfops-serve-quota")
    try:
        sa = install_app_role(k8s_cluster, namespace)
        with k8s_cluster.client() as api:
            client.CoreV1Api(api).create_namespaced_resource_quota(
                namespace, {"metadata": {"name": "no-deployments"}, "spec": {"hard": {"count/deployments.apps": "0"}}}
            )
        profile = ClusterProfile(name="quota", namespace=namespace, serving={"models_pvc": "lfops-models"})
        settings = env.ws.settings.model_copy(update={"cluster_profiles": {"quota": profile}})
        svc = Serving(
            env.ws.store, env.ws.registry, settings, kubernetes_options={"client_factory": k8s_cluster.factory(sa)}
        )
        before = snapshot(env)
        with pytest.raises(
            ClusterError, match=r"^cluster: apply Deployment .*: forbidden \(HTTP 403\): .*exceeded quota"
        ):
            svc.deploy(env.actor("rita"), trained.model, target="quota", name="k8s-quota")
        assert objects_of(k8s_cluster, namespace, "k8s-quota") == {}
        assert snapshot(env) == before
        # the app's ServiceAccount still cannot read Secrets, nor act in another namespace
        with k8s_cluster.client(sa) as api:
            core = client.CoreV1Api(api)
            for call in (
                lambda: core.list_namespaced_secret(namespace),
                lambda: core.read_namespaced_secret("lfops-serve-k8s-quota-keys", namespace),
                lambda: client.AppsV1Api(api).delete_collection_namespaced_deployment("default"),
            ):
                with pytest.raises(ApiException) as err:
                    call()
                assert err.value.status == 403
        svc.close()
    finally:
        with contextlib.suppress(Exception):
            delete_namespace(k8s_cluster, namespace)


def test_the_role_file_names_the_serving_verbs():
    role = yaml.safe_load(Path(BASE / "role.yaml").read_text())
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    assert verbs[("apps", "deployments")] == {"get", "create", "patch", "deletecollection"}
    assert verbs[("", "secrets")] == {"create", "patch", "deletecollection"}  # written, never read
