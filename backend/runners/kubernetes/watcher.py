"""One watch per namespace on the Jobs and Pods lfops manages, kept as an in-memory state map of run statuses.

The watch uses the label selector app.kubernetes.io/managed-by=lfops, resumes from the last resourceVersion after a
disconnect and relists on 410 Gone; run states are derived from the map (backend.runners.kubernetes.status), never by
polling each Job.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from backend.adaptors import kubernetes as k8s
from backend.runners.base import RunStatus
from backend.runners.kubernetes import manifests as km
from backend.runners.kubernetes.client import DEFAULT_TIMEOUT, loads, read_json, response_lines
from backend.runners.kubernetes.status import derive_status, summarize_job, summarize_pod

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # server-side watch timeout; the watch then resumes from its resourceVersion
Listener = Callable[[str, RunStatus], None]
# Events every watcher of this process received, by (kind, event type): /metrics reads them (backend.ops).
_EVENTS: Counter[tuple[str, str]] = Counter()
_EVENTS_LOCK = threading.Lock()


def count_event(kind: str, etype: str) -> None:
    with _EVENTS_LOCK:
        _EVENTS[(kind, etype)] += 1


def event_counts() -> dict[tuple[str, str], int]:
    with _EVENTS_LOCK:
        return dict(_EVENTS)


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
        if kind == "jobs":
            return k8s.client.BatchV1Api(api_client).list_namespaced_job
        return k8s.client.CoreV1Api(api_client).list_namespaced_pod

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
            for line in response_lines(resp):
                if token.is_set() or generation != self._generation:
                    return True  # stopped or cut: the event is not applied; the next watch delivers it again
                event = loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:  # our version was compacted away: start over from a list
                        self.resource_versions[kind] = None
                        return False
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                count_event(kind, str(etype))
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
