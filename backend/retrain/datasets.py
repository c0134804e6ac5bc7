"""The dataset trigger: a deployed model whose training data has a new version on main.

For every running deployment, the served version's run names the commit and config it was trained on; the config's
datasets are versioned again against main's files (backend.config.check_datasets, the same rule a save uses). A
different version is a signal, with a summary of what changed: files added, removed or changed, and rows added and
removed (JSON lists, JSON lines and CSV files, compared as multisets of records). Datasets whose files are gone on
main give a problem, not a signal: nothing is proposed from data that is not there.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.config import Files, TrainConfig
from backend.gitstore import GitStore
from backend.retrain.signals import RetrainSignal
from backend.store.models import Config, Deployment, ModelVersion, Run

ROWS_MAX_BYTES = 64 * 1024 * 1024  # bigger files are compared by their hash only (changed or not)
_STOPPED = "stopped"


@dataclass(frozen=True)
class DeployedModel:
    """A running deployment and what its version was trained on."""

    deployment: str
    model_version_id: int
    model_ref: str
    model_name: str
    config_path: str
    commit: str
    dataset_version: str


@dataclass(frozen=True)
class FileChange:
    dataset: str
    path: str
    change: str  # added | removed | changed
    rows_added: int | None = None  # None: not a format whose rows are counted
    rows_removed: int | None = None
    rows_now: int | None = None


@dataclass
class DatasetCheck:
    """What one pass of the trigger found: signals to hand to the service, problems to show."""

    signals: list[RetrainSignal] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checked: int = 0  # deployments looked at


def deployed_models(s: Session) -> list[DeployedModel]:
    """Running deployments whose version was trained by a run here (with its config row)."""
    rows = s.execute(
        select(
            Deployment.name,
            ModelVersion.id,
            ModelVersion.name,
            ModelVersion.version,
            Config.path,
            Config.commit,
            Config.dataset_version,
        )
        .join(ModelVersion, Deployment.model_version_id == ModelVersion.id)
        .join(Run, ModelVersion.run_id == Run.id)
        .join(Config, Run.config_id == Config.id)
        .where(Deployment.status != _STOPPED)
        .order_by(Deployment.name)
    )
    return [
        DeployedModel(name, mv_id, f"{mv_name}:v{version}", mv_name, path, commit, dataset_version)
        for name, mv_id, mv_name, version, path, commit, dataset_version in rows
    ]


def check(repo: GitStore, deployed: list[DeployedModel], now: datetime | None = None) -> DatasetCheck:
    """Signals for the deployed models whose datasets have another version on main than they were trained on."""
    result = DatasetCheck()
    if not deployed:
        return result  # nothing served: not even a look at origin (this runs after every merge)
    main = repo.sync_main()
    main_files = repo.files(main)
    versioned: dict[tuple[str, str], tuple[TrainConfig, list, str] | None] = {}  # deployments share configs
    on_main: dict[tuple[str, tuple[str, ...]], tuple[list, str]] = {}  # configs share datasets
    for model in deployed:
        result.checked += 1
        key = (model.commit, model.config_path)
        if key not in versioned:
            config = _trained_config(repo, model.commit, model.config_path)
            if config is not None:
                data = (config.dataset_dir(), tuple(config.dataset_names()))  # all the dataset version depends on
                if data not in on_main:
                    on_main[data] = config.check_datasets(main_files)
            versioned[key] = None if config is None else (config, *on_main[data])
        if versioned[key] is None:
            result.problems.append(
                f"{model.deployment}: {model.config_path} is not readable at the training commit {model.commit[:12]}"
            )
            continue
        config, problems, version = versioned[key]
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            result.problems.append(f"{model.deployment}: on {repo.main}, {errors[0]}")
            continue
        if not version or version == model.dataset_version or _from_hub(config):
            continue  # hub datasets are unpinned: a new version cannot be seen in the repository
        changes = diff(config, repo.files(model.commit), main_files)
        result.signals.append(
            RetrainSignal(
                kind="dataset",
                deployment=model.deployment,
                model_version_id=model.model_version_id,
                fingerprint=f"dataset:{model.config_path}:{version}",
                summary_markdown=summary(model, version, main, changes),
                evidence_ref=f"dataset-version:{version}",
                observed_at=now or datetime.now(UTC),
            )
        )
    return result


# (commit, path) -> the config as trained: a commit never changes, so each is read and parsed once per process (YAML
# parsing is most of a pass's time). Bounded: cleared when it grows past this many.
_TRAINED: dict[tuple[str, str], TrainConfig] = {}
_TRAINED_MAX = 4096


def _trained_config(repo: GitStore, commit: str, path: str) -> TrainConfig | None:
    """The config a version was trained with (read only here, never changed), None when it is not readable."""
    config = _TRAINED.get((commit, path))
    if config is None:
        raw = repo.read(commit, path) if repo.has_commit(commit) else None
        if raw is None:
            return None
        if len(_TRAINED) >= _TRAINED_MAX:
            _TRAINED.clear()
        config = _TRAINED[(commit, path)] = TrainConfig.parse(raw, path)
    return config


def _from_hub(config: TrainConfig) -> bool:
    """Whether the config's datasets come from a hub (their version cannot change in the repository)."""
    ddir = config.dataset_dir()
    return ddir == "ONLINE" or ddir.startswith("REMOTE:")


def dataset_files(config: TrainConfig, files: Files) -> dict[str, dict[str, str]]:
    """Dataset name -> {file path: sha256} as `files` has them (the files check_datasets versions)."""
    ddir = posixpath.normpath(config.dataset_dir())
    raw = files.read(posixpath.join(ddir, "dataset_info.json"))
    try:
        info = json.loads(raw) if raw is not None else {}
    except (ValueError, RecursionError):
        info = {}
    found: dict[str, dict[str, str]] = {}
    for name in config.dataset_names():
        entry = info.get(name) if isinstance(info, dict) else None
        file_name = (entry.get("file_name") or entry.get("cloud_file_name")) if isinstance(entry, dict) else None
        if not isinstance(file_name, str) or not file_name or file_name.startswith("/"):
            found[name] = {}
            continue
        path = posixpath.normpath(posixpath.join(ddir, file_name))
        digest = files.digest(path)
        listed = {path: digest} if digest else {p: files.digest(p) for p in files.list_files(path)}
        found[name] = {p: d for p, d in listed.items() if d}
    return found


def diff(config: TrainConfig, old: Files, new: Files) -> list[FileChange]:
    """Per dataset file: added, removed or changed, with rows added and removed where the format allows."""
    before, after = dataset_files(config, old), dataset_files(config, new)
    changes = []
    for name in config.dataset_names():
        was, now = before.get(name, {}), after.get(name, {})
        for path in sorted(set(was) | set(now)):
            if was.get(path) == now.get(path):
                continue
            old_rows = _rows(old, path) if path in was else Counter()
            new_rows = _rows(new, path) if path in now else Counter()
            change = "added" if path not in was else "removed" if path not in now else "changed"
            if old_rows is None or new_rows is None:
                changes.append(FileChange(name, path, change))
                continue
            changes.append(
                FileChange(
                    name,
                    path,
                    change,
                    rows_added=sum((new_rows - old_rows).values()),
                    rows_removed=sum((old_rows - new_rows).values()),
                    rows_now=sum(new_rows.values()),
                )
            )
    return changes


def _rows(files: Files, path: str) -> Counter[str] | None:
    """The records of a dataset file as a multiset of canonical texts; None for formats not counted or too big."""
    data = files.read(path)
    if data is None or len(data) > ROWS_MAX_BYTES:
        return None
    try:
        text = data.decode("utf-8")
        if path.endswith(".json"):
            records = json.loads(text)
            if not isinstance(records, list):
                return None
            return Counter(json.dumps(r, sort_keys=True) for r in records)
        if path.endswith(".jsonl"):
            return Counter(json.dumps(json.loads(line), sort_keys=True) for line in text.splitlines() if line.strip())
        if path.endswith(".csv"):
            return Counter("\x1f".join(row) for row in list(csv.reader(io.StringIO(text)))[1:])
    except (UnicodeDecodeError, ValueError, RecursionError, csv.Error):
        return None
    return None


def summary(model: DeployedModel, version: str, main: str, changes: list[FileChange]) -> str:
    """The evidence as Markdown (it goes into a commit message: no line is shaped like an lfops trailer)."""
    names = sorted({c.dataset for c in changes}) or ["(dataset_info.json)"]
    lines = [
        f"Dataset {', '.join(names)} changed on main for {model.config_path} "
        f"(served as {model.model_ref} by deployment {model.deployment}).",
        "",
        f"- trained on dataset version {model.dataset_version} at commit {model.commit[:12]}",
        f"- main {main[:12]} has dataset version {version}",
        "",
    ]
    if changes:
        lines += ["| dataset | file | change | rows added | rows removed | rows now |", "|---|---|---|---:|---:|---:|"]
        for c in changes:
            counts = [("-" if n is None else str(n)) for n in (c.rows_added, c.rows_removed, c.rows_now)]
            lines.append(f"| {c.dataset} | {c.path} | {c.change} | {' | '.join(counts)} |")
    else:
        lines.append("The dataset files are the same; dataset_info.json changed how they are read.")
    return "\n".join(lines)


def describe(changes: list[FileChange]) -> str:
    """One line: '2 files changed, +8 rows, -0 rows'."""
    if not changes:
        return "no file changed"
    added = sum(c.rows_added or 0 for c in changes)
    removed = sum(c.rows_removed or 0 for c in changes)
    return f"{len(changes)} file(s) changed, +{added} rows, -{removed} rows"
