"""Kubernetes objects for one training run, built as plain dicts by pure functions.

Nothing here talks to a cluster: the WebUI shows `build_manifests(...).to_yaml()` for review before launch, and
backend.runners.kubernetes.runner sends the same dicts to the API server. One node is a batch/v1 Job; several nodes
are an Indexed Job plus a headless Service so that every pod can reach pod 0 (torchrun's rendezvous) by DNS name.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from backend import yamlio
from backend.config import METADATA_KEY
from backend.errors import Problem, ValidationFailed
from backend.redaction import redact_url
from backend.runners.base import Resources, RunSpec
from backend.settings import ClusterProfile

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "lfops"
SELECTOR = f"{MANAGED_BY_KEY}={MANAGED_BY}"  # every object lfops creates carries it; the watcher filters on it
PREFIX = "lfops.io/"
RUN_ID_LABEL = PREFIX + "run-id"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on pods by the Job controller
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CONFIG_KEY = "train.yaml"
CONFIG_DIR = "/etc/lfops"
OUTPUTS_DIR = "/outputs"
REPO_DIR = "/repo"  # the config repository at the run's commit, when the profile clones it
MODEL_SUBDIR = "model"  # output_dir inside the run's folder on the outputs volume
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER = "train"
# Every container lfops creates: what the "restricted" Pod Security Standard asks of a container.
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# The pod's user has no home in the image (its uid need not exist there): caches of git, pip and Hugging Face go here.
HOME_ENV = {"name": "HOME", "value": "/tmp"}  # noqa: S108 - the container's own /tmp

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def job_name(run_id: int) -> str:
    """The Job's name is derived from the run id alone, so a retried submit finds the Job it may have created."""
    return f"lfops-run-{run_id}"


def config_map_name(run_id: int) -> str:
    return f"{job_name(run_id)}-config"


def external_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def parse_external_id(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise ValidationFailed([Problem("external_id", f"expected NAMESPACE/JOB, got {value!r}")])
    return namespace, name


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends); full values go in annotations."""
    cleaned = _LABEL_VALUE_BAD.sub("-", str(value))[:63]
    return cleaned.strip("-_.")


def lineage_key(key: str) -> str:
    """`config_hash` -> `lfops.io/config-hash` (a qualified name's part after the slash is <= 63 chars)."""
    name = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:63].strip("-")
    return PREFIX + (name or "x")


def short(value: str) -> str:
    """Label form of a lineage value: hashes are cut to 12 hex digits after any `algo:` prefix, like a short commit."""
    text = str(value)
    algo, sep, digest = text.partition(":")
    if sep and re.fullmatch(r"[0-9a-f]{16,}", digest):
        return label_value(f"{algo}-{digest[:12]}")
    if re.fullmatch(r"[0-9a-f]{16,}", text):
        return text[:12]
    return label_value(text)


def training_yaml_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pod_training_yaml(spec: RunSpec) -> str:
    """What the pod's `llamafactory-cli train` reads: the config without lfops metadata, output_dir on the volume."""
    args = yamlio.load_mapping(spec.training_yaml, spec.config_path or "training_yaml")
    args.pop(METADATA_KEY, None)
    # One known place per run on the shared volume, where the registry picks the model up.
    args["output_dir"] = f"{OUTPUTS_DIR}/{MODEL_SUBDIR}"
    return yamlio.dump(args)


class _ReviewDumper(yaml.SafeDumper):
    """Multi-line strings (the training YAML in the ConfigMap) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReviewDumper.add_representer(str, _represent_str)


@dataclass(frozen=True)
class Manifests:
    """The objects of one run, in the order they are created."""

    namespace: str
    job: dict[str, Any]
    config_map: dict[str, Any]
    service: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.job["metadata"]["name"]

    @property
    def external_id(self) -> str:
        return external_id(self.namespace, self.name)

    def objects(self) -> list[dict[str, Any]]:
        return [obj for obj in (self.job, self.config_map, self.service) if obj is not None]

    def to_yaml(self) -> str:
        """What a reviewer sees before launch; exactly what is sent (owner references are added on creation)."""
        return yaml.dump_all(self.objects(), Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False)


def owned_by(obj: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` owned by the created Job, so Kubernetes' garbage collector deletes it with the Job.

    blockOwnerDeletion stays off: setting it needs update on jobs/finalizers, a verb the app's Role does not grant.
    """
    meta = job["metadata"]
    owned = copy.deepcopy(obj)
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": False}
    ]
    return owned


def check_profile(profile: ClusterProfile) -> list[Problem]:
    problems = []
    field = f"cluster_profiles.{profile.name}"
    if not _DNS_LABEL.match(profile.namespace or ""):
        problems.append(Problem(f"{field}.namespace", f"{profile.namespace!r} is not a valid namespace name"))
    if not profile.image.strip():
        problems.append(Problem(f"{field}.image", "required (the training image: CUDA PyTorch + llamafactory)"))
    if not isinstance(profile.node_selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in profile.node_selector.items()
    ):
        problems.append(Problem(f"{field}.node_selector", "must map label names to string values"))
    if not isinstance(profile.tolerations, list) or not all(isinstance(t, dict) for t in profile.tolerations):
        problems.append(Problem(f"{field}.tolerations", "must be a list of Kubernetes toleration objects"))
    for attr in ("active_deadline_seconds", "ttl_seconds_after_finished"):
        if int(getattr(profile, attr)) <= 0:
            problems.append(Problem(f"{field}.{attr}", "must be a positive number of seconds"))
    if int(profile.backoff_limit) < 0:
        problems.append(Problem(f"{field}.backoff_limit", "must be 0 or more"))
    if int(profile.run_as_user) < 1:
        problems.append(Problem(f"{field}.run_as_user", "must be a uid of 1 or more (pods run as non-root)"))
    if not 1 <= int(profile.master_port) <= 65535:
        problems.append(Problem(f"{field}.master_port", "must be a TCP port (1-65535)"))
    for attr in ("outputs_pvc", "hub_token_secret", "priority_class", "service_account", "repo_credentials_secret"):
        value = getattr(profile, attr)
        if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
            problems.append(Problem(f"{field}.{attr}", f"{value!r} is not a valid object name"))
    for attr in ("pod_labels", "pod_annotations"):
        value = getattr(profile, attr)
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            problems.append(Problem(f"{field}.{attr}", "must map names to string values"))
    labels = profile.pod_labels if isinstance(profile.pod_labels, dict) else {}
    bad = [v for v in labels.values() if isinstance(v, str) and label_value(v) != v]
    if bad:
        problems.append(Problem(f"{field}.pod_labels", f"{bad[0]!r} is not a valid label value"))
    for kind in ("request", "limit"):
        quantities = Resources(cpu=getattr(profile, f"cpu_{kind}"), memory=getattr(profile, f"memory_{kind}"))
        problems += quantities.problems({"cpu": f"{field}.cpu_{kind}", "memory": f"{field}.memory_{kind}"})
    if profile.kueue_queue and label_value(profile.kueue_queue) != profile.kueue_queue:
        problems.append(Problem(f"{field}.kueue_queue", f"{profile.kueue_queue!r} is not a valid label value"))
    return problems


def check_spec(spec: RunSpec, profile: ClusterProfile) -> list[Problem]:
    problems = check_profile(profile)
    if not isinstance(spec.run_id, int) or spec.run_id <= 0:
        problems.append(Problem("run_id", "must be a positive integer"))
    problems += spec.resources.problems()
    if not spec.training_yaml.strip():
        problems.append(Problem("training_yaml", "is empty"))
    if not re.fullmatch(r"[0-9a-f]{7,64}", spec.commit or ""):
        problems.append(Problem("commit", f"{spec.commit!r} is not a commit id"))
    if redact_url(spec.repo_url) != spec.repo_url:  # the URL is written into the Job's env and annotations
        problems.append(
            Problem(
                "LFOPS_REPO_URL",
                "carries credentials, which would be written into the Job for anyone who can read it; "
                "use a URL without them and the cluster profile's repo_credentials_secret",
            )
        )
    return problems


def gpus_for(spec: RunSpec, profile: ClusterProfile) -> int:
    """GPUs per pod: the run's request, or the profile's default when the run names none."""
    return spec.resources.gpus_per_node or profile.gpus_per_node


def _lineage(spec: RunSpec, train_yaml: str) -> tuple[dict[str, str], dict[str, str]]:
    """Labels (short values, selectable) and annotations (full values) that make the Job readable without lfops."""
    labels = {MANAGED_BY_KEY: MANAGED_BY, RUN_ID_LABEL: str(spec.run_id)}
    annotations = {
        RUN_ID_LABEL: str(spec.run_id),
        PREFIX + "commit": spec.commit,
        PREFIX + "repo-url": spec.repo_url,
        PREFIX + "config-path": spec.config_path,
        PREFIX + "training-yaml-sha256": training_yaml_hash(train_yaml),
    }
    labels[PREFIX + "commit"] = spec.commit[:12]
    for key, value in sorted(spec.labels.items()):
        qualified = lineage_key(key)
        if qualified in (RUN_ID_LABEL, MANAGED_BY_KEY):
            continue
        annotations.setdefault(qualified, str(value))
        if short(value):
            labels.setdefault(qualified, short(value))
    return labels, annotations


def _clone_container(spec: RunSpec, profile: ClusterProfile) -> dict[str, Any]:
    """The config repository at exactly the run's commit, so relative paths (dataset_dir: data) resolve as reviewed."""
    git = "git"
    mounts = [{"name": "repo", "mountPath": REPO_DIR}]
    if profile.repo_credentials_secret:
        # a Secret holding `.git-credentials` (https://user:token@host); the token never appears in the manifest
        git = "git -c credential.helper='store --file=/etc/lfops-git/.git-credentials'"
        mounts.append({"name": "git-credentials", "mountPath": "/etc/lfops-git", "readOnly": True})
    script = (
        f'{git} clone --quiet --no-checkout "$REPO_URL" "$REPO_DIR" '
        '&& git -C "$REPO_DIR" checkout --quiet --detach "$COMMIT"'
    )
    env = [
        {"name": "REPO_URL", "value": spec.repo_url},
        {"name": "REPO_DIR", "value": REPO_DIR},
        {"name": "COMMIT", "value": spec.commit},
        {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
    ]
    return {
        "name": "clone",
        "image": profile.clone_image,
        "command": ["sh", "-c", script],
        "env": [*env, HOME_ENV],
        "volumeMounts": mounts,
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }


def _resources(res: Resources, gpus: int, profile: ClusterProfile) -> dict[str, dict[str, str]]:
    """The run's own cpu/memory, else the profile's; GPUs are limits (extended resources cannot be overcommitted)."""
    requests = {"cpu": res.cpu or profile.cpu_request, "memory": res.memory or profile.memory_request}
    limits = {
        GPU_RESOURCE: str(gpus) if gpus > 0 else "",
        "cpu": profile.cpu_limit,
        # a run that names its memory gets exactly that; otherwise the profile's limit, else its request
        "memory": res.memory or profile.memory_limit or profile.memory_request,
    }
    resources = {"limits": {k: v for k, v in limits.items() if v}, "requests": {k: v for k, v in requests.items() if v}}
    return {k: v for k, v in resources.items() if v}


def build_manifests(spec: RunSpec, profile: ClusterProfile) -> Manifests:
    """The Job (Indexed when nodes > 1), its ConfigMap with the training YAML, and for several nodes a headless Service.

    Raises ValidationFailed with one problem per bad field; the result depends only on the arguments.
    """
    problems = check_spec(spec, profile)
    if problems:
        raise ValidationFailed(problems)
    res = spec.resources
    name = job_name(spec.run_id)
    namespace = profile.namespace
    nodes = res.nodes
    gpus = gpus_for(spec, profile)
    train_yaml = pod_training_yaml(spec)
    labels, annotations = _lineage(spec, train_yaml)
    job_labels = dict(labels)
    if profile.kueue_queue:
        job_labels[QUEUE_LABEL] = profile.kueue_queue

    env = [{"name": "LFOPS_RUN_ID", "value": str(spec.run_id)}]
    if nodes > 1:
        # LLaMA-Factory's launcher reads these (NODE_RANK, not RANK); pod 0 is torchrun's rendezvous host.
        env += [
            {"name": "FORCE_TORCHRUN", "value": "1"},
            {"name": "NNODES", "value": str(nodes)},
            {
                "name": "NODE_RANK",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
            },
            {"name": "NPROC_PER_NODE", "value": str(max(gpus, 1))},
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}.{namespace}.svc"},
            {"name": "MASTER_PORT", "value": str(profile.master_port)},
        ]
    elif gpus > 1:
        env.append({"name": "NPROC_PER_NODE", "value": str(gpus)})
    if profile.hub_token_secret:
        # Only a reference: the token itself never passes through lfops, its database or its logs.
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": profile.hub_token_secret, "key": "HF_TOKEN", "optional": True}},
            }
        )

    resources = _resources(res, gpus, profile)

    run_dir = f"runs/{spec.run_id}"
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "outputs", "mountPath": OUTPUTS_DIR, "subPath": run_dir},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {"name": config_map_name(spec.run_id), "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
        },
        {"name": "outputs", "persistentVolumeClaim": {"claimName": profile.outputs_pvc}}
        if profile.outputs_pvc
        else {"name": "outputs", "emptyDir": {}},
    ]
    if gpus > 0 or nodes > 1:
        # NCCL and DataLoader workers need more shared memory than a container's 64 MiB default.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108 - a mount point, not a temp file
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})

    container = {
        "name": CONTAINER,
        "image": profile.image,
        "command": ["llamafactory-cli", "train", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "workingDir": REPO_DIR if profile.clone_image else OUTPUTS_DIR,
        "env": [*env, HOME_ENV],
        "volumeMounts": mounts,
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    if resources:
        container["resources"] = resources
    if nodes > 1:
        container["ports"] = [{"name": "torchrun", "containerPort": profile.master_port}]

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # training code has no business with the Kubernetes API
        "enableServiceLinks": False,
        # Pod Security "restricted": non-root (whatever the image's USER), the runtime's default seccomp profile;
        # fsGroup makes the outputs volume and the emptyDirs writable by that user.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(profile.run_as_user),
            "runAsGroup": int(profile.run_as_user),
            "fsGroup": int(profile.run_as_user),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if profile.node_selector:
        pod_spec["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(profile.tolerations)
    if profile.priority_class:
        pod_spec["priorityClassName"] = profile.priority_class
    if profile.service_account:
        pod_spec["serviceAccountName"] = profile.service_account
    if profile.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": profile.image_pull_secret}]
    if profile.clone_image:
        pod_spec["initContainers"] = [_clone_container(spec, profile)]
        volumes.append({"name": "repo", "emptyDir": {}})
        mounts.append({"name": "repo", "mountPath": REPO_DIR})
        if profile.repo_credentials_secret:
            volumes.append({"name": "git-credentials", "secret": {"secretName": profile.repo_credentials_secret}})
    if nodes > 1:
        pod_spec["subdomain"] = name  # with an Indexed Job, pod i is <job>-<i>.<subdomain>

    job_spec: dict[str, Any] = {
        "backoffLimit": int(profile.backoff_limit),
        "activeDeadlineSeconds": int(profile.active_deadline_seconds),
        "ttlSecondsAfterFinished": int(profile.ttl_seconds_after_finished),
        "completions": nodes,
        "parallelism": nodes,
        "template": {
            "metadata": {
                "labels": {**profile.pod_labels, **labels},
                "annotations": {**profile.pod_annotations, **annotations},
            },
            "spec": pod_spec,
        },
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if profile.kueue_queue:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) it when the queue has quota

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels, "annotations": dict(annotations)},
        "spec": job_spec,
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(spec.run_id),
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {k: v for k, v in annotations.items() if k in (PREFIX + "commit", PREFIX + "config-path")},
        },
        "immutable": True,  # the config of a launched run never changes
        "data": {CONFIG_KEY: train_yaml},
    }
    service = None
    if nodes > 1:
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "clusterIP": "None",
                "selector": {JOB_NAME_LABEL: name},
                # Ranks must resolve pod 0 before every pod is ready, or the rendezvous never starts.
                "publishNotReadyAddresses": True,
                "ports": [{"name": "torchrun", "port": profile.master_port, "targetPort": profile.master_port}],
            },
        }
    return Manifests(namespace, job, config_map, service)
