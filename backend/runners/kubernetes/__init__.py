"""Training runs as Kubernetes Jobs, one module per job:

    manifests   the Job, ConfigMap and Service of one run as plain dicts (pure functions; what a reviewer sees)
    client      the API client, reading responses, client errors as ClusterError / ClusterUnreachable
    status      a run's state derived from its Job and pods (pure)
    watcher     one watch per namespace on the Jobs and Pods lfops manages, as an in-memory state map
    runner      KubernetesRunner: the Runner verbs on top of them

The `kubernetes` package itself is imported only by backend.adaptors.kubernetes, on first use: importing this package
(or backend.runs, or the CLI) does not import it.
"""

from backend.runners.kubernetes.client import DEFAULT_TIMEOUT, api_errors, make_api_client, read_json
from backend.runners.kubernetes.runner import KubernetesRunner
from backend.runners.kubernetes.status import derive_status, summarize_job, summarize_pod
from backend.runners.kubernetes.watcher import WATCH_SECONDS, Listener, NamespaceWatcher

__all__ = [
    "DEFAULT_TIMEOUT",
    "WATCH_SECONDS",
    "KubernetesRunner",
    "Listener",
    "NamespaceWatcher",
    "api_errors",
    "derive_status",
    "make_api_client",
    "read_json",
    "summarize_job",
    "summarize_pod",
]
