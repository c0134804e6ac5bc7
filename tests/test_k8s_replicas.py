"""k8s/overlays/postgres-replicas: two app replicas on PostgreSQL with a PodDisruptionBudget, built with kustomize and
applied (server-side apply) to the real API server of the dev control plane, which validates every object."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.k8s_fixtures import ROOT, delete_namespace, kustomize_build
from tests.test_k8s_deploy import _apply, _relocated_overlay, by_kind

OVERLAY = ROOT / "k8s" / "overlays" / "postgres-replicas"


@pytest.fixture(scope="module")
def built() -> list[dict]:
    try:
        return kustomize_build(OVERLAY)
    except FileNotFoundError as exc:
        pytest.skip(f"no kustomize: {exc}")


def test_two_replicas_a_disruption_budget_and_shared_volumes(built):
    objs = by_kind(built)
    deployment, pdb = objs["Deployment/lfops-webui"], objs["PodDisruptionBudget/lfops-webui"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1 and pdb["metadata"]["namespace"] == "lfops"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objs["Service/lfops-webui"]["spec"]["sessionAffinity"] == "ClientIP"
    for claim in ("lfops-workspace", "lfops-registry", "lfops-outputs"):
        assert objs[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LFOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "lfops-database"  # PostgreSQL, a Secret


@pytest.mark.slow
def test_the_overlay_applies_to_a_real_api_server(k8s_cluster, tmp_path):
    namespace = f"lfops-ha-{uuid.uuid4().hex[:8]}"
    objs = _relocated_overlay(tmp_path / "kustomize", OVERLAY, namespace)
    try:
        with k8s_cluster.client() as api:
            _apply(api, objs)
            pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("lfops-webui", namespace)
            deployment = client.AppsV1Api(api).read_namespaced_deployment("lfops-webui", namespace)
            assert pdb.spec.min_available == 1 and deployment.spec.replicas == 2
            assert pdb.spec.selector.match_labels.items() <= deployment.spec.template.metadata.labels.items()
    finally:
        delete_namespace(k8s_cluster, namespace)
