"""Fixtures for tests against the real Kubernetes control plane of k8s/dev/cluster.sh (etcd, kube-apiserver,
controller-manager, scheduler built from Go modules, kwok's simulated GPU nodes).

The cluster is started once per session if it is not running. Tests skip only on a developer machine where the
binaries were never built; with LFOPS_REQUIRE_K8S=1 (or CI's LFOPS_REQUIRE_SERVICES=1) a missing cluster fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REQUIRE_SERVICES, ROOT, need_service, wait_for

CLUSTER_SH = ROOT / "k8s" / "dev" / "cluster.sh"
CACHE = Path(os.environ.get("LFOPS_K8S_CACHE") or Path.home() / ".cache" / "lfops-k8s")
TOOLS = CACHE / "tools"
KUSTOMIZE_VERSION = "v5.7.1"
REQUIRED = os.environ.get("LFOPS_REQUIRE_K8S") == "1" or REQUIRE_SERVICES


def _cluster(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def built_binaries() -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(CACHE / "*" / "bin" / "kwokctl")))]


def kubectl_binary() -> Path | None:
    found = sorted(glob.glob(str(CACHE / "*" / "bin" / "kubectl")))
    return Path(found[-1]) if found else None


def kustomize_command() -> list[str]:
    """`kubectl kustomize` from the cluster build, else a kustomize built with `go install` into the same cache."""
    kubectl = kubectl_binary()
    if kubectl:
        return [str(kubectl), "kustomize"]
    tool = TOOLS / "kustomize"
    if not tool.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        TOOLS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [go, "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
            env={**os.environ, "GOBIN": str(TOOLS), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
            check=True,
            capture_output=True,
            timeout=900,
        )
    return [str(tool), "build"]


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([*kustomize_command(), str(path)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass
class Cluster:
    kubeconfig: str

    def client(self, impersonate: str = "") -> Any:
        from backend.runners.kubernetes import make_api_client

        api = make_api_client(self.kubeconfig)
        if impersonate:
            api.set_default_header("Impersonate-User", impersonate)
        return api

    def factory(self, impersonate: str = "") -> Callable[[], Any]:
        return lambda: self.client(impersonate)


@pytest.fixture(scope="session", name="k8s_cluster")
def k8s_cluster_fixture() -> Iterator[Cluster]:
    started = False
    if not CLUSTER_SH.exists():
        _missing("k8s/dev/cluster.sh does not exist")
    if _cluster("status", timeout=60).returncode != 0:
        if not built_binaries():
            _missing("the control plane binaries are not built (bash k8s/dev/cluster.sh build)")
        result = _cluster("start")
        if result.returncode != 0:
            pytest.fail(f"cluster.sh start failed:\n{result.stderr[-3000:]}")
        started = True
    kubeconfig = os.environ.get("LFOPS_TEST_KUBECONFIG") or _cluster("kubeconfig", timeout=30).stdout.strip()
    yield Cluster(kubeconfig)
    if started:
        _cluster("stop", timeout=120)


def _missing(why: str) -> None:
    need_service("Kubernetes control plane (LFOPS_REQUIRE_K8S=1 requires it)", False, REQUIRED, why)


def create_namespace(cluster: Cluster, prefix: str = "lfops-t") -> str:
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with cluster.client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        # the controller-manager adds the default ServiceAccount; pods are refused until it exists
        wait_for(lambda: client.CoreV1Api(api).list_namespaced_service_account(name).items, 60, what="default SA")
    return name


def delete_namespace(cluster: Cluster, name: str) -> None:
    from kubernetes import client

    with cluster.client() as api, contextlib.suppress(Exception):
        client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


def create_outputs_volume(cluster: Cluster, namespace: str, claim: str = "lfops-outputs") -> None:
    """A PersistentVolume bound to the claim the profile names, so training pods can be scheduled (no provisioner)."""
    from kubernetes import client

    pv = f"{namespace}-{claim}"
    with cluster.client() as api:
        core = client.CoreV1Api(api)
        core.create_persistent_volume(
            {
                "metadata": {"name": pv, "labels": {"lfops.test/namespace": namespace}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{pv}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_for(
            lambda: core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase == "Bound",
            60,
            what=f"PVC {claim} bound",
        )


def delete_outputs_volumes(cluster: Cluster, namespace: str) -> None:
    from kubernetes import client

    with cluster.client() as api, contextlib.suppress(Exception):
        client.CoreV1Api(api).delete_collection_persistent_volume(label_selector=f"lfops.test/namespace={namespace}")


def fake_gpu_node(name: str, gpus: int) -> dict[str, Any]:
    """A kwok-managed Node advertising `gpus` nvidia.com/gpu (like k8s/dev/cluster.sh's gpu-node-N)."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {},
        "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
    }


def job_names(cluster: Cluster, namespace: str) -> list[str]:
    from kubernetes import client

    with cluster.client() as api:
        return sorted(j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job(namespace).items)


def pods_of(cluster: Cluster, namespace: str, job: str) -> list[Any]:
    from kubernetes import client

    with cluster.client() as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
        )
    return sorted(pods.items, key=lambda p: p.metadata.name)


def server_address(kubeconfig: str) -> tuple[str, int]:
    with open(kubeconfig) as fh:
        server = yaml.safe_load(fh)["clusters"][0]["cluster"]["server"]
    hostport = server.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def kubeconfig_via(kubeconfig: str, port: int, dest: Path) -> str:
    """A copy of the kubeconfig whose server is 127.0.0.1:<port> (a FlakyProxy in front of the real API server)."""
    with open(kubeconfig) as fh:
        doc = yaml.safe_load(fh)
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(yaml.safe_dump(doc))
    return str(dest)


class FlakyProxy:
    """A TCP proxy between the client and the real API server, to make the network fail on purpose.

    mode "up": forward both ways. "down": refuse connections (as a stopped API server does). "lose_replies": forward
    requests to the server but drop its replies and cut the connection (a timeout after the server acted); open
    connections are kept, so a client whose TLS session is already up sends its next request through.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "up"
        self._listener: socket.socket | None = None
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """Switch mode; for "up" and "down" open connections are cut so pooled keep-alive connections see it too."""
        with self._lock:
            self.mode = mode
            conns, self._conns = ([], self._conns) if mode == "lose_replies" else (self._conns, [])
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if mode == "down" and self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
            self._listener.close()
            self._listener = None
        elif mode != "down" and self._listener is None:
            self._open()

    def close(self) -> None:
        self.set_mode("down")

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client_sock, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client_sock.close()
                continue
            with self._lock:
                self._conns += [client_sock, upstream]
            threading.Thread(target=self._pump, args=(client_sock, upstream), daemon=True).start()

    def _pump(self, client_sock: socket.socket, upstream: socket.socket) -> None:
        socks = [client_sock, upstream]
        try:
            while True:
                readable, _, _ = select.select(socks, [], [], 30)
                if not readable:
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client_sock:
                        upstream.sendall(data)
                    elif self.mode == "lose_replies":
                        return  # the server has acted; the client never hears of it
                    else:
                        client_sock.sendall(data)
        except OSError:
            return
        finally:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.close()


def events_json(resp: Any) -> Any:
    return json.loads(resp.data)


def cri_log(lines: list[str]) -> str:
    """Container log lines in the CRI file format that kwok serves as pod logs."""
    return "".join(f"2026-01-01T00:00:{i % 60:02d}.000000000Z stdout F {line}\n" for i, line in enumerate(lines))


def serve_pod_logs(cluster: Cluster, namespace: str, log_file: Path, lines: list[str]) -> None:
    """Every `train` container in the namespace gets `lines` as its log (kwok's ClusterLogs)."""
    from kubernetes import client

    log_file.write_text(cri_log(lines))
    body = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": f"logs-{namespace}"},
        "spec": {
            "selector": {"matchNamespaces": [namespace]},
            "logs": [{"containers": ["train"], "logsFile": str(log_file), "follow": False}],
        },
    }
    with cluster.client() as api:
        client.CustomObjectsApi(api).create_cluster_custom_object("kwok.x-k8s.io", "v1alpha1", "clusterlogs", body)


TRAINING_LOG = [
    "[INFO|trainer.py] ***** Running training *****",
    '{"current_steps": 1, "total_steps": 2, "loss": 2.31, "lr": 5e-05}',
    '{"current_steps": 2, "total_steps": 2, "loss": 1.87, "lr": 0.0}',
    "***** train metrics *****",
]


@dataclass
class Namespace:
    cluster: Cluster
    name: str

    def profile(self, **overrides: Any) -> Any:
        from backend.settings import ClusterProfile

        values = {"name": "test", "namespace": self.name, "image": "lfops/train:test", "gpus_per_node": 1}
        return ClusterProfile(**{**values, **overrides})


@pytest.fixture(name="k8s_ns")
def k8s_ns_fixture(k8s_cluster: Cluster, tmp_path: Path) -> Iterator[Namespace]:
    """A fresh namespace with a bound outputs volume and training-like pod logs; removed afterwards."""
    from kubernetes import client

    name = create_namespace(k8s_cluster)
    try:
        create_outputs_volume(k8s_cluster, name)
        serve_pod_logs(k8s_cluster, name, tmp_path / "train.log", TRAINING_LOG)
        yield Namespace(k8s_cluster, name)
    finally:
        with k8s_cluster.client() as api, contextlib.suppress(Exception):
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                "kwok.x-k8s.io", "v1alpha1", "clusterlogs", f"logs-{name}"
            )
        delete_namespace(k8s_cluster, name)
        delete_outputs_volumes(k8s_cluster, name)
