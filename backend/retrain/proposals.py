"""What a retrain change request proposes, and the description that carries its evidence.

The proposal is the served version's config exactly as it was trained (its commit's file: the same hyperparameters,
even if main's copy moved on since; the diff against main shows any difference to the reviewer), with the dataset
version main has now written into its `lfops:` block (`dataset_version`) beside the evidence it answers (`retrain`).
Those two metadata keys are what makes the proposal a change when only data files changed, and they record in Git
which data the reviewers approved. The config keeps its path, so the model keeps its name and the retrain registers
as its next version (`example:v1` -> `example:v2`); `output_dir` is the runner's to set per run, so nothing else
needs renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend import provenance
from backend.config import TrainConfig
from backend.errors import LfopsError
from backend.gitstore import GitStore
from backend.retrain.signals import SUMMARY_MAX, RetrainSignal

DATASET_VERSION_KEY = "dataset_version"  # lfops.dataset_version: the data the retrain was proposed (and approved) for
RETRAIN_KEY = "retrain"  # lfops.retrain: the evidence the proposal answers (a drift report, a dataset version)
LAUNCH_ON_MERGE_KEY = "launch_on_merge"  # lfops.launch_on_merge: start a run when a reviewer merges (service.py)


@dataclass(frozen=True)
class Proposal:
    config: TrainConfig
    name: str  # the save's name: configs/<name>.yaml
    dataset_version: str  # on main, now


def propose(repo: GitStore, main: str, commit: str, config_path: str, signal: RetrainSignal) -> Proposal:
    """The proposed config; LfopsError (one line, naming the field) when there is nothing sound to propose."""
    raw = repo.read(commit, config_path) if repo.has_commit(commit) else None
    if raw is None:
        raise LfopsError(f"config: {config_path} is not readable at its training commit {commit[:12]}", field="config")
    config = TrainConfig.parse(raw, config_path)
    problems, version = config.check_datasets(repo.files(main))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise LfopsError(f"dataset: on {repo.main}, {errors[0].reason}", field="dataset")
    config.metadata[DATASET_VERSION_KEY] = version
    config.metadata[RETRAIN_KEY] = signal.evidence_ref
    name = config_path.removeprefix("configs/").removesuffix(".yaml")
    return Proposal(config, name, version)


def launches_on_merge(config: TrainConfig) -> bool:
    return config.metadata.get(LAUNCH_ON_MERGE_KEY) is True


def description(
    signal: RetrainSignal, model_ref: str, config_path: str, commit: str, trained_on: str, proposal: Proposal
) -> str:
    """The change request's title and description (its commit message): why, what is proposed, the evidence."""
    why = (
        f"{model_ref} drifted on deployment {signal.deployment or '-'}"
        if signal.kind == "drift"
        else f"the dataset of {model_ref} changed on main"
    )
    title = f"Retrain {model_ref.split(':')[0]} because {why} ({signal.evidence_ref})"[:200]
    then = "a reviewer merges it" + (
        " (lfops.launch_on_merge is on: the merge starts the run)" if launches_on_merge(proposal.config) else ""
    )
    lines = [
        title,
        "",
        f"Proposed by the retrain bot. Nothing trains until {then}.",
        "",
        f"- signal {signal.kind} {signal.evidence_ref}, observed {signal.observed_at:%Y-%m-%d %H:%M} UTC",
        f"- deployment {signal.deployment or '(none named)'} serving {model_ref}",
        f"- trained from {config_path} at commit {commit[:12]} on dataset version {trained_on}",
        f"- proposed the same hyperparameters with dataset version {proposal.dataset_version}",
        "",
        "Edit the config on this branch if the retrain needs more than new data.",
        "",
        "## Evidence",
        "",
        quoted(signal.summary_markdown),
    ]
    return "\n".join(lines)


def quoted(text: str) -> str:
    """Evidence as given, capped, with every line that Git could read as an lfops trailer defused (such lines are
    lfops' own: backend.provenance refuses them in user text)."""
    text = (text or "").strip()
    if len(text) > SUMMARY_MAX:
        text = text[:SUMMARY_MAX] + "\n\n(evidence cut here)"
    out = []
    for line in text.replace("\r", "").split("\n"):
        try:
            provenance.check_user_text(line, "evidence")
            out.append(line)
        except LfopsError:
            out.append("evidence: " + line)  # now the first colon ends the word "evidence", not a trailer key
    return "\n".join(out) or "(no evidence text)"
