"""The drift checks on Kubernetes: a CronJob running `lfops monitor check` in the app's image (a pure function, like
backend/serving/manifests.py: it never touches a client).

The Job reads the settings the app reads (ConfigMap lfops-settings) and the database URL from the Secret the
PostgreSQL overlay uses (lfops-database, key url); the config repository is mirrored into an emptyDir each run (the
reference prompts are read from Git at the model's commit), so the Job needs no volume of the app's. One run at a
time (concurrencyPolicy Forbid); a run that overlaps is skipped, and a window is never reported twice anyway
(drift_reports has one row per window). Restricted Pod Security: non-root, no privilege escalation, no
capabilities, read-only root filesystem, RuntimeDefault seccomp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from backend.errors import LfopsError

_SCHEDULE_FIELD = re.compile(r"^[\d*/,\-]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")


@dataclass(frozen=True)
class MonitorCronJob:
    namespace: str
    image: str = "ghcr.io/lfops/lfops:0.1.0"
    name: str = "lfops-monitor"
    schedule: str = "*/10 * * * *"
    settings_configmap: str = "lfops-settings"
    database_secret: str = "lfops-database"  # noqa: S105 - the Secret's name (key `url`), not a password
    service_account: str = "lfops-webui"
    cpu: str = "500m"
    memory: str = "1Gi"
    memory_limit: str = "2Gi"
    deadline_s: int = 900

    def checked(self) -> MonitorCronJob:
        if not _NAME.match(self.name):
            raise LfopsError(f"name: {self.name!r} is not a valid CronJob name (at most 52 characters)", field="name")
        fields = self.schedule.split()
        if len(fields) != 5 or not all(_SCHEDULE_FIELD.match(f) for f in fields):
            raise LfopsError(
                f"schedule: {self.schedule!r} must be five cron fields (e.g. '*/10 * * * *')", field="schedule"
            )
        if not self.image.strip():
            raise LfopsError("image: must be given", field="image")
        return self


def monitor_cronjob(spec: MonitorCronJob) -> dict[str, Any]:
    spec.checked()
    labels = {"app.kubernetes.io/name": "lfops", "app.kubernetes.io/component": "monitor"}
    container = {
        "name": "monitor",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["monitor", "check"],
        "envFrom": [{"configMapRef": {"name": spec.settings_configmap}}],
        "env": [
            {
                "name": "LFOPS_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": spec.database_secret, "key": "url"}},
            },
            {"name": "LFOPS_WORKSPACE", "value": "/workspace"},  # the mirror of the config repository, per run
            {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},  # noqa: S108 - the pod's own emptyDir
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory},
            "limits": {"memory": spec.memory_limit},
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": "/workspace"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir: the root filesystem is read-only
        ],
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": spec.service_account,
            "automountServiceAccountToken": False,  # the check reads the database and Git, never the API server
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "workspace", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "schedule": spec.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {"backoffLimit": 1, "activeDeadlineSeconds": spec.deadline_s, "template": pod},
            },
        },
    }
