"""Training runs as Kubernetes Jobs: submit, follow (through the namespace's watcher), logs, cancel, preview.

Manifests come from backend.runners.kubernetes.manifests (pure functions); this is the client side. Submit creates the
Job first, then its ConfigMap (and for several nodes the headless Service) owned by the Job, so Kubernetes' garbage
collector removes them with it. The Job name is derived from the run id: a retried submit that meets 409 AlreadyExists
checks the run-id label and adopts its own Job instead of creating a second one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from backend.adaptors import kubernetes as k8s
from backend.errors import ClusterUnreachable, Conflict, Problem, TimedOut, ValidationFailed
from backend.runners.base import Resources, Runner, RunSpec, RunState, RunStatus
from backend.runners.kubernetes import manifests as km
from backend.runners.kubernetes.client import (
    DEFAULT_TIMEOUT,
    api_errors,
    make_api_client,
    read_json,
    response_lines,
)
from backend.runners.kubernetes.status import derive_status, summarize_job, summarize_pod
from backend.runners.kubernetes.watcher import WATCH_SECONDS, Listener, NamespaceWatcher
from backend.settings import ClusterProfile, Settings


class KubernetesRunner(Runner):
    """Runs a RunSpec as a Job on the cluster named by its profile (`resources.profile`)."""

    name = "kubernetes"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        profiles: dict[str, ClusterProfile] | None = None,
        kubeconfig: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.profiles = dict(profiles if profiles is not None else (settings.cluster_profiles if settings else {}))
        self.kubeconfig = kubeconfig if kubeconfig is not None else (settings.kubeconfig if settings else "")
        self._client_factory = client_factory or (lambda: make_api_client(self.kubeconfig))
        self._client: Any = None
        self._watchers: dict[str, NamespaceWatcher] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._events_cache: dict[tuple[str, str], tuple[float, str]] = {}
        self.watch_seconds = watch_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRunner:
        return cls(settings)

    # -- clients and watchers

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    @property
    def host(self) -> str:
        return self.client.configuration.host

    def _batch(self) -> Any:
        return k8s.client.BatchV1Api(self.client)

    def _core(self) -> Any:
        return k8s.client.CoreV1Api(self.client)

    def watcher(self, namespace: str) -> NamespaceWatcher:
        """The namespace's watcher, started on first use."""
        with self._lock:
            watcher = self._watchers.get(namespace)
            if watcher is None:
                watcher = NamespaceWatcher(self._client_factory, namespace, self.watch_seconds)
                for listener in self._listeners:
                    watcher.subscribe(listener)
                self._watchers[namespace] = watcher
        return watcher.start()

    def subscribe(self, listener: Listener) -> None:
        """`listener(external_id, status)` on every state change of any run in any watched namespace."""
        with self._lock:
            self._listeners.append(listener)
            watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.subscribe(listener)

    def close(self) -> None:
        for watcher in list(self._watchers.values()):
            watcher.stop()
        self._watchers.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- manifests

    def profile_for(self, spec: RunSpec) -> ClusterProfile:
        return self._profile_named(spec.resources.profile)

    def _profile_named(self, name: str) -> ClusterProfile:
        if not self.profiles:
            raise ValidationFailed(
                [Problem("resources.profile", "no cluster profiles configured (LFOPS_CLUSTER_PROFILES)")]
            )
        if not name and len(self.profiles) == 1:
            return next(iter(self.profiles.values()))
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise ValidationFailed(
                [Problem("resources.profile", f"no cluster profile named {name!r} (known: {known})")]
            )
        return self.profiles[name]

    def manifests(self, spec: RunSpec) -> km.Manifests:
        return km.build_manifests(spec, self.profile_for(spec))

    def preview(self, spec: RunSpec) -> str:
        """The YAML a reviewer sees before launch."""
        return self.manifests(spec).to_yaml()

    # -- Runner verbs

    def submit(self, spec: RunSpec) -> str:
        manifests = self.manifests(spec)  # validation errors surface before any API call
        ns, name = manifests.namespace, manifests.name
        job = self._create_job(manifests, spec)
        self._create_owned(manifests.config_map, job, spec, "configmap")
        if manifests.service is not None:
            self._create_owned(manifests.service, job, spec, "service")
        self.watcher(ns)
        return km.external_id(ns, name)

    def _create_job(self, manifests: km.Manifests, spec: RunSpec) -> dict[str, Any]:
        ns, name = manifests.namespace, manifests.name
        batch = self._batch()
        with api_errors(f"create job {ns}/{name}", self.host):
            try:
                resp = batch.create_namespaced_job(
                    ns, manifests.job, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                )
                return read_json(resp)
            except k8s.api_exception() as exc:
                if exc.status != 409:
                    raise
            # A Job of this name exists: ours from an earlier try whose answer was lost, or someone else's.
            resp = batch.read_namespaced_job(name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT)
            existing = read_json(resp)
        self._check_same_run(existing, spec, f"job {ns}/{name}")
        return existing

    @staticmethod
    def _check_same_run(obj: dict[str, Any], spec: RunSpec, what: str) -> None:
        meta = obj.get("metadata") or {}
        run_id = (meta.get("labels") or {}).get(km.RUN_ID_LABEL)
        commit = (meta.get("annotations") or {}).get(km.PREFIX + "commit")
        if run_id != str(spec.run_id) or commit != spec.commit:
            raise Conflict(
                f"{what}: already exists for another run (run-id {run_id or '-'}, commit {(commit or '-')[:12]}); "
                "delete it or launch into another namespace"
            )

    def _create_owned(self, obj: dict[str, Any], job: dict[str, Any], spec: RunSpec, kind: str) -> None:
        core = self._core()
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        create = core.create_namespaced_config_map if kind == "configmap" else core.create_namespaced_service
        read = core.read_namespaced_config_map if kind == "configmap" else core.read_namespaced_service
        with api_errors(f"create {kind} {ns}/{name}", self.host):
            try:
                read_json(create(ns, km.owned_by(obj, job), _preload_content=False, _request_timeout=DEFAULT_TIMEOUT))
                return
            except k8s.api_exception() as exc:
                if exc.status != 409:
                    raise
            existing = read_json(read(name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT))
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(km.RUN_ID_LABEL) != str(spec.run_id):
            raise Conflict(f"{kind} {ns}/{name}: already exists for another run (run-id {labels.get(km.RUN_ID_LABEL)})")

    def find_submitted(self, run_id: int, resources: Resources) -> str | None:
        """A Job's name follows from the run id and its namespace from the profile, so a submit that reached the
        cluster is found by reading that one Job (labelled with this run id; a Job of another run is not ours)."""
        try:
            ns = self._profile_named(resources.profile).namespace
        except ValidationFailed:  # no such profile: the submit was refused before any API call
            return None
        name = km.job_name(run_id)
        with api_errors(f"read job {ns}/{name}", self.host):
            try:
                resp = self._batch().read_namespaced_job(
                    name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                )
            except k8s.api_exception() as exc:
                if exc.status == 404:
                    return None
                raise
        labels = (read_json(resp).get("metadata") or {}).get("labels") or {}
        return km.external_id(ns, name) if labels.get(km.RUN_ID_LABEL) == str(run_id) else None

    def status(self, external_id: str) -> RunStatus:
        ns, name = km.parse_external_id(external_id)
        watcher = self.watcher(ns)
        watcher.wait_synced()
        status = watcher.status(name)
        if status is None:  # not (yet) seen by the watch: ask once
            status = self._read_status(ns, name)
        if status.state == RunState.PENDING and not watcher.pods(name):
            status = RunStatus(status.state, self._job_events(ns, name) or status.reason, status.external_id)
        return status

    EVENTS_TTL = 5.0  # status() may be called every second per run; events are asked at most this often

    def _read_status(self, ns: str, name: str) -> RunStatus:
        with api_errors(f"read job {ns}/{name}", self.host):
            try:
                job = read_json(
                    self._batch().read_namespaced_job(
                        name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                    )
                )
            except k8s.api_exception() as exc:
                if exc.status != 404:
                    raise
                return RunStatus(RunState.LOST, f"job {ns}/{name} does not exist", km.external_id(ns, name))
            pods = read_json(
                self._core().list_namespaced_pod(
                    ns,
                    label_selector=f"{km.JOB_NAME_LABEL}={name}",
                    _preload_content=False,
                    _request_timeout=DEFAULT_TIMEOUT,
                )
            )["items"]
        status = derive_status(summarize_job(job), [summarize_pod(p) for p in pods])
        return RunStatus(status.state, status.reason, km.external_id(ns, name))

    def _job_events(self, ns: str, name: str) -> str:
        """Why a Job has no pods, e.g. 'FailedCreate: ... exceeded quota'; '' when nothing was reported."""
        key, now = (ns, name), time.monotonic()
        cached = self._events_cache.get(key)
        if cached and now - cached[0] < self.EVENTS_TTL:
            return cached[1]
        reason = self._read_job_events(ns, name)
        self._events_cache[key] = (now, reason)
        return reason

    def _read_job_events(self, ns: str, name: str) -> str:
        try:
            events = read_json(
                self._core().list_namespaced_event(
                    ns,
                    field_selector=f"involvedObject.kind=Job,involvedObject.name={name}",
                    _preload_content=False,
                    _request_timeout=DEFAULT_TIMEOUT,
                )
            )["items"]
        except (k8s.api_exception(), OSError):
            return ""
        warnings = [e for e in events if e.get("type") == "Warning"]
        if not warnings:
            return ""
        last = max(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return f"{last.get('reason')}: {last.get('message')}"

    def wait(self, external_id: str, timeout: float | None = None, poll: float = 0.5) -> RunStatus:
        """Block until the run finishes, woken by the watch (poll is unused: nothing is polled)."""
        ns, name = km.parse_external_id(external_id)
        watcher = self.watcher(ns)
        watcher.wait_synced()

        def finished() -> bool:
            status = watcher.status(name)
            return status is not None and status.state.finished

        if not watcher.wait_for(finished, timeout):
            status = self.status(external_id)
            if status.state.finished:
                return status
            raise TimedOut(f"run {external_id} still {status.state} after {timeout} s: {status.reason}")
        return watcher.status(name)  # type: ignore[return-value]

    LOG_GRACE = 2.0  # seconds a followed log may still deliver after the run has finished

    def logs(self, external_id: str, follow: bool = False) -> Iterator[str]:
        """Lines of the rank-0 pod's training container. With follow: wait for it to start, stream, and end once the
        run has finished (kubelets end the stream themselves; this also ends one a node never closes)."""
        ns, name = km.parse_external_id(external_id)
        return self._logs(ns, name, follow)

    def _logs(self, ns: str, name: str, follow: bool) -> Iterator[str]:
        import urllib3

        watcher = self.watcher(ns)
        watcher.wait_synced()

        def started() -> dict[str, Any] | None:
            pods = [p for p in watcher.pods(name) if p["index"] in ("", "0")]
            ready = [p for p in pods if p["phase"] != "Pending"]
            return ready[-1] if ready else None

        if follow:
            watcher.wait_for(lambda: started() is not None or self._finished(watcher, name), None)
        pod = started()
        if pod is None:
            return
        with api_errors(f"read log of pod {ns}/{pod['name']}", self.host):
            resp = self._core().read_namespaced_pod_log(
                pod["name"],
                ns,
                container=km.CONTAINER,
                follow=follow,
                _preload_content=False,
                _request_timeout=(DEFAULT_TIMEOUT[0], None if follow else DEFAULT_TIMEOUT[1]),
            )
        reader_done = threading.Event()
        if follow:
            threading.Thread(
                target=self._close_when_finished, args=(watcher, name, resp, reader_done), daemon=True
            ).start()
        try:
            for line in response_lines(resp):
                yield line.decode("utf-8", errors="replace")
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # the closer cut it, or the network broke
            if not self._finished(watcher, name):
                raise ClusterUnreachable(f"cluster: log stream of pod {ns}/{pod['name']} broke: {exc}") from exc
        finally:
            reader_done.set()
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _close_when_finished(
        self, watcher: NamespaceWatcher, name: str, resp: Any, reader_done: threading.Event
    ) -> None:
        while not reader_done.is_set():
            if watcher.wait_for(lambda: self._finished(watcher, name), 1.0):
                if not reader_done.wait(self.LOG_GRACE):
                    with contextlib.suppress(AttributeError, OSError):
                        resp.connection.sock.shutdown(socket.SHUT_RDWR)
                return

    @staticmethod
    def _finished(watcher: NamespaceWatcher, name: str) -> bool:
        status = watcher.status(name)
        return status is not None and status.state.finished

    def cancel(self, external_id: str, reason: str = "cancelled") -> None:
        """Delete the Job; Foreground propagation removes its pods (and owned ConfigMap/Service) before the Job."""
        ns, name = km.parse_external_id(external_id)
        watcher = self.watcher(ns)
        watcher.mark_cancelled(name, reason or "cancelled")
        with api_errors(f"delete job {ns}/{name}", self.host):
            try:
                self._batch().delete_namespaced_job(
                    name, ns, propagation_policy="Foreground", _request_timeout=DEFAULT_TIMEOUT
                )
            except k8s.api_exception() as exc:
                if exc.status != 404:  # already gone: cancelling twice is fine
                    raise

    def output_dir(self, external_id: str) -> str:
        """<outputs_mount>/runs/<id>/model when this app mounts the profile's outputs volume (see docs/cluster.md)."""
        ns, name = km.parse_external_id(external_id)
        run_id = name.removeprefix(km.job_name(0)[:-1])
        for profile in self.profiles.values():
            if profile.namespace == ns and profile.outputs_mount and profile.outputs_pvc and run_id.isdigit():
                return f"{profile.outputs_mount.rstrip('/')}/runs/{run_id}/{km.MODEL_SUBDIR}"
        return ""
