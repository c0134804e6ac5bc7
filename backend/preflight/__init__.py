"""Launch preflight: what a config needs (precision, kernels, quantisation, DeepSpeed, GPUs, estimated memory per
device) against what each launch target has, before anyone waits for a run that cannot work.

needs        what a config asks of the machine that trains it
model_shape  the model's size and widths (its config.json, or its name and a table of published architectures)
memory       the per-device memory estimate (docs/preflight.md: how it is computed and how close it is)
targets      this machine (asked of torch) and the cluster profiles (as their settings describe them)
check        the verdict per target, with reasons and fixes

`Preflight` is what the app uses: at Save a note, in Review the targets that can run a config, at Launch a refusal
(backend.runs.policy). The config is never changed to fit.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.config import Files, TrainConfig
from backend.errors import LfopsError
from backend.preflight.check import Finding, Report, Verdict, check, preflight
from backend.preflight.memory import MemoryEstimate, estimate
from backend.preflight.model_shape import ModelShape, shape_of
from backend.preflight.needs import Needs, needs_of
from backend.preflight.targets import LOCAL, Target, local_target, profile_target
from backend.settings import Settings

__all__ = [
    "LOCAL",
    "Finding",
    "MemoryEstimate",
    "ModelShape",
    "Needs",
    "Preflight",
    "Report",
    "Target",
    "Verdict",
    "check",
    "estimate",
    "needs_of",
    "preflight",
    "shape_of",
]


class Preflight:
    """The preflight over one app's targets: this machine when the local runner is the default, and every profile."""

    def __init__(self, settings: Settings | Callable[[], Settings]) -> None:
        self._settings = settings  # a function: the workspace's settings of the moment (tests swap them)

    @property
    def settings(self) -> Settings:
        return self._settings() if callable(self._settings) else self._settings

    def targets(self, profile: str | None = None) -> list[Target]:
        """Every target (or only `profile`), each with its own GPUs per node and one node."""
        profiles = self.settings.cluster_profiles
        if profile is not None:
            if profile == LOCAL:
                return [local_target()]
            return [profile_target(profiles[profile])] if profile in profiles else []
        local = [local_target()] if self.settings.runner == "local" else []
        return local + [profile_target(p) for _, p in sorted(profiles.items())]

    def check_profile(self, profile: str | None, named: str = "profile") -> None:
        """Refuse a profile that is no launch target, under the name the user typed it as (`--profile` on the
        CLI); None means every target."""
        known = [LOCAL, *sorted(self.settings.cluster_profiles)]
        if profile is not None and profile not in known:
            raise LfopsError(f"{named}: {profile!r} is not a launch target; known: {', '.join(known)}", field="profile")

    def report(self, config: TrainConfig, files: Files | None = None, profile: str | None = None) -> Report:
        """The verdict of every target (or of `profile` alone, "local" for this machine) for `config`; a profile
        that is no launch target is an error naming `profile`."""
        self.check_profile(profile)
        needs = needs_of(config, files)
        return preflight(needs, shape_of(needs.model), self.targets(profile))

    def launch_verdict(
        self, config: TrainConfig, files: Files | None, profile: str, gpus_per_node: int, nodes: int
    ) -> Verdict | None:
        """The verdict for one launch (no profile: this machine), with the other targets named in the fixes; None
        when the target is not one this preflight knows (the runner says what is wrong with it)."""
        profiles = self.settings.cluster_profiles
        if profile:
            if profile not in profiles:
                return None
            target = profile_target(profiles[profile], gpus_per_node, nodes)
        elif self.settings.runner == "local":
            target = local_target()
        else:
            return None
        needs = needs_of(config, files)
        others = [t for t in self.targets() if t.name != target.name]
        report = preflight(needs, shape_of(needs.model), [target, *others])
        return report.verdicts[0]

    def notes(self, config: TrainConfig, files: Files | None = None) -> list[str]:
        """What a save says: the targets that cannot run the config as it is, and where it runs (lines of text)."""
        report = self.report(config, files)
        if not report.verdicts:
            return []
        lines = [f"preflight: {v.line()}" for v in report.verdicts]
        runnable = report.runnable_on
        lines.append(
            "preflight: runs on " + ", ".join(runnable)
            if runnable
            else "preflight: no launch target can run it as it is"
        )
        return lines + [f"preflight: {n}" for n in report.notes]
