"""The `kubernetes` client package, imported on first use; no other lfops module imports `kubernetes` itself.

`import kubernetes` loads every API group's models (about a second): `lfops --help`, `import backend.runs` and the
WebUI's start must not pay for it. The attributes below are modules that load the real one when first touched:

    from backend.adaptors import kubernetes as k8s
    k8s.client.BatchV1Api(api_client)      # imports kubernetes.client here, not at lfops' import time
"""

from __future__ import annotations

import importlib
from decimal import Decimal
from types import ModuleType
from typing import Any


class LazyModule:
    """A module imported when one of its attributes is first read (importlib makes that thread-safe)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.load(), attr)


client = LazyModule("kubernetes.client")
config = LazyModule("kubernetes.config")
watch = LazyModule("kubernetes.watch")
utils = LazyModule("kubernetes.utils")


def api_exception() -> type[Exception]:
    """`kubernetes.client.exceptions.ApiException`, for `except` clauses (they need the class itself)."""
    return client.ApiException


def config_exception() -> type[Exception]:
    """`kubernetes.config.ConfigException`: a kubeconfig that cannot be loaded."""
    return config.ConfigException


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity (`8`, `500m`, `64Gi`) as a number; ValueError when it is not one."""
    return utils.parse_quantity(value)
