"""Deployment names: one rule for local state directories, metric labels and Kubernetes object names."""

from __future__ import annotations

import re

from backend.errors import LfopsError

# A DNS-1035 label (what a Kubernetes Service name must be), kept short enough for the "lfops-serve-" prefix.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,45}[a-z0-9])?$")


def check_deployment_name(name: str) -> str:
    """The name itself when valid, else an error naming the field."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LfopsError(
            f"name: {name!r} must be 1-47 lower-case letters, digits or '-', starting with a letter", field="name"
        )
    return name


def default_deployment_name(model_name: str) -> str:
    """`sft-demo` from a registry model name such as `SFT_demo.v2` (lower-cased, other characters to '-')."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"m-{cleaned}".strip("-")
    return cleaned[:47].rstrip("-")
