"""What each launch target has: this machine as the local runner sees it (asked of torch), and each cluster profile
as its settings describe it (`gpus_per_node`, `gpu_model`, `gpu_memory_gib`, `gpu_compute_capability`).

A profile that does not say its GPUs' memory or compute capability is not refused for them: the check says what it
assumed and which setting would let it check.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache

from backend.settings import ClusterProfile

LOCAL = "local"


@dataclass(frozen=True)
class Target:
    name: str  # "local", or the cluster profile's name
    gpus_per_node: int
    nodes: int = 1
    gpu_model: str = ""
    gpu_memory_gib: float = 0.0  # per GPU; 0: not known
    compute_capability: str = ""  # e.g. "8.0"; "": not known
    host_memory_gib: float = 0.0  # this machine's memory (the local runner trains on the CPU without a GPU)
    installed: dict[str, bool] = field(default_factory=dict)  # packages found here (local only; a profile's image is
    # not inspected)

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def label(self) -> str:
        return "this machine (local runner)" if self.is_local else f"profile {self.name}"

    @property
    def world_size(self) -> int:
        return max(self.gpus_per_node, 1) * max(self.nodes, 1)

    @property
    def hardware(self) -> str:
        """What it has, in words: "no GPU", "8 x A100 (80 GiB, compute 8.0)", "1 GPU per node (memory not set)"."""
        if self.gpus_per_node <= 0:
            return f"no GPU, {self.host_memory_gib:.0f} GiB memory" if self.host_memory_gib else "no GPU"
        facts = [f"{self.gpu_memory_gib:.0f} GiB" if self.gpu_memory_gib else "memory not set"]
        if self.compute_capability:
            facts.append(f"compute {self.compute_capability}")
        gpus = f"{self.gpus_per_node} x {self.gpu_model or 'GPU'}"
        nodes = f" x {self.nodes} nodes" if self.nodes > 1 else ""
        return f"{gpus}{nodes} ({', '.join(facts)})"

    def capability_at_least(self, needed: str) -> bool | None:
        """Whether the GPUs' compute capability is `needed` or more; None when it is not known."""
        if not self.compute_capability:
            return None
        return _version(self.compute_capability) >= _version(needed)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@lru_cache(maxsize=1)
def local_target() -> Target:
    """This machine: its GPUs as torch sees them (first GPU's model, memory and capability), its memory, packages."""
    import psutil
    import torch

    installed = {name: importlib.util.find_spec(name) is not None for name in ("deepspeed", "bitsandbytes")}
    installed["flash_attn"] = importlib.util.find_spec("flash_attn") is not None
    host = psutil.virtual_memory().total / 1024**3
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return Target(LOCAL, 0, host_memory_gib=host, installed=installed)
    props = torch.cuda.get_device_properties(0)
    return Target(
        LOCAL,
        torch.cuda.device_count(),
        gpu_model=props.name,
        gpu_memory_gib=props.total_memory / 1024**3,
        compute_capability=f"{props.major}.{props.minor}",
        host_memory_gib=host,
        installed=installed,
    )


def profile_target(profile: ClusterProfile, gpus_per_node: int | None = None, nodes: int = 1) -> Target:
    """A cluster profile with the GPUs a launch asks for (none asked: the profile's own `gpus_per_node`)."""
    return Target(
        profile.name,
        gpus_per_node or profile.gpus_per_node,
        nodes,
        gpu_model=profile.gpu_model,
        gpu_memory_gib=float(profile.gpu_memory_gib),
        compute_capability=profile.gpu_compute_capability,
    )
