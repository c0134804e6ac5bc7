"""The HorizontalPodAutoscaler of a deployment really scales: a control plane of its own (k8s/dev/cluster.sh with
LFOPS_K8S_METRICS=1: metrics-server built from the Go module proxy, kwok simulating each container's CPU use from the
pod annotation kwok.x-k8s.io/usage-cpu) runs the HPA controller against real resource metrics.

Load is simulated by annotating the deployment's pods: busy, the HPA scales 1 -> 2 replicas; idle again, back to 1.
The cluster is separate from the shared one (its own LFOPS_K8S_HOME and name) and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import pytest
from kubernetes import client

from backend.serving.kubernetes import label_selector
from backend.serving.service import Serving
from backend.settings import ClusterProfile
from tests.helpers import wait_for
from tests.k8s_fixtures import (
    CACHE,
    CLUSTER_SH,
    REQUIRED,
    Cluster,
    built_binaries,
    create_namespace,
    create_outputs_volume,
)
from tests.test_serving_k8s import install_app_role, serving_model

pytestmark = pytest.mark.slow
METRICS_SERVER = CACHE / "metrics-server-v0.8.0" / "bin" / "metrics-server"
USAGE = "kwok.x-k8s.io/usage-cpu"


@pytest.fixture(scope="module")
def metrics_cluster(tmp_path_factory):
    if not built_binaries() or not METRICS_SERVER.exists():
        why = "metrics-server or the control plane is not built (LFOPS_K8S_METRICS=1 bash k8s/dev/cluster.sh build)"
        if REQUIRED:
            pytest.fail(why)
        pytest.skip(why)
    home = tmp_path_factory.mktemp("k8s-metrics")
    env = {**os.environ, "LFOPS_K8S_HOME": str(home), "LFOPS_K8S_CLUSTER": "lfops-metrics", "LFOPS_K8S_METRICS": "1"}
    started = subprocess.run(["bash", str(CLUSTER_SH), "start"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield Cluster(started.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], env=env, capture_output=True, timeout=180)


def _pod_metrics(cluster: Cluster, namespace: str) -> list[dict]:
    with cluster.client() as api:
        doc = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", namespace, "pods", label_selector=label_selector("hpa-tiny")
        )
    return doc.get("items", [])


def _annotate_pods(cluster: Cluster, namespace: str, cpu: str) -> int:
    with cluster.client() as api:
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(namespace, label_selector=label_selector("hpa-tiny")).items
        for pod in pods:
            core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"annotations": {USAGE: cpu}}})
    return len(pods)


def test_the_hpa_scales_up_under_simulated_load_and_down_after(metrics_cluster, template_workspace, tmp_path_factory):
    trained = serving_model(template_workspace, tmp_path_factory)
    env = trained.env
    namespace = create_namespace(metrics_cluster, "lfops-serve-hpa")
    sa = install_app_role(metrics_cluster, namespace)
    create_outputs_volume(metrics_cluster, namespace, claim="lfops-registry")
    create_outputs_volume(metrics_cluster, namespace, claim="lfops-models")
    serving = {
        "models_pvc": "lfops-models",
        "min_replicas": 1,
        "max_replicas": 2,
        "cpu_target_percent": 50,
        "scale_down_window_s": 0,  # the test does not wait the production 5 minutes
    }
    profile = ClusterProfile(name="hpa", namespace=namespace, gpus_per_node=8, serving=serving)
    settings = env.ws.settings.model_copy(update={"cluster_profiles": {"hpa": profile}})
    svc = Serving(
        env.ws.store,
        env.ws.registry,
        settings,
        kubernetes_options={"client_factory": metrics_cluster.factory(sa), "poll_s": 0.5},
    )
    rita = env.actor("rita")
    name = "lfops-serve-hpa-tiny"

    def replicas() -> int:
        with metrics_cluster.client() as api:
            return client.AppsV1Api(api).read_namespaced_deployment(name, namespace).spec.replicas or 0

    svc.deploy(rita, trained.model, target="hpa", name="hpa-tiny")
    try:
        assert replicas() == 1
        wait_for(lambda: _pod_metrics(metrics_cluster, namespace), 180, 2, "pod metrics from metrics-server")
        started = time.monotonic()
        # busy: 4 cores per container against 4.25 requested per pod -> about 190% of the requests
        assert _annotate_pods(metrics_cluster, namespace, "4") == 1
        wait_for(lambda: replicas() == 2, 300, 2, "the HPA scaling up to 2 replicas")
        up_s = time.monotonic() - started
        with metrics_cluster.client() as api:
            hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
        assert hpa.status.current_metrics and hpa.status.current_metrics[0].resource.current.average_utilization > 50
        # idle again (the new pod too): back to the minimum
        wait_for(lambda: _annotate_pods(metrics_cluster, namespace, "10m") == 2, 120, 1, "both pods annotated")
        started = time.monotonic()
        wait_for(lambda: replicas() == 1, 300, 2, "the HPA scaling down to 1 replica")
        down_s = time.monotonic() - started
        print(f"HPA: scaled up in {up_s:.0f} s, down in {down_s:.0f} s")
    finally:
        with contextlib.suppress(Exception):
            svc.undeploy(rita, "hpa-tiny")
        svc.close()
