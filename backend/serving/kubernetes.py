"""Serving on a Kubernetes cluster profile: the objects of backend.serving.manifests applied, rolled, deleted.

    start     server-side apply (field manager `lfops`) of Secret, Deployment, Service, HPA, PDB in that order, then
              wait until a pod is available; on any failure every object of the deployment is deleted again
    rollout   apply the new Deployment (a new pod template: the Deployment controller replaces pods one by one,
              never below capacity) and wait until every pod runs it; on failure the previous template is applied back
    set_keys  apply the Secret only (the gateway re-reads the mounted file: no restart)
    stop      delete the deployment's objects by its labels (`deletecollection`: no read access to Secrets needed)
    status    from the Deployment's status (available / updated replicas, ProgressDeadlineExceeded)

The API client and the error translation are the Kubernetes runner's (backend.runners.kubernetes.client); the
`kubernetes` package loads on first use. What the app's Role must allow for this is in k8s/base/role.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from backend.adaptors import kubernetes as k8s
from backend.errors import ClusterError, Conflict, LfopsError, NotFound, SettingsError, TimedOut
from backend.runners.kubernetes.client import DEFAULT_TIMEOUT, api_errors, make_api_client, read_json
from backend.serving import manifests as sm
from backend.serving.keys import StoredKey
from backend.serving.targets import LiveStatus, ServedVersion, Started
from backend.settings import ClusterProfile

FIELD_MANAGER = "lfops"
APPLY = "application/apply-patch+yaml"
_TARGET = TypeAdapter(sm.ServingTarget)


def serving_target(profile: ClusterProfile) -> sm.ServingTarget:
    """A cluster profile as a serving target: namespace, scheduling and hub token from the profile, the rest from its
    `serving` block (any ServingTarget field: images, registry_pvc, models_pvc, gpus, replicas, in_flight_target...)."""
    where = f"LFOPS_CLUSTER_PROFILES.{profile.name}.serving"
    overrides = dict(profile.serving or {})
    known = {f.name for f in dataclasses.fields(sm.ServingTarget)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown field {unknown[0]!r}", field=where)
    values = {
        "name": profile.name,
        "namespace": profile.namespace,
        "gpus": 1 if profile.gpus_per_node > 0 else 0,
        "llamafactory_image": profile.image,  # the training image has llamafactory-cli (CPU profiles serve with it)
        "node_selector": dict(profile.node_selector),
        "tolerations": list(profile.tolerations),
        "priority_class": profile.priority_class,
        "hub_token_secret": profile.hub_token_secret,
        "image_pull_secret": profile.image_pull_secret,
        **overrides,
    }
    try:
        return _TARGET.validate_python(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        attr = ".".join(str(p) for p in error["loc"])
        raise SettingsError(f"{where}.{attr}: {error['msg']}", field=f"{where}.{attr}") from None


def serving_spec(deployment: str, version: ServedVersion, models_dir: Path) -> sm.ServingSpec:
    """What the manifests need of a registry version. A base model on this machine must lie in the models directory
    (the profile's `models_pvc`); a hub id is loaded by the model server itself."""
    manifest = version.manifest
    params = (manifest.get("config") or {}).get("params") or {}
    base = str(manifest.get("base_model") or params.get("model_name_or_path") or "")
    on_volume = False
    if version.kind == "adapter" and base.startswith(("/", "./", "../", "~")):
        path = Path(base).expanduser()
        try:
            relative = path.resolve().relative_to(Path(models_dir).resolve())
        except ValueError:
            raise LfopsError(
                f"base model: {base} of {version.ref} is a path outside the models directory {models_dir}; "
                "a cluster loads only models kept there or hub models",
                field="base_model",
            ) from None
        if not (path / "config.json").is_file():
            raise NotFound(f"base model: {base} of {version.ref} is missing", field="base_model")
        base, on_volume = relative.as_posix(), True
    change_request = (manifest.get("change_request") or {}).get("id")
    run = (manifest.get("run") or {}).get("id")
    lineage = {
        "commit": manifest.get("commit"),
        "config_hash": manifest.get("config_hash"),
        "dataset_version": manifest.get("dataset_version"),
        "change_request": change_request,
        "run": run,
    }
    return sm.ServingSpec(
        name=deployment,
        model=version.name,
        version=version.version,
        kind=version.kind,
        base_model=base,
        base_model_on_volume=on_volume,
        template=str(params.get("template") or "default"),
        lora_rank=int(params.get("lora_rank") or 0),
        lineage={k: str(v) for k, v in lineage.items() if v not in (None, "")},
    )


def label_selector(deployment: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sm.selector(deployment).items())


class KubernetesTarget:
    """One cluster profile as a serving target."""

    def __init__(
        self,
        profile: ClusterProfile,
        models_dir: Path,
        *,
        kubeconfig: str = "",
        client_factory: Callable[[], Any] | None = None,
        rollout_timeout_s: float | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.profile = profile
        self.name = profile.name
        self.models_dir = Path(models_dir)
        self._client_factory = client_factory or (lambda: make_api_client(kubeconfig))
        self._client: Any = None
        self._lock = threading.Lock()
        self.rollout_timeout_s = rollout_timeout_s
        self.poll_s = poll_s

    @property
    def target(self) -> sm.ServingTarget:
        return serving_target(self.profile)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @property
    def host(self) -> str:
        return self.client.configuration.host

    def _target_in(self, namespace: str) -> sm.ServingTarget:
        target = self.target
        return dataclasses.replace(target, namespace=namespace) if namespace else target

    def manifests(
        self, deployment: str, version: ServedVersion, keys: list[StoredKey], namespace: str = ""
    ) -> sm.ServingManifests:
        return sm.build_manifests(
            serving_spec(deployment, version, self.models_dir), self._target_in(namespace), list(keys)
        )

    # ---- the Target verbs ---------------------------------------------------------------------------------------

    def check(self, version: ServedVersion) -> None:
        self.manifests("check", version, [])  # ValidationFailed / NotFound name the field

    def start(
        self, deployment: str, version: ServedVersion, keys: list[StoredKey], port: int | None, ready_timeout_s: float
    ) -> Started:
        m = self.manifests(deployment, version, keys)
        name, namespace = m.name, m.namespace
        if self._read_deployment(name, namespace) is not None:
            raise Conflict(f"name: {namespace}/{name} already exists on cluster profile {self.name}", field="name")
        applied = 0
        try:
            for obj in m.objects():
                self._apply(obj)
                applied += 1
            self._wait(name, namespace, ready_timeout_s, version.ref, settled=False)
        except BaseException as exc:
            if not applied and isinstance(exc, ClusterError):
                raise  # the API server refused the first object: nothing was made
            try:
                self.stop(deployment, namespace)
            except LfopsError as cleanup:
                raise ClusterError(
                    f"{exc}; and removing what was applied failed too ({cleanup}): run "
                    f"`lfops deployments undeploy {deployment}` when the cluster answers"
                ) from exc
            raise
        return Started(f"http://{name}.{namespace}.svc.cluster.local:{sm.SERVICE_PORT}/v1", namespace, None)

    def rollout(
        self,
        deployment: str,
        namespace: str,
        version: ServedVersion,
        keys: list[StoredKey],
        previous: ServedVersion | None = None,
    ) -> None:
        m = self.manifests(deployment, version, keys, namespace)
        timeout = self.rollout_timeout_s or self.target.startup_timeout_s + 300
        self._apply(m.deployment)
        try:
            self._wait(m.name, m.namespace, timeout, version.ref, settled=True)
        except BaseException:
            if previous is not None:  # the old template back: its pods were never taken below capacity
                with contextlib.suppress(LfopsError):
                    self._apply(self.manifests(deployment, previous, keys, namespace).deployment)
            raise

    def set_keys(self, deployment: str, namespace: str, version: ServedVersion, keys: list[StoredKey]) -> None:
        spec = serving_spec(deployment, version, self.models_dir)
        self._apply(sm.build_keys_secret(spec, self._target_in(namespace), list(keys)))

    def stop(self, deployment: str, namespace: str) -> None:
        """Every object of the deployment, found by its labels; pods go with their ReplicaSets (garbage collection)."""
        namespace = namespace or self.target.namespace
        selector = label_selector(deployment)
        api = self.client
        calls = (
            ("deployments", k8s.client.AppsV1Api(api).delete_collection_namespaced_deployment),
            ("autoscalers", k8s.client.AutoscalingV2Api(api).delete_collection_namespaced_horizontal_pod_autoscaler),
            ("disruption budgets", k8s.client.PolicyV1Api(api).delete_collection_namespaced_pod_disruption_budget),
            ("services", k8s.client.CoreV1Api(api).delete_collection_namespaced_service),
            ("secrets", k8s.client.CoreV1Api(api).delete_collection_namespaced_secret),
        )
        for what, call in calls:
            with api_errors(f"delete the {what} of deployment {deployment} in {namespace}", self.host):
                read_json(
                    call(
                        namespace,
                        label_selector=selector,
                        propagation_policy="Background",
                        _preload_content=False,
                        _request_timeout=DEFAULT_TIMEOUT,
                    )
                )

    def status(self, deployment: str, namespace: str) -> LiveStatus:
        namespace = namespace or self.target.namespace
        obj = self._read_deployment(sm.object_name(deployment), namespace)
        if obj is None:
            return LiveStatus("stopped", reason=f"no Deployment {sm.object_name(deployment)} in {namespace}")
        return _live_status(obj)

    # ---- API calls ----------------------------------------------------------------------------------------------

    def _apply(self, obj: dict[str, Any]) -> None:
        api = self.client
        core, apps = k8s.client.CoreV1Api(api), k8s.client.AppsV1Api(api)
        calls = {
            "Secret": core.patch_namespaced_secret,
            "Service": core.patch_namespaced_service,
            "Deployment": apps.patch_namespaced_deployment,
            "HorizontalPodAutoscaler": k8s.client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": k8s.client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget,
        }
        kind, meta = obj["kind"], obj["metadata"]
        with api_errors(f"apply {kind} {meta['namespace']}/{meta['name']}", self.host):
            read_json(
                calls[kind](
                    meta["name"],
                    meta["namespace"],
                    obj,
                    field_manager=FIELD_MANAGER,
                    force=True,  # lfops owns these objects; an edit by hand is replaced, as a rollout should
                    _content_type=APPLY,
                    _preload_content=False,
                    _request_timeout=DEFAULT_TIMEOUT,
                )
            )

    def _read_deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        apps = k8s.client.AppsV1Api(self.client)
        try:
            with api_errors(f"read Deployment {namespace}/{name}", self.host):
                return read_json(
                    apps.read_namespaced_deployment(
                        name, namespace, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                    )
                )
        except ClusterError as exc:
            if "(HTTP 404)" in str(exc):
                return None
            raise

    def _wait(self, name: str, namespace: str, timeout_s: float, version: str, settled: bool) -> None:
        """Until a pod of the current template is available (`settled`: every pod runs it and no old one is left)."""
        deadline = time.monotonic() + timeout_s
        while True:
            obj = self._read_deployment(name, namespace)
            if obj is None:
                raise NotFound(f"deployment: {namespace}/{name} disappeared while starting", field="name")
            live = _live_status(obj)
            if live.state == "failed":
                raise LfopsError(f"deployment {namespace}/{name} ({version}) failed: {live.reason}")
            if live.state == "running" or (not settled and _available(obj) > 0 and _observed(obj)):
                return
            if time.monotonic() > deadline:
                raise TimedOut(
                    f"deployment {namespace}/{name} ({version}) was not ready after {timeout_s:g} s ({live.detail})",
                    field="ready_timeout",
                )
            time.sleep(self.poll_s)


def _observed(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return (status.get("observedGeneration") or 0) >= (obj["metadata"].get("generation") or 0)


def _available(obj: dict[str, Any]) -> int:
    return int((obj.get("status") or {}).get("availableReplicas") or 0)


def _live_status(obj: dict[str, Any]) -> LiveStatus:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    wanted = int(spec.get("replicas") or 0)
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = _available(obj)
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    version = annotations.get(sm.VERSION_LABEL, "")
    detail = f"{available}/{wanted} available, {updated} updated, {total} pods"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return LiveStatus("failed", version, detail, condition.get("message", "progress deadline exceeded"))
    if not _observed(obj) or updated < wanted or total > wanted:
        state = "rolling" if available else "starting"
    elif available >= wanted > 0:
        state = "running"
    else:
        state = "starting"
    return LiveStatus(state, version, detail)
