"""The reference prompts of a served model: the prompts of the dataset version it was trained on, read from the config
repository at the commit of its run's config (never from a working copy, never from the newest main).

model version -> run -> config (commit, path) -> the config at that commit -> dataset_dir/dataset_info.json -> the
dataset files at that commit -> their user prompts (alpaca: system, instruction and input; sharegpt/openai: the
system and user turns). The gateway's sampled prompts are made comparable by `comparable` (role markers removed).

A reference that cannot be read (no run, the commit gone from the repository, a dataset file missing, a Git LFS
pointer instead of the data, a hub dataset, a format not read here) is a `Reference` with `problem` set: the check
reports that state, it does not fail.
"""

from __future__ import annotations

import json
import posixpath
import random
import re
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from backend.errors import LfopsError
from backend.gitstore import GitStore
from backend.store.models import Config, ModelVersion, Run

MAX_REFERENCE_PROMPTS = 20_000  # a larger dataset is sampled (fixed seed: the same reference every check)
_ROLE_MARKER = re.compile(r"^(?:system|user|assistant|tool|developer|function): ", re.MULTILINE)
_USER_ROLES = {"human", "user", "system"}


@dataclass(frozen=True)
class Reference:
    prompts: list[str] = field(default_factory=list)
    commit: str = ""
    config_path: str = ""
    dataset_version: str = ""
    datasets: tuple[str, ...] = ()
    problem: str = ""  # why there are no prompts ("" when there are)

    @property
    def key(self) -> tuple[str, str]:
        return self.commit, self.config_path


def comparable(prompt: str) -> str:
    """A sampled prompt as the training prompts read: without the `role: ` markers the gateway writes."""
    return _ROLE_MARKER.sub("", prompt)


def source_of(s: Session, model_version_id: int) -> tuple[str, str, str]:
    """(commit, config path, dataset version) a model version was trained from; LfopsError when it has no run."""
    mv = s.get(ModelVersion, model_version_id)
    while mv is not None and mv.run_id is None and mv.parent_id is not None:  # an export: its parent's run
        mv = s.get(ModelVersion, mv.parent_id)
    run = s.get(Run, mv.run_id) if mv is not None and mv.run_id is not None else None
    if run is None:
        raise LfopsError("the model version comes from no run, so there is no training dataset to compare with")
    config = s.get(Config, run.config_id)
    return config.commit, config.path, config.dataset_version


def load(repo: GitStore, commit: str, config_path: str, dataset_version: str = "") -> Reference:
    from backend.config import TrainConfig

    base = Reference(commit=commit, config_path=config_path, dataset_version=dataset_version)
    try:
        if not repo.has_commit(commit):
            repo.fetch()
        if not repo.has_commit(commit):
            return _missing(base, f"commit {commit[:12]} is no longer in the config repository")
        raw = repo.read(commit, config_path)
        if raw is None:
            return _missing(base, f"{config_path} is not in commit {commit[:12]}")
        config = TrainConfig.parse(raw.decode("utf-8", "replace"), config_path)
        ddir = config.dataset_dir()
        if ddir == "ONLINE" or ddir.startswith("REMOTE:"):
            return _missing(base, f"the datasets come from a hub ({ddir}), not from the config repository")
        info_path = posixpath.join(posixpath.normpath(ddir), "dataset_info.json")
        info_raw = repo.read(commit, info_path)
        if info_raw is None:
            return _missing(base, f"{info_path} is missing at commit {commit[:12]}")
        info = json.loads(info_raw)
        prompts: list[str] = []
        names = tuple(config.dataset_names())
        for name in names:
            entry = info.get(name) if isinstance(info, dict) else None
            if not isinstance(entry, dict) or not entry.get("file_name"):
                return _missing(base, f"dataset {name!r} has no file in {info_path} at commit {commit[:12]}")
            path = posixpath.normpath(posixpath.join(posixpath.normpath(ddir), entry["file_name"]))
            files = [path] if repo.read(commit, path) is not None else repo.files(commit).list_files(path)
            if not files:
                return _missing(base, f"dataset {name!r}: {path} is gone at commit {commit[:12]}")
            for file in files:
                data = repo.read(commit, file) or b""
                if data.startswith(b"version https://git-lfs"):
                    return _missing(base, f"dataset {name!r}: {file} is a Git LFS pointer, its data is not here")
                prompts += _prompts(file, data, entry)
    except (LfopsError, ValueError, UnicodeDecodeError) as exc:
        return _missing(base, f"the training data could not be read: {str(exc).splitlines()[0][:300]}")
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        return _missing(base, "the training datasets hold no prompts")
    if len(prompts) > MAX_REFERENCE_PROMPTS:
        prompts = random.Random(0).sample(prompts, MAX_REFERENCE_PROMPTS)
    return Reference(prompts, commit, config_path, dataset_version, names)


def _missing(base: Reference, problem: str) -> Reference:
    return Reference([], base.commit, base.config_path, base.dataset_version, base.datasets, problem)


def _records(file: str, data: bytes) -> list:
    text = data.decode("utf-8")
    if file.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if file.endswith(".json"):
        doc = json.loads(text)
        return doc if isinstance(doc, list) else []
    raise ValueError(f"{file}: only .json and .jsonl datasets are read for drift checks")


def _prompts(file: str, data: bytes, entry: dict) -> list[str]:
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    sharegpt = entry.get("formatting") == "sharegpt"
    out = []
    for record in _records(file, data):
        if not isinstance(record, dict):
            continue
        if sharegpt:
            turns = record.get(columns.get("messages", "conversations")) or []
            role_key, text_key = tags.get("role_tag", "from"), tags.get("content_tag", "value")
            user_roles = _USER_ROLES | {tags.get("user_tag", "human"), tags.get("system_tag", "system")}
            parts = [
                str(t.get(text_key, ""))
                for t in turns
                if isinstance(t, dict) and t.get(role_key) in user_roles and t.get(text_key)
            ]
            if columns.get("system") and record.get(columns["system"]):
                parts.insert(0, str(record[columns["system"]]))
        else:
            keys = (
                columns.get("system", "system"),
                columns.get("prompt", "instruction"),
                columns.get("query", "input"),
            )
            parts = [str(record[k]) for k in keys if isinstance(record.get(k), str) and record[k]]
        out.append("\n".join(parts))
    return out
