"""The Kubernetes API client: credentials from a kubeconfig or the pod's service account, reading responses, and
client exceptions turned into one-line `ClusterError` / `ClusterUnreachable` (backend.errors)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from backend.adaptors import kubernetes as k8s
from backend.errors import ClusterError, ClusterUnreachable

try:  # parsing watch events is most of the watcher's CPU; orjson (a Gradio dependency) does it ~2.5x faster
    from orjson import loads
except ImportError:  # pragma: no cover - the plain parser is fine, just slower
    loads = json.loads

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for each API call


def make_api_client(kubeconfig: str = "", context: str = "") -> Any:
    """An ApiClient from a kubeconfig file, else in-cluster credentials, else $KUBECONFIG / ~/.kube/config."""
    cfg = k8s.client.Configuration()
    try:
        if kubeconfig:
            k8s.config.load_kube_config(config_file=kubeconfig, context=context or None, client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s.config.load_incluster_config(client_configuration=cfg)
        else:
            k8s.config.load_kube_config(context=context or None, client_configuration=cfg)
    except (k8s.config_exception(), OSError, TypeError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"kubeconfig: cannot load {where}: {exc}") from exc
    cfg.retries = 1  # connection errors only: a POST whose answer was lost is never resent blindly
    return k8s.client.ApiClient(cfg)


def read_json(resp: Any) -> Any:
    """The body of a `_preload_content=False` response; the connection goes back to the pool for the next call
    (an unread response would keep it, and the next request would pay a new TLS handshake)."""
    try:
        return loads(resp.data)
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
    import urllib3  # the client's transport; imported with it, not with lfops

    try:
        yield
    except k8s.api_exception() as exc:
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


def response_lines(resp: Any) -> Iterator[bytes]:
    """The lines of a streamed response (a watch, a followed log), without their line ends."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line:
                yield line
