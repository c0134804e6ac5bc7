"""Training runs as Kubernetes Jobs: submit, follow (one watch per namespace), logs, cancel.

Manifests come from backend.runners.k8s_manifests (pure functions). This module is the client side:
- submit creates the Job first, then its ConfigMap (and for several nodes the headless Service) owned by the Job, so
  Kubernetes' garbage collector removes them with it. The Job name is derived from the run id: a retried submit that
  meets 409 AlreadyExists checks the run-id label and adopts its own Job instead of creating a second one.
- a NamespaceWatcher keeps one watch on the namespace's Jobs and one on its Pods (label selector
  app.kubernetes.io/managed-by=lfops), resumes from the last resourceVersion after a disconnect and relists on
  410 Gone; run states are derived from that in-memory map, never by polling each Job.

The `kubernetes` package is imported lazily (as SkyPilot's adaptors do) so the CLI starts fast without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from backend.errors import ClusterError, ClusterUnreachable, Conflict, LfopsError, Problem, TimedOut, ValidationFailed
from backend.runners import k8s_manifests as km
from backend.runners.base import Runner, RunSpec, RunState, RunStatus
from backend.settings import ClusterProfile, Settings

log = logging.getLogger(__name__)

try:  # parsing watch events is most of the watcher's CPU; orjson (a Gradio dependency) does it ~2.5x faster
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - the plain parser is fine, just slower
    _loads = json.loads

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for each API call
WATCH_SECONDS = 240  # server-side watch timeout; the watch then resumes from its resourceVersion
Listener = Callable[[str, RunStatus], None]


def make_api_client(kubeconfig: str = "", context: str = "") -> Any:
    """An ApiClient from a kubeconfig file, else in-cluster credentials, else $KUBECONFIG / ~/.kube/config."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, context=context or None, client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(context=context or None, client_configuration=cfg)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"kubeconfig: cannot load {where}: {exc}") from exc
    cfg.retries = 1  # connection errors only: a POST whose answer was lost is never resent blindly
    return client.ApiClient(cfg)


def read_json(resp: Any) -> Any:
    """The body of a `_preload_content=False` response; the connection goes back to the pool for the next call
    (an unread response would keep it, and the next request would pay a new TLS handshake)."""
    try:
        return _loads(resp.data)
    finally:
        resp.release_conn()


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


@contextlib.contextmanager
def api_errors(action: str, host: str) -> Iterator[None]:
    """Turn client exceptions into one-line LfopsErrors that say what failed and what to do."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        if exc.status == 0 or exc.status is None:
            raise ClusterUnreachable(f"cluster: cannot {action}: {exc.reason}") from exc
        verb = {401: "unauthorized", 403: "forbidden", 404: "not found", 422: "invalid"}.get(exc.status, "failed")
        raise ClusterError(f"cluster: {action}: {verb} (HTTP {exc.status}): {_api_message(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ClusterUnreachable(
            f"cluster: cannot reach the Kubernetes API server at {host} to {action} ({reason}); "
            "retrying the launch is safe, it never creates a second Job"
        ) from exc


# ---- state derivation (pure) -----------------------------------------------------------------------------------


def summarize_job(obj: dict[str, Any]) -> dict[str, Any]:
    """The few fields a run's state depends on; the watcher keeps these instead of whole objects."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "run_id": labels.get(km.RUN_ID_LABEL, ""),
        "queue": labels.get(km.QUEUE_LABEL, ""),
        "deleting": bool(meta.get("deletionTimestamp")),
        "suspend": bool(spec.get("suspend")),
        "completions": spec.get("completions") or 1,
        "active": status.get("active") or 0,
        "failed": status.get("failed") or 0,
        "conditions": [
            (c.get("type"), c.get("status"), c.get("reason") or "", c.get("message") or "")
            for c in status.get("conditions") or []
        ],
    }


def _container_state(status: dict[str, Any], key: str) -> tuple[str, str, Any] | None:
    for cs in status.get("containerStatuses") or []:
        state = (cs.get("state") or {}).get(key)
        if state:
            return state.get("reason") or "", state.get("message") or "", state.get("exitCode")
    return None


def summarize_pod(obj: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    return {
        "name": meta.get("name"),
        "job": labels.get(km.JOB_NAME_LABEL) or labels.get("job-name", ""),
        "index": annotations.get(km.COMPLETION_INDEX_ANNOTATION, ""),
        "created": meta.get("creationTimestamp") or "",
        "deleting": bool(meta.get("deletionTimestamp")),
        "phase": status.get("phase") or "Pending",
        "node": spec.get("nodeName") or "",
        "scheduled": (scheduled.get("status"), scheduled.get("reason") or "", scheduled.get("message") or ""),
        "waiting": _container_state(status, "waiting"),
        "terminated": _container_state(status, "terminated"),
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
    }


def _pod_failure(pod: dict[str, Any]) -> str:
    if pod["terminated"]:
        reason, message, code = pod["terminated"]
        text = f"pod {pod['name']}: {reason or 'terminated'} (exit code {code})"
        return f"{text}: {message}" if message else text
    return f"pod {pod['name']}: {pod['reason'] or 'failed'}" + (f": {pod['message']}" if pod["message"] else "")


def _pod_pending(pod: dict[str, Any]) -> str:
    status, reason, message = pod["scheduled"]
    if status == "False":
        return f"pod {pod['name']}: {reason or 'not scheduled'}: {message}".rstrip(": ")
    if pod["waiting"]:
        reason, message, _ = pod["waiting"]
        return f"pod {pod['name']}: {reason}" + (f": {message}" if message else "")
    if not pod["node"]:
        return f"pod {pod['name']}: waiting for the scheduler"
    return f"pod {pod['name']}: starting on {pod['node']}"


def derive_status(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], *, deleted: bool = False, cancelled: str = ""
) -> RunStatus:
    """A run's state from its Job summary and its pods' summaries (see summarize_job / summarize_pod).

    `cancelled` is the reason when lfops itself deleted the Job; a Job deleted by anyone else is cancelled too.
    """
    if job is None:
        if deleted:
            return RunStatus(RunState.CANCELLED, cancelled or "the Job was deleted outside lfops")
        return RunStatus(RunState.LOST, "the Job does not exist")
    true = {ctype: (reason, message) for ctype, status, reason, message in job["conditions"] if status == "True"}
    if "Complete" in true or "SuccessCriteriaMet" in true:
        return RunStatus(RunState.SUCCEEDED)
    failed = true.get("Failed") or true.get("FailureTarget")
    pods = sorted(pods, key=lambda p: (p["index"], p["created"], p["name"]))
    if failed:
        reason = ": ".join(part for part in failed if part)
        details = [_pod_failure(p) for p in pods if p["phase"] == "Failed"]
        return RunStatus(RunState.FAILED, "; ".join([reason or "Failed", *details[:2]]))
    if job["deleting"] or deleted:
        return RunStatus(RunState.CANCELLED, cancelled or "the Job was deleted outside lfops")
    if job["suspend"]:
        queue = f" in Kueue queue {job['queue']}" if job["queue"] else ""
        return RunStatus(RunState.QUEUED, f"suspended: waiting for admission{queue}")
    live = [p for p in pods if not p["deleting"] and p["phase"] in ("Pending", "Running")]
    pending = [p for p in live if p["phase"] == "Pending"]
    if pending:
        return RunStatus(RunState.PENDING, "; ".join(_pod_pending(p) for p in pending[:2]))
    running = [p for p in live if p["phase"] == "Running"]
    if running:
        nodes = sorted({p["node"] for p in running})
        return RunStatus(RunState.RUNNING, f"{len(running)}/{job['completions']} pods running on {', '.join(nodes)}")
    failures = [_pod_failure(p) for p in pods if p["phase"] == "Failed"]
    if failures:
        return RunStatus(RunState.PENDING, f"retrying after {failures[-1]}")
    return RunStatus(RunState.PENDING, "waiting for the Job controller to create pods")


# ---- the watcher ------------------------------------------------------------------------------------------------


def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line:
                yield line


class NamespaceWatcher:
    """One watch on the Jobs and one on the Pods lfops manages in a namespace, kept in an in-memory state map.

    A dropped connection resumes from the last resourceVersion seen (bookmarks keep it fresh); a 410 Gone
    (the version has been compacted away) relists, and Jobs missing from the new list are treated as deleted.
    """

    KINDS = ("jobs", "pods")

    def __init__(self, client_factory: Callable[[], Any], namespace: str, watch_seconds: int = WATCH_SECONDS) -> None:
        self.namespace = namespace
        self.watch_seconds = watch_seconds
        self._client_factory = client_factory
        self._lock = threading.RLock()  # re-entrant: wait_for predicates read the map under the condition's lock
        self.changed = threading.Condition(self._lock)
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # job name -> pod name -> summary
        self._deleted: set[str] = set()
        self._cancelled: dict[str, str] = {}  # job name -> reason, for Jobs this process deletes
        self._status: dict[str, RunStatus] = {}
        self._listeners: list[Listener] = []
        self._synced = {kind: threading.Event() for kind in self.KINDS}
        self._responses: dict[str, Any] = {}
        self._threads: dict[str, threading.Thread] = {}
        # Each start() gets its own stop token: a thread still blocked in a read after stop() can never act on the
        # map once a later start() is running. `_generation` changes on reconnect() for the same reason.
        self._token = threading.Event()
        self._token.set()
        self._generation = 0
        self.resource_versions: dict[str, str | None] = dict.fromkeys(self.KINDS)
        self.stats = {"events": 0, "bookmarks": 0, "relists": 0, "reconnects": 0, "status_changes": 0}
        self.cpu_seconds: dict[str, float] = dict.fromkeys(self.KINDS, 0.0)  # of the watch threads, for bench/
        self.last_error = ""

    # -- lifecycle

    def start(self) -> NamespaceWatcher:
        with self._lock:
            if not self._token.is_set():
                return self
            token = self._token = threading.Event()
            for kind in self.KINDS:
                if self.resource_versions[kind] is None:
                    self._synced[kind].clear()  # readers wait for the (re)list before trusting the map
                thread = threading.Thread(
                    target=self._run, args=(kind, token), name=f"lfops-watch-{kind}-{self.namespace}"
                )
                thread.daemon = True  # never keeps the app from exiting
                self._threads[kind] = thread
                thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; the state map and resourceVersions are kept, so start() resumes where this left off."""
        with self._lock:
            self._token.set()
            threads = list(self._threads.values())
        self.reconnect()
        for thread in threads:
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether any watch thread still runs (after stop() none does: each blocked read is cut)."""
        return any(thread.is_alive() for thread in self._threads.values())

    def reconnect(self) -> None:
        """Cut the current watch connections (as a network failure would); the threads resume from their versions."""
        with self._lock:
            self._generation += 1
            responses = list(self._responses.values())
        for resp in responses:
            try:  # SHUT_RDWR: the server sees the close and a blocked read returns at once
                resp.connection.sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                with contextlib.suppress(Exception):
                    resp.shutdown()

    def wait_synced(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in self._synced.values())

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(external_id, status)` on every state change (from a watcher thread)."""
        with self._lock:
            self._listeners.append(listener)

    # -- reading the map

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._jobs or name in self._status

    def status(self, name: str) -> RunStatus | None:
        with self._lock:
            return self._status.get(name)

    def pods(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._pods.get(name, {}).values(), key=lambda p: (p["index"], p["created"], p["name"]))

    def mark_cancelled(self, name: str, reason: str = "cancelled") -> None:
        with self._lock:
            self._cancelled[name] = reason

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    # -- the watch loop

    def _list_call(self, api_client: Any, kind: str) -> Callable[..., Any]:
        from kubernetes import client

        if kind == "jobs":
            return client.BatchV1Api(api_client).list_namespaced_job
        return client.CoreV1Api(api_client).list_namespaced_pod

    def _run(self, kind: str, token: threading.Event) -> None:
        api_client = self._client_factory()
        call = self._list_call(api_client, kind)
        backoff = 0.2
        start_cpu = time.thread_time()
        try:
            while not token.is_set():
                try:
                    if self.resource_versions[kind] is None:
                        self._relist(kind, call, token)
                    if self._watch(kind, call, token) and not token.is_set():
                        self.stats["reconnects"] += 1
                    backoff = 0.2
                except Exception as exc:  # noqa: BLE001 - any failure: note it, back off, resume
                    if token.is_set():
                        break
                    self.last_error = f"{kind}: {exc}"
                    log.info("watch %s/%s interrupted (%s); resuming", self.namespace, kind, exc)
                    self.stats["reconnects"] += 1
                    token.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                finally:
                    self.cpu_seconds[kind] += time.thread_time() - start_cpu
                    start_cpu = time.thread_time()
        finally:
            with contextlib.suppress(Exception):
                api_client.close()

    def _relist(self, kind: str, call: Callable[..., Any], token: threading.Event) -> None:
        items: list[dict[str, Any]] = []
        page = None
        while True:
            kwargs = {"label_selector": km.SELECTOR, "limit": 500, "_preload_content": False}
            if page:
                kwargs["_continue"] = page
            resp = call(self.namespace, _request_timeout=DEFAULT_TIMEOUT, **kwargs)
            body = read_json(resp)
            items.extend(body.get("items") or [])
            page = (body.get("metadata") or {}).get("continue")
            if not page:
                break
        rv = body["metadata"]["resourceVersion"]
        with self._lock:
            if token.is_set():
                return
            if kind == "jobs":
                fresh = {s["name"]: s for s in map(summarize_job, items)}
                gone = set(self._jobs) - set(fresh)
                self._deleted |= gone
                self._jobs = fresh
                touched = set(fresh) | gone
            else:
                pods: dict[str, dict[str, dict[str, Any]]] = {}
                for summary in map(summarize_pod, items):
                    pods.setdefault(summary["job"], {})[summary["name"]] = summary
                touched = set(self._pods) | set(pods)
                self._pods = pods
            changes = [self._recompute(name) for name in touched]
            self.resource_versions[kind] = rv
            self.stats["relists"] += 1
        self._synced[kind].set()
        self._notify([c for c in changes if c])

    def _watch(self, kind: str, call: Callable[..., Any], token: threading.Event) -> bool:
        """Follow one watch connection; True when it was cut on purpose (reconnect) rather than ended by the server."""
        generation = self._generation
        resp = call(
            self.namespace,
            label_selector=km.SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_versions[kind],
            timeout_seconds=self.watch_seconds,
            _preload_content=False,
            _request_timeout=(DEFAULT_TIMEOUT[0], self.watch_seconds + 30),
        )
        with self._lock:  # stop()/reconnect() set the token or generation under this lock: no window is missed
            if token.is_set() or generation != self._generation:
                with contextlib.suppress(Exception):
                    resp.connection.sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(Exception):
                    resp.release_conn()
                return True
            self._responses[kind] = resp
        try:
            for line in _lines(resp):
                if token.is_set() or generation != self._generation:
                    return True  # stopped or cut: the event is not applied; the next watch delivers it again
                event = _loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:  # our version was compacted away: start over from a list
                        self.resource_versions[kind] = None
                        return False
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype == "BOOKMARK":
                    self.resource_versions[kind] = rv
                    self.stats["bookmarks"] += 1
                    continue
                change = self._apply(kind, etype, obj, rv, token)
                self._notify([change] if change else [])
        finally:
            with self._lock:
                if self._responses.get(kind) is resp:
                    del self._responses[kind]
            with contextlib.suppress(Exception):
                resp.release_conn()
        return token.is_set() or generation != self._generation

    def _apply(
        self, kind: str, etype: str, obj: dict[str, Any], rv: str, token: threading.Event
    ) -> tuple[str, RunStatus] | None:
        with self._lock:
            if token.is_set():
                return None
            self.resource_versions[kind] = rv
            self.stats["events"] += 1
            if kind == "jobs":
                summary = summarize_job(obj)
                name = summary["name"]
                if etype == "DELETED":
                    self._jobs.pop(name, None)
                    self._deleted.add(name)
                else:
                    self._jobs[name] = summary
            else:
                summary = summarize_pod(obj)
                name = summary["job"]
                pods = self._pods.setdefault(name, {})
                if etype == "DELETED":
                    pods.pop(summary["name"], None)
                    if not pods:
                        self._pods.pop(name, None)
                else:
                    pods[summary["name"]] = summary
            return self._recompute(name)

    def _recompute(self, name: str) -> tuple[str, RunStatus] | None:
        """Under the lock: the new status of job `name`, or None when unchanged. Finished states are final."""
        old = self._status.get(name)
        if old is not None and old.state.finished:
            return None
        job = self._jobs.get(name)
        if job is None and name not in self._deleted:
            return None  # pods of a Job we have not seen yet
        pods = list(self._pods.get(name, {}).values())
        status = derive_status(job, pods, deleted=name in self._deleted, cancelled=self._cancelled.get(name, ""))
        status = RunStatus(status.state, status.reason, km.external_id(self.namespace, name))
        if status == old:
            return None
        self._status[name] = status
        self.stats["status_changes"] += 1
        self.changed.notify_all()
        return name, status

    def _notify(self, changes: list[tuple[str, RunStatus]]) -> None:
        for name, status in changes:
            for listener in list(self._listeners):
                try:
                    listener(km.external_id(self.namespace, name), status)
                except Exception:  # noqa: BLE001 - a failing listener must not stop the watch
                    log.exception("run status listener failed for %s", name)


# ---- the runner -------------------------------------------------------------------------------------------------


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
        from kubernetes import client

        return client.BatchV1Api(self.client)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)

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
        name = spec.resources.profile
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
        from kubernetes.client.exceptions import ApiException

        ns, name = manifests.namespace, manifests.name
        batch = self._batch()
        with api_errors(f"create job {ns}/{name}", self.host):
            try:
                resp = batch.create_namespaced_job(
                    ns, manifests.job, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                )
                return read_json(resp)
            except ApiException as exc:
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
        from kubernetes.client.exceptions import ApiException

        core = self._core()
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        create = core.create_namespaced_config_map if kind == "configmap" else core.create_namespaced_service
        read = core.read_namespaced_config_map if kind == "configmap" else core.read_namespaced_service
        with api_errors(f"create {kind} {ns}/{name}", self.host):
            try:
                read_json(create(ns, km.owned_by(obj, job), _preload_content=False, _request_timeout=DEFAULT_TIMEOUT))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = read_json(read(name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT))
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(km.RUN_ID_LABEL) != str(spec.run_id):
            raise Conflict(f"{kind} {ns}/{name}: already exists for another run (run-id {labels.get(km.RUN_ID_LABEL)})")

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
        from kubernetes.client.exceptions import ApiException

        with api_errors(f"read job {ns}/{name}", self.host):
            try:
                job = read_json(
                    self._batch().read_namespaced_job(
                        name, ns, _preload_content=False, _request_timeout=DEFAULT_TIMEOUT
                    )
                )
            except ApiException as exc:
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
        from kubernetes.client.exceptions import ApiException

        try:
            events = read_json(
                self._core().list_namespaced_event(
                    ns,
                    field_selector=f"involvedObject.kind=Job,involvedObject.name={name}",
                    _preload_content=False,
                    _request_timeout=DEFAULT_TIMEOUT,
                )
            )["items"]
        except (ApiException, OSError):
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
            for line in _lines(resp):
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
        from kubernetes.client.exceptions import ApiException

        ns, name = km.parse_external_id(external_id)
        watcher = self.watcher(ns)
        watcher.mark_cancelled(name, reason or "cancelled")
        with api_errors(f"delete job {ns}/{name}", self.host):
            try:
                self._batch().delete_namespaced_job(
                    name, ns, propagation_policy="Foreground", _request_timeout=DEFAULT_TIMEOUT
                )
            except ApiException as exc:
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
