"""Kubernetes objects for serving one model version, built as plain dicts by pure functions (like the training ones).

    Secret <name>-keys        the gateway's API key hashes (keys.json), re-read by the gateway when it changes
    Deployment                pod = model server (vLLM on GPU profiles, LLaMA-Factory's API on CPU ones) on
                              127.0.0.1:8000 + the lfops gateway on :8080 (the only port the pod exposes)
    Service                   port 80 -> the gateway
    HorizontalPodAutoscaler   autoscaling/v2: CPU utilisation, or in-flight requests per pod (a Pods metric; needs
                              a custom-metrics adapter such as prometheus-adapter)
    PodDisruptionBudget       at most one pod evicted at a time

Why it looks like this:
- The model server listens on 127.0.0.1 only: every request passes the gateway's keys and metrics. Its probes are
  therefore `exec` (kubelet's httpGet goes to the pod IP); the pod's readiness is the gateway's /readyz, which asks
  the model server whether its model is loaded.
- Rolling updates with `maxUnavailable: 0`: a new pod must be ready (model loaded) before an old one goes. On the way
  out the gateway gets a preStop pause (endpoints drop it first) and then drains; the model server's longer pause
  keeps it serving until the gateway has finished.
- The selector is the deployment's name only (it is immutable); the model version, commit, config hash and dataset
  version are pod labels (short) and annotations (full), so a rollout is a change of the pod template.
- The model files come read-only from the registry's volume (`registry/<name>/v<N>/` as the app writes it).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from backend.errors import LfopsError, Problem, ValidationFailed
from backend.runners.kubernetes.manifests import MANAGED_BY, MANAGED_BY_KEY, PREFIX, label_value, lineage_key, short
from backend.serving.keys import KEYS_FORMAT, StoredKey
from backend.serving.metrics import IN_FLIGHT_METRIC
from backend.serving.names import check_deployment_name
from backend.serving.observers import SAMPLING_DATABASE_VARIABLE, SAMPLING_OBSERVER

DEPLOYMENT_LABEL = PREFIX + "deployment"
MODEL_LABEL = PREFIX + "model"
VERSION_LABEL = PREFIX + "model-version"
COMPONENT = "serving"
GATEWAY_PORT = 8080
SERVICE_PORT = 80
MODEL_PORT = 8000
REGISTRY_DIR = "/registry"
MODELS_DIR = "/models"
KEYS_DIR = "/etc/lfops-gateway"
KEYS_FILE = "keys.json"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS = 10001
# vLLM accepts these LoRA ranks for --max-lora-rank.
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_REL_PATH = re.compile(r"^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class ServingTarget:
    """Where and how a deployment runs on a cluster (the app maps a cluster profile onto this)."""

    name: str
    namespace: str = "lfops"
    gpus: int = 1  # per replica; 0 makes it a CPU target served by LLaMA-Factory's API
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    llamafactory_image: str = "ghcr.io/lfops/train:0.9.5"  # the training image has llamafactory-cli
    gateway_image: str = "ghcr.io/lfops/lfops:0.1.0"  # the app's image has backend.serving.gateway
    registry_pvc: str = "lfops-registry"
    models_pvc: str = ""  # where base models kept by lfops live ("" = base models come from a hub)
    hub_token_secret: str = ""  # Secret with key HF_TOKEN, only referenced
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    priority_class: str = ""
    service_account: str = ""
    image_pull_secret: str = ""
    cpu: str = ""  # model server requests; defaults below
    memory: str = ""
    gateway_cpu: str = "250m"
    gateway_memory: str = "256Mi"
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_target_percent: int = 70
    in_flight_target: float = 0.0  # > 0: scale on in-flight requests per pod instead of CPU
    scale_down_window_s: int = 300  # the HPA scales down only after load stayed low this long
    max_model_len: int = 0  # vLLM's --max-model-len (0: the model's own)
    startup_timeout_s: int = 1800  # model download and load
    # request sampling (docs/monitoring.md): the Secret (key `url`) with the metadata store's URL; "" = no sampling
    sampling_database_secret: str = ""


@dataclass(frozen=True)
class ServingSpec:
    """One deployment of one registry version."""

    name: str  # the deployment's name (backend.serving.names)
    model: str  # registry model name
    version: int
    kind: str  # adapter | full
    base_model: str = ""  # adapters: a hub id, or a path inside target.models_pvc when base_model_on_volume
    base_model_on_volume: bool = False
    template: str = "default"
    lora_rank: int = 0  # adapters on vLLM: --max-lora-rank is raised to fit (0: vLLM's default, 16)
    lineage: dict[str, str] = field(default_factory=dict)  # commit, config_hash, dataset_version, change_request...

    @property
    def model_version(self) -> str:
        return f"{self.model}:v{self.version}"

    @property
    def model_path(self) -> str:
        """The version's directory inside the registry volume (registry/<name>/v<N>)."""
        return f"{self.model}/v{self.version}"


@dataclass(frozen=True)
class ServingManifests:
    namespace: str
    secret: dict[str, Any]
    deployment: dict[str, Any]
    service: dict[str, Any]
    hpa: dict[str, Any] | None
    pdb: dict[str, Any]

    @property
    def name(self) -> str:
        return self.deployment["metadata"]["name"]

    def objects(self) -> list[dict[str, Any]]:
        """In the order they are applied (the Secret before the pods that mount it)."""
        return [o for o in (self.secret, self.deployment, self.service, self.hpa, self.pdb) if o is not None]

    def to_yaml(self) -> str:
        return yaml.safe_dump_all(self.objects(), sort_keys=False, default_flow_style=False)


def object_name(deployment: str) -> str:
    return f"lfops-serve-{deployment}"


def keys_secret_name(deployment: str) -> str:
    return f"{object_name(deployment)}-keys"


def selector(deployment: str) -> dict[str, str]:
    """Never changes for a deployment (a Deployment's selector is immutable): the name, not the version."""
    return {MANAGED_BY_KEY: MANAGED_BY, DEPLOYMENT_LABEL: deployment}


def check(spec: ServingSpec, target: ServingTarget) -> list[Problem]:
    problems: list[Problem] = []
    try:
        check_deployment_name(spec.name)
    except LfopsError as exc:
        problems.append(Problem("name", str(exc).partition(": ")[2]))
    t = f"target.{target.name}"
    if not _DNS_LABEL.match(target.namespace or ""):
        problems.append(Problem(f"{t}.namespace", f"{target.namespace!r} is not a valid namespace name"))
    if not isinstance(spec.version, int) or spec.version < 1:
        problems.append(Problem("version", "must be a positive integer"))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", spec.model or ""):
        problems.append(Problem("model", f"{spec.model!r} is not a registry model name"))
    if spec.kind not in ("adapter", "full"):
        problems.append(Problem("kind", f"{spec.kind!r} must be adapter or full"))
    if spec.kind == "adapter" and not spec.base_model:
        problems.append(Problem("base_model", "an adapter needs its base model"))
    if spec.base_model_on_volume:
        if not target.models_pvc:
            problems.append(Problem(f"{t}.models_pvc", "required for a base model kept by lfops"))
        if not _REL_PATH.match(spec.base_model):
            problems.append(Problem("base_model", f"{spec.base_model!r} must be a relative path inside the volume"))
    if target.gpus < 0:
        problems.append(Problem(f"{t}.gpus", "must be 0 or more"))
    for attr in ("vllm_image", "llamafactory_image", "gateway_image"):
        if not str(getattr(target, attr)).strip():
            problems.append(Problem(f"{t}.{attr}", "required"))
    for attr in (
        "registry_pvc",
        "models_pvc",
        "hub_token_secret",
        "service_account",
        "image_pull_secret",
        "priority_class",
    ):
        value = getattr(target, attr)
        if value and not _OBJECT_NAME.match(value):
            problems.append(Problem(f"{t}.{attr}", f"{value!r} is not a valid object name"))
    if not target.registry_pvc:
        problems.append(Problem(f"{t}.registry_pvc", "required (the registry's volume)"))
    for attr in ("cpu", "memory", "gateway_cpu", "gateway_memory"):
        value = getattr(target, attr)
        if value and not _QUANTITY.match(value):
            problems.append(Problem(f"{t}.{attr}", f"{value!r} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)"))
    if target.min_replicas < 1:
        problems.append(Problem(f"{t}.min_replicas", "must be at least 1"))
    if target.max_replicas < target.min_replicas:
        problems.append(Problem(f"{t}.max_replicas", "must be at least min_replicas"))
    if not 1 <= target.cpu_target_percent <= 100:
        problems.append(Problem(f"{t}.cpu_target_percent", "must be between 1 and 100"))
    if target.in_flight_target < 0:
        problems.append(Problem(f"{t}.in_flight_target", "must be 0 (off) or more"))
    if not 0 <= target.scale_down_window_s <= 3600:
        problems.append(Problem(f"{t}.scale_down_window_s", "must be between 0 and 3600 seconds"))
    if target.startup_timeout_s < 10:
        problems.append(Problem(f"{t}.startup_timeout_s", "must be at least 10 seconds"))
    if not isinstance(target.node_selector, dict):
        problems.append(Problem(f"{t}.node_selector", "must map label names to string values"))
    if not isinstance(target.tolerations, list) or not all(isinstance(x, dict) for x in target.tolerations):
        problems.append(Problem(f"{t}.tolerations", "must be a list of Kubernetes toleration objects"))
    return problems


def _lineage(spec: ServingSpec) -> tuple[dict[str, str], dict[str, str]]:
    """Labels (short, selectable) and annotations (full) naming the model version and where it came from."""
    labels = {
        **selector(spec.name),
        "app.kubernetes.io/name": "lfops-serve",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": COMPONENT,
        MODEL_LABEL: label_value(spec.model),
        VERSION_LABEL: f"v{spec.version}",
    }
    annotations = {VERSION_LABEL: spec.model_version}
    for key, value in sorted(spec.lineage.items()):
        qualified = lineage_key(key)
        if qualified in labels or qualified in (DEPLOYMENT_LABEL, MANAGED_BY_KEY):
            continue
        annotations.setdefault(qualified, str(value))
        if short(value):
            labels.setdefault(qualified, short(value))
    return labels, annotations


def _probe_command(url: str) -> list[str]:
    """An exec probe (the model server listens on 127.0.0.1, out of kubelet's reach); both images have Python."""
    return ["python3", "-c", f"import urllib.request as u; u.urlopen('{url}', timeout=4)"]


def _vllm_lora_rank(rank: int) -> int:
    return next((r for r in _VLLM_LORA_RANKS if r >= rank), _VLLM_LORA_RANKS[-1])


def _model_server(spec: ServingSpec, target: ServingTarget) -> dict[str, Any]:
    version_dir = f"{REGISTRY_DIR}/{spec.model_path}"
    base = f"{MODELS_DIR}/{spec.base_model}" if spec.base_model_on_volume else spec.base_model
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - caches go to the pod's writable emptyDir
        {"name": "HF_HOME", "value": "/tmp/huggingface"},  # noqa: S108
    ]
    if target.hub_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": target.hub_token_secret, "key": "HF_TOKEN", "optional": True}},
            }
        )
    if target.gpus > 0:
        # vLLM: the adapter as a LoRA module named after the deployment (what clients put in "model")
        if spec.kind == "adapter":
            args = [
                base,
                "--served-model-name",
                f"{spec.name}-base",
                "--enable-lora",
                "--lora-modules",
                f"{spec.name}={version_dir}",
            ]
            if spec.lora_rank:
                args += ["--max-lora-rank", str(_vllm_lora_rank(spec.lora_rank))]
        else:
            args = [version_dir, "--served-model-name", spec.name]
        args += ["--host", "127.0.0.1", "--port", str(MODEL_PORT)]  # vLLM does not log prompts by default
        if target.gpus > 1:
            args += ["--tensor-parallel-size", str(target.gpus)]
        if target.max_model_len:
            args += ["--max-model-len", str(target.max_model_len)]
        env.append({"name": "VLLM_NO_USAGE_STATS", "value": "1"})
        image, command, health = target.vllm_image, ["vllm", "serve"], "/health"
    else:
        # LLaMA-Factory's API reads `--key value` arguments like its YAML; HuggingFace engine on the CPU
        args = [
            "--model_name_or_path",
            base if spec.kind == "adapter" else version_dir,
            "--template",
            spec.template,
            "--infer_backend",
            "huggingface",
        ]
        if spec.kind == "adapter":
            args += ["--adapter_name_or_path", version_dir, "--finetuning_type", "lora"]
        env += [
            {"name": "API_HOST", "value": "127.0.0.1"},
            {"name": "API_PORT", "value": str(MODEL_PORT)},
            {"name": "API_MODEL_NAME", "value": spec.name},
            {"name": "API_VERBOSE", "value": "0"},  # it logs every prompt otherwise
        ]
        image, command, health = target.llamafactory_image, ["llamafactory-cli", "api"], "/v1/models"
    probe = {"exec": {"command": _probe_command(f"http://127.0.0.1:{MODEL_PORT}{health}")}, "timeoutSeconds": 5}
    requests = {"cpu": target.cpu or ("4" if target.gpus else "2"), "memory": target.memory or "8Gi"}
    limits: dict[str, str] = {"memory": requests["memory"]}
    if target.gpus > 0:
        limits[GPU_RESOURCE] = str(target.gpus)
    mounts = [
        {"name": "registry", "mountPath": REGISTRY_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
    ]
    if spec.base_model_on_volume:
        mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    if target.gpus > 0:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108 - NCCL between GPUs
    return {
        "name": "model-server",
        "image": image,
        "command": command,
        "args": args,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": mounts,
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": max(1, target.startup_timeout_s // 10)},
        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
        # keeps answering while the gateway (terminated at the same moment) drains its requests
        "lifecycle": {"preStop": {"sleep": {"seconds": 20}}},
        "securityContext": _container_security(),
    }


def _gateway(spec: ServingSpec, target: ServingTarget) -> dict[str, Any]:
    return {
        "name": "gateway",
        "image": target.gateway_image,
        "command": ["python", "-m", "backend.serving.gateway"],
        "args": [
            "--deployment",
            spec.name,
            "--model-version",
            spec.model_version,
            "--upstream",
            f"http://127.0.0.1:{MODEL_PORT}",
            "--keys-file",
            f"{KEYS_DIR}/{KEYS_FILE}",
            "--host",
            "0.0.0.0",  # noqa: S104 - inside the pod; the Service is the way in
            "--port",
            str(GATEWAY_PORT),
            *(["--observer", SAMPLING_OBSERVER] if target.sampling_database_secret else []),
        ],
        **(
            {
                "env": [
                    {
                        "name": SAMPLING_DATABASE_VARIABLE,
                        "valueFrom": {"secretKeyRef": {"name": target.sampling_database_secret, "key": "url"}},
                    }
                ]
            }
            if target.sampling_database_secret
            else {}
        ),
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
        "resources": {
            "requests": {"cpu": target.gateway_cpu, "memory": target.gateway_memory},
            "limits": {"memory": target.gateway_memory},
        },
        # a directory mount (not subPath): Kubernetes updates it when the Secret changes, the gateway re-reads it
        "volumeMounts": [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 20,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # endpoints stop sending traffic before the gateway stops accepting it
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": _container_security(),
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_keys_secret(spec: ServingSpec, target: ServingTarget, keys: list[StoredKey]) -> dict[str, Any]:
    """The gateway's keys file: sha256 hashes only (the keys themselves are shown once and never kept)."""
    doc = {"format": KEYS_FORMAT, "keys": [{"id": k.key_id, "sha256": k.sha256} for k in keys]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": keys_secret_name(spec.name),
            "namespace": target.namespace,
            "labels": {**selector(spec.name), "app.kubernetes.io/component": COMPONENT},
        },
        "type": "Opaque",
        "stringData": {KEYS_FILE: json.dumps(doc, indent=1)},
    }


def build_manifests(spec: ServingSpec, target: ServingTarget, keys: list[StoredKey]) -> ServingManifests:
    """Every object of one deployment; ValidationFailed names each bad field. Depends only on the arguments."""
    problems = check(spec, target)
    if problems:
        raise ValidationFailed(problems)
    name = object_name(spec.name)
    ns = target.namespace
    labels, annotations = _lineage(spec)
    # objects that a rollout does not change carry no version or lineage labels
    meta_labels = {k: v for k, v in labels.items() if k in selector(spec.name) or k.startswith("app.kubernetes.io/")}
    pod_annotations = {
        **annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(GATEWAY_PORT),
        "prometheus.io/path": "/metrics",
    }

    volumes: list[dict[str, Any]] = [
        {"name": "registry", "persistentVolumeClaim": {"claimName": target.registry_pvc, "readOnly": True}},
        {"name": "keys", "secret": {"secretName": keys_secret_name(spec.name), "defaultMode": 0o440}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if spec.base_model_on_volume:
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": target.models_pvc, "readOnly": True}})
    if target.gpus > 0:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # neither container talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_model_server(spec, target), _gateway(spec, target)],
        "volumes": volumes,
    }
    if target.node_selector:
        pod_spec["nodeSelector"] = dict(target.node_selector)
    if target.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(target.tolerations)
    if target.priority_class:
        pod_spec["priorityClassName"] = target.priority_class
    if target.service_account:
        pod_spec["serviceAccountName"] = target.service_account
    if target.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": target.image_pull_secret}]

    autoscaled = target.max_replicas > target.min_replicas
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(spec.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "minReadySeconds": 5,
        "progressDeadlineSeconds": target.startup_timeout_s + 600,
        "revisionHistoryLimit": 5,
        "template": {"metadata": {"labels": labels, "annotations": pod_annotations}, "spec": pod_spec},
    }
    if not autoscaled:
        # with an HPA the replica count is its to set: an apply that names one would fight it
        deployment_spec["replicas"] = target.min_replicas
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "annotations": dict(annotations)},
        "spec": deployment_spec,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": meta_labels, "annotations": {}},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec.name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = None
    if autoscaled:
        if target.in_flight_target > 0:
            metric = {
                "type": "Pods",
                "pods": {
                    "metric": {"name": IN_FLIGHT_METRIC},
                    "target": {"type": "AverageValue", "averageValue": _quantity(target.in_flight_target)},
                },
            }
        else:
            metric = {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target.cpu_target_percent},
                },
            }
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": target.min_replicas,
                "maxReplicas": target.max_replicas,
                "metrics": [metric],
                # a model takes minutes to load: scale up at once, down only after load stayed low (5 minutes)
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": target.scale_down_window_s,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                    },
                },
            },
        }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(spec.name)},
            # a pod that never became ready (e.g. crash-looping) must not block a node drain
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    return ServingManifests(ns, build_keys_secret(spec, target, keys), deployment, service, hpa, pdb)


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a per-pod average (2.5 -> 2500m)."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"
