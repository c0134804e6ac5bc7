"""Training configs: LLaMA-Factory train arguments plus an `lfops:` metadata block LLaMA-Factory never sees.

`TrainConfig.parse` reads a config file, `validate` checks it the way LLaMA-Factory would (independently of this host),
`canonical_yaml` writes it in a stable form, and `config_hash` / `dataset_version` / `base_model_revision` identify
what a run trains with.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import posixpath
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from backend import secret_scan, yamlio
from backend.errors import Problem, ValidationFailed
from backend.llamafactory_checks import run_train_checks
from backend.secret_args import is_secret_arg
from backend.value_rules import check_values

METADATA_KEY = "lfops"
SECTIONS = {
    "ModelArguments": "model",
    "FinetuningArguments": "method",
    "DataArguments": "dataset",
    "TrainingArguments": "train",
    "GeneratingArguments": "generation",
}
SECTION_ORDER = ["model", "method", "dataset", "train", "generation"]
_LIST_AS_CSV = ("dataset", "eval_dataset")
_REMOTE = "REMOTE:"  # dataset_dir of a hub dataset repository holding dataset_info.json (LLaMA-Factory >= 0.9.4)
_SMALL_FILE = 256 * 1024 * 1024
# Why a file is refused; save (Git trees) and `lfops validate` (a checkout) say the same.
REGULAR_FILES_ONLY = "dataset files and DeepSpeed configs must be regular files inside the repository"
# Within a section these come first, as in LLaMA-Factory's examples; the rest follow the dataclasses' order.
_LEADING = ["model_name_or_path", "stage", "do_train", "finetuning_type", "dataset", "template", "output_dir"]


# --------------------------------------------------------------------------------------------------------------------
# Where files are read from: a directory on disk, or a Git tree (see gitstore.TreeFiles).


class Files(Protocol):
    def read(self, path: str) -> bytes | None: ...

    def digest(self, path: str) -> str | None:
        """sha256 of a file's contents, None if it is not a file."""
        ...

    def list_files(self, path: str) -> list[str]:
        """Files under `path` if it is a directory (sorted, repository-relative), else []; symbolic links are listed
        too, so that they can be refused."""
        ...

    def is_link(self, path: str) -> bool:
        """Whether `path`, or a folder on the way to it, is a symbolic link."""
        ...


class DirFiles:
    """Files of a checked-out config repository (what `lfops validate` sees in CI)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, path: str) -> Path | None:
        p = (self.root / path).resolve()
        return p if p == self.root or self.root in p.parents else None

    def read(self, path: str) -> bytes | None:
        p = self._path(path)
        return p.read_bytes() if p is not None and p.is_file() else None

    def digest(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def list_files(self, path: str) -> list[str]:
        p = self._path(path)
        if p is None or not p.is_dir():
            return []
        found = []
        for folder, dirs, names in os.walk(p):  # links are not followed, but listed (a link to a folder too)
            base = Path(folder)
            found += [base / d for d in dirs if (base / d).is_symlink()]
            found += [base / n for n in names if (base / n).is_symlink() or (base / n).is_file()]
        return sorted(str(f.relative_to(self.root)) for f in found)

    def is_link(self, path: str) -> bool:
        current = self.root
        for part in Path(path).parts:
            current = current / part
            if current.is_symlink():
                return True
            if not current.exists():
                return False
        return False


# --------------------------------------------------------------------------------------------------------------------
# LLaMA-Factory's argument schema, read from its own dataclasses.


@dataclass(frozen=True)
class ArgSpec:
    name: str
    section: str
    type: Any
    default: Any


@lru_cache(maxsize=1)
def schema() -> dict[str, ArgSpec]:
    """Every key `llamafactory-cli train` accepts, in LLaMA-Factory's own order (imports llamafactory: slow once)."""
    from llamafactory.hparams.parser import _TRAIN_ARGS

    specs: dict[str, ArgSpec] = {}
    for dc in _TRAIN_ARGS:
        section = next(v for k, v in SECTIONS.items() if any(b.__name__ == k for b in dc.__mro__))
        hints = typing.get_type_hints(dc)
        for f in dataclasses.fields(dc):
            if not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            specs[f.name] = ArgSpec(f.name, section, hints.get(f.name, f.type), default)
    return specs


@lru_cache(maxsize=1)
def known_templates() -> frozenset[str]:
    from llamafactory.data.template import TEMPLATES

    return frozenset(TEMPLATES)


def _type_error(value: Any, tp: Any) -> str | None:
    """None when `value` fits the annotation `tp`, else the reason."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        reasons = [_type_error(value, o) for o in options if o is not type(None)]
        if any(r is None for r in reasons):
            return None
        literal = [r for r in reasons if r and r.startswith("must be one of")]
        return (
            literal[0] if literal else "must be " + " or ".join(_type_name(o) for o in options if o is not type(None))
        )
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"
    if value is None:
        return f"must be {_type_name(tp)}, not null"
    if tp is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if tp is str:
        return None if isinstance(value, str) else "must be a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        return None if value in values else f"must be one of {', '.join(map(str, values))}"
    if origin in (list, typing.List):  # noqa: UP006
        return None if isinstance(value, list) else "must be a list"
    if origin in (dict, typing.Dict) or tp is dict:  # noqa: UP006
        return None if isinstance(value, dict) else "must be a mapping"
    return None  # exotic annotation (torch.dtype, GenerationConfig...): LLaMA-Factory's parser decides


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class TrainConfig:
    """A training config: `args` go to LLaMA-Factory, `metadata` stays with lfops."""

    args: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes | str, source: str = "config") -> TrainConfig:
        doc = yamlio.load_mapping(data, source)
        metadata = doc.pop(METADATA_KEY, None) or {}
        if not isinstance(metadata, dict):
            raise ValidationFailed([Problem(METADATA_KEY, "must be a mapping")], source)
        return cls(args=doc, metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.parse(Path(path).read_bytes(), str(path))

    # ---- checks ----------------------------------------------------------------------------------------------

    def check_args(self, files: Files | None = None) -> list[Problem]:
        """Keys, types and always-wrong values (backend.value_rules), then LLaMA-Factory's own checks on a host-neutral
        copy (backend.llamafactory_checks); `files` lets the config's DeepSpeed file say whether it uses ZeRO-3."""
        specs = schema()
        problems = []
        for key, value in self.args.items():
            spec = specs.get(key)
            if spec is None:
                problems.append(Problem(key, "not a LLaMA-Factory training argument"))
                continue
            if is_secret_arg(key):
                problems.append(Problem(key, "secrets never go into a config; give the run an environment variable"))
                continue
            if key in _LIST_AS_CSV and isinstance(value, list) and all(isinstance(v, str) for v in value):
                continue
            reason = _type_error(value, spec.type)
            if reason:
                problems.append(Problem(key, f"{reason} (got {value!r})"))
        template = self.args.get("template")
        if isinstance(template, str) and template not in known_templates():
            problems.append(Problem("template", f"unknown template {template!r}"))
        problems += [Problem(key, "is required") for key in self.required_keys() if key not in self.args]
        problems += check_values(self.args)
        if not any(self.args.get(key) for key in ("do_train", "do_eval", "do_predict")):
            nothing = "none of do_train, do_eval, do_predict is true: nothing would run"
            problems.append(Problem("do_train", nothing, "warning"))
        if any(p.severity == "error" for p in problems):
            return problems
        return problems + run_train_checks(self.args, frozenset(specs), zero3=self.deepspeed_zero_stage(files) == 3)

    def required_keys(self) -> list[str]:
        """What LLaMA-Factory needs, plus what lfops wants written out rather than left to LLaMA-Factory's defaults:
        the stage and method (a default could change with LLaMA-Factory's version), and the chat template for every
        stage but pre-training (without it LLaMA-Factory falls back to the tokenizer's own chat template, which the
        config repository does not pin). `dataset` is LLaMA-Factory's to require: training needs it, prediction takes
        `eval_dataset` instead."""
        keys = ["model_name_or_path", "stage", "finetuning_type"]
        return keys if self.args.get("stage") == "pt" else [*keys, "template"]

    def deepspeed_zero_stage(self, files: Files | None) -> int | None:
        """The ZeRO stage of the config's DeepSpeed config (a mapping, or a file in the repository), None if unknown."""
        deepspeed = self.args.get("deepspeed")
        if isinstance(deepspeed, str) and files is not None:
            path = _inside_repository(deepspeed)
            raw = files.read(path) if path is not None and not files.is_link(path) else None
            try:
                deepspeed = json.loads(raw) if raw is not None else None
            except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
                deepspeed = None
        zero = deepspeed.get("zero_optimization") if isinstance(deepspeed, dict) else None
        stage = zero.get("stage") if isinstance(zero, dict) else None
        return stage if isinstance(stage, int) and not isinstance(stage, bool) else None

    def check_deepspeed(self, files: Files) -> list[Problem]:
        """A DeepSpeed config given as a path is a regular file inside the repository: the run reads it from its
        checkout of the commit, so a path outside it (absolute, `../`) or a link would read something unreviewed."""
        deepspeed = self.args.get("deepspeed")
        if not isinstance(deepspeed, str) or not deepspeed:
            return []
        path = _inside_repository(deepspeed)
        if path is None:
            return [Problem("deepspeed", f"must be a path inside the config repository, got {deepspeed!r}")]
        if files.is_link(path):
            return [Problem("deepspeed", f"{path} is a symbolic link; {REGULAR_FILES_ONLY}")]
        if files.read(path) is None:
            return [Problem("deepspeed", f"{path} is not a file in the config repository", "warning")]
        return []

    def check_metadata(self) -> list[Problem]:
        problems = []
        for key, value in self.metadata.items():
            if (
                not isinstance(value, (str, int, float, bool, list))
                or isinstance(value, list)
                and not all(isinstance(v, (str, int, float, bool)) for v in value)
            ):
                problems.append(Problem(f"{METADATA_KEY}.{key}", "must be a scalar or a list of scalars"))
        return problems + check_values(self.metadata, prefix=f"{METADATA_KEY}.")

    def dataset_dir(self) -> str:
        return str(self.args.get("dataset_dir") or "data")

    def dataset_names(self) -> list[str]:
        names: list[str] = []
        for key in _LIST_AS_CSV:
            value = self.args.get(key)
            if isinstance(value, list):
                names += [str(v).strip() for v in value]
            elif isinstance(value, str):
                names += [v.strip() for v in value.split(",") if v.strip()]
        return names

    def check_datasets(self, files: Files) -> tuple[list[Problem], str]:
        """Every dataset is defined in dataset_info.json and present; returns the problems and the dataset version."""
        problems: list[Problem] = []
        ddir = self.dataset_dir()
        if ddir == "ONLINE":
            parts = [f"hub:{n}@unpinned" for n in self.dataset_names()]
            problems.append(Problem("dataset", "hub datasets are not pinned to a revision", "warning"))
            return problems, _version_hash(parts)
        if ddir.startswith(_REMOTE):  # LLaMA-Factory reads dataset_info.json from a hub dataset repository
            hub_repo = ddir[len(_REMOTE) :].strip()
            if not hub_repo:
                return [Problem("dataset_dir", f"{_REMOTE} must be followed by a hub dataset repository")], ""
            parts = [f"remote:{hub_repo}:{n}@unpinned" for n in self.dataset_names()]
            reason = f"dataset_info.json and the datasets come from the hub repository {hub_repo!r}, not pinned"
            problems.append(Problem("dataset_dir", reason, "warning"))
            return problems, _version_hash(parts)
        norm = posixpath.normpath(ddir)
        if ddir.startswith("/") or norm.startswith(".."):
            return [Problem("dataset_dir", f"must be a path inside the repository, got {ddir!r}")], ""
        info_path = posixpath.join(norm, "dataset_info.json")
        if files.is_link(info_path):
            return [Problem("dataset_dir", f"{info_path} is a symbolic link; {REGULAR_FILES_ONLY}")], ""
        raw = files.read(info_path)
        if raw is None:
            return [Problem("dataset_dir", f"{info_path} does not exist")], ""
        try:
            info = json.loads(raw)
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return [Problem("dataset_dir", f"{info_path} is not valid JSON: {exc}")], ""
        except RecursionError:
            return [Problem("dataset_dir", f"{info_path} is not valid JSON: nested too deeply")], ""
        parts = []
        for name in self.dataset_names():
            entry = info.get(name)
            if not isinstance(entry, dict):
                problems.append(Problem("dataset", f"{name!r} is not defined in {info_path}"))
                continue
            hub = next((k for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if k in entry), None)
            if hub:
                parts.append(f"{name}:{hub}:{entry[hub]}@unpinned")
                problems.append(Problem("dataset", f"{name!r} comes from a hub and is not pinned", "warning"))
                continue
            file_name = entry.get("file_name") or entry.get("cloud_file_name")
            if not isinstance(file_name, str) or not file_name:
                problems.append(Problem("dataset", f"{name!r} in {info_path} has no file_name"))
                continue
            path = posixpath.normpath(posixpath.join(norm, file_name))
            if path.startswith("..") or file_name.startswith("/"):
                problems.append(Problem("dataset", f"{name!r} points outside the repository: {file_name!r}"))
                continue
            links = [path] if files.is_link(path) else [p for p in files.list_files(path) if files.is_link(p)]
            if links:
                problems.append(Problem("dataset", f"{name!r}: {links[0]} is a symbolic link; {REGULAR_FILES_ONLY}"))
                continue
            digest = files.digest(path)
            digests = {path: digest} if digest else {p: files.digest(p) for p in files.list_files(path)}
            if not digests:
                problems.append(Problem("dataset", f"{name!r}: file {path} does not exist"))
                continue
            parts += [f"{name}:{p}:{d}" for p, d in digests.items()]
        failed = any(p.severity == "error" for p in problems)
        return problems, "" if failed else _version_hash(sorted(parts))

    def validate(self, files: Files) -> tuple[ValidationReport, str]:
        # Credentials first, and alone: other problems quote values, and the error must not show the secret.
        secrets = secret_scan.check_config_values(self.args, self.metadata, METADATA_KEY)
        if secrets:
            return ValidationReport(secrets), ""
        report = ValidationReport(self.check_metadata())
        report.problems += self.check_args(files)
        report.problems += self.check_deepspeed(files)
        ds_problems, version = self.check_datasets(files)
        report.problems += ds_problems
        return report, version

    # ---- canonical form and identity --------------------------------------------------------------------------

    def normalised_args(self) -> dict[str, Any]:
        specs = schema()
        out: dict[str, Any] = {}
        for key, value in self.args.items():
            if value is None:
                continue  # null means LLaMA-Factory's default
            spec = specs.get(key)
            if key in _LIST_AS_CSV:
                names = value if isinstance(value, list) else str(value).split(",")
                value = ",".join(str(v).strip() for v in names if str(v).strip())
            elif spec is not None and isinstance(spec.default, float) and type(value) is int:
                value = float(value)  # learning_rate: 1 -> 1.0; but logging_steps (float, default 500) stays int
            out[key] = value
        return out

    def training_yaml(self) -> str:
        """Exactly what `llamafactory-cli train` is given: sections in LLaMA-Factory's order, no metadata."""
        specs = schema()
        args = self.normalised_args()
        order = {name: i for i, name in enumerate(_LEADING + [k for k in specs if k not in _LEADING])}
        chunks = []
        for section in SECTION_ORDER:
            keys = sorted((k for k in args if specs[k].section == section), key=order.__getitem__)
            if keys:
                chunks.append(f"### {section}\n" + yamlio.dump({k: args[k] for k in keys}))
        unknown = {k: v for k, v in args.items() if k not in specs}
        if unknown:  # only reachable for configs that failed validation; kept so nothing is silently lost
            chunks.append("### unknown\n" + yamlio.dump(dict(sorted(unknown.items()))))
        return "\n".join(chunks)

    def canonical_yaml(self) -> str:
        text = self.training_yaml()
        if self.metadata:
            text += f"\n### {METADATA_KEY} (kept by lfops, not passed to LLaMA-Factory)\n"
            text += yamlio.dump({METADATA_KEY: dict(sorted(self.metadata.items()))})
        return text

    def config_hash(self) -> str:
        return hashlib.sha256(self.training_yaml().encode()).hexdigest()

    def frozen(self) -> FrozenConfig:
        """The canonical text and hash, computed once (a save needs both several times)."""
        return FrozenConfig(self, self.canonical_yaml(), self.config_hash())

    @property
    def base_model(self) -> str:
        return str(self.args.get("model_name_or_path", ""))

    def base_model_revision(self) -> str:
        """A hub id's pinned revision, or a content hash of a local model's config and weight index."""
        model = self.base_model
        path = Path(model)
        if model.startswith(("/", "./", "../")) or path.is_dir():
            return "local:" + local_model_hash(path) if path.is_dir() else "local:missing"
        revision = str(self.args.get("model_revision") or "main")
        return revision if revision != "main" else "main (unpinned)"


@dataclass(frozen=True)
class FrozenConfig:
    config: TrainConfig
    canonical_yaml: str
    config_hash: str


def _inside_repository(path: str) -> str | None:
    """`path` normalised, repository-relative; None when it is absolute or leaves the repository."""
    norm = posixpath.normpath(path)
    if path.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return norm


def _version_hash(parts: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else ""


def local_model_hash(path: Path) -> str:
    """sha256 over a local model's config, tokenizer config and weight index, and small weight files' contents."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        if f.suffix == ".json" or f.stat().st_size <= _SMALL_FILE:
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:  # a large shard is named by the index (hashed above) and its size
            h.update(f"{f.name}\0{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def parse_and_validate(data: bytes | str, files: Files, source: str = "config") -> tuple[TrainConfig, str]:
    """Parse, validate, and return the config with its dataset version; raise ValidationFailed listing every error."""
    config = TrainConfig.parse(data, source)
    report, version = config.validate(files)
    if not report.ok:
        raise ValidationFailed(report.problems, source)
    return config, version
