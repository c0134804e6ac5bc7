"""The one module that touches LlamaBoard's internals (`llamafactory.webui` of LLaMA-Factory 0.9.5, pinned).

What the app takes from LlamaBoard, all of it here:
- its header, top bar and four tabs, built the way `interface.create_ui` builds them but with the app's own `Engine`
  (create_ui keeps its engine to itself), so the app can read the Train form;
- the Train form's values turned into training arguments exactly as LlamaBoard's Preview and Start do
  (`Runner._parse_train_args` + `common._clean_cmd`), then rewritten into a config that belongs in a repository;
- hooks that make one LlamaBoard safe for many signed-in users: Start/Abort off (training starts only from reviewed
  commits), a chat model per user, "Save/Load arguments" presets per user, Export confined to a per-user folder.
tests/test_llamaboard_coupling.py fails loudly when an upgrade changes any of these internals.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import LocalContext
from llamafactory import __version__ as LLAMAFACTORY_VERSION
from llamafactory.extras.constants import TRAINING_STAGES
from llamafactory.webui import common as lb_common
from llamafactory.webui import css as lb_css
from llamafactory.webui.chatter import WebChatModel
from llamafactory.webui.components import (
    create_eval_tab,
    create_export_tab,
    create_footer,
    create_infer_tab,
    create_top,
    create_train_tab,
)
from llamafactory.webui.components import export as lb_export
from llamafactory.webui.components import train as lb_train
from llamafactory.webui.engine import Engine
from llamafactory.webui.locales import LOCALES
from llamafactory.webui.runner import Runner

from backend.errors import Problem, ValidationFailed
from backend.secret_args import is_secret_arg
from webui.errors import invalid, shows_errors

PINNED_VERSION = "0.9.5"
LLAMABOARD_CSS: str = lb_css.CSS
START_REFUSED = (
    "LlamaBoard's Start is switched off in lfops: training runs only from reviewed configs. "
    "Use **Save to repo** below; once a reviewer has approved and merged it, **Launch** runs it."
)
EVAL_REFUSED = (
    "LlamaBoard's Start is switched off in lfops: jobs do not run inside the shared web server. "
    "Preview command shows what would run."
)
# Arguments LlamaBoard sets for the machine it runs on; a reviewed config leaves them to the training host unless the
# analyst asks for them in "Extra arguments".
HOST_SETTINGS = {
    "cache_dir": "a cache folder on this machine",
    "preprocessing_num_workers": "LlamaBoard's fixed 16 workers; the training host decides",
    "trust_remote_code": "LlamaBoard always sets it; ask for it in Extra arguments so reviewers see it",
    "ddp_timeout": "LlamaBoard's launcher timeout",
}
_PLAIN_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
# Text fields LlamaBoard converts with float()/int(): checked first, so bad input names its field.
_NUMBER_FIELDS = {
    "train.learning_rate": float,
    "train.num_train_epochs": float,
    "train.max_grad_norm": float,
    "train.max_samples": int,
}
_REQUIRED = {  # LlamaBoard's own checks in Runner._initialize, and the field each refers to
    "top.model_name": "choose a model",
    "top.model_path": "give the model path",
    "train.dataset": "choose at least one dataset",
    "train.output_dir": "give an output dir",
}


class FormError(ValidationFailed):
    """The Train form cannot be turned into training arguments; `problems` name the fields as the form labels them."""


def field_label(elem_id: str) -> str:
    """A Train form field as the user sees it ("Learning rate" for `train.learning_rate`): LlamaBoard's own English
    label, the one source; an id LlamaBoard has no label for stays as it is."""
    entry = LOCALES.get(elem_id.rsplit(".", 1)[-1], {}).get("en", {})
    return str(entry.get("label") or entry.get("value") or elem_id) if "." in elem_id else elem_id


def _labelled(problems: list[Problem]) -> list[Problem]:
    return [Problem(field_label(p.field), p.reason, p.severity) for p in problems]


def check_version() -> None:
    if LLAMAFACTORY_VERSION != PINNED_VERSION:
        raise RuntimeError(
            f"lfops wraps LlamaBoard {PINNED_VERSION} internals; llamafactory {LLAMAFACTORY_VERSION} is installed"
        )


def current_user() -> str:
    """The signed-in user of the Gradio event being handled ("" when signed out or outside an event)."""
    request = LocalContext.request.get(None)
    return (getattr(request, "username", None) or "") if request is not None else ""


@contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Swap a module-level function that a LlamaBoard tab binds to an event, only while that tab is built."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


# --------------------------------------------------------------------------------------------------------------------
# Many users, one process


def _user_dir(base: str | os.PathLike) -> str:
    return os.path.join(base, current_user() or "_anonymous")


class ReviewedRunner(Runner):
    """LlamaBoard's Runner without job control: nothing trains inside the web server, so no session can start,
    see, re-attach to or abort anyone's job; "Save/Load arguments" presets are kept per user."""

    def run_train(self, data: dict) -> Generator[dict, None, None]:
        yield {self.manager.get_elem_by_id("train.output_box"): START_REFUSED}

    def run_eval(self, data: dict) -> Generator[dict, None, None]:
        yield {self.manager.get_elem_by_id("eval.output_box"): EVAL_REFUSED}

    def set_abort(self) -> None:
        """Nothing runs here, so there is nothing (of anyone's) to abort."""

    def monitor(self) -> Generator[dict, None, None]:
        yield from ()

    def _preset_path(self, config_path: str) -> str:
        name = str(config_path or "")
        if not _PLAIN_FILE_RE.match(name) or ".." in name:
            raise invalid("config path", f"{name!r} must be a plain file name (letters, digits, '.', '_', '-')")
        return os.path.join(_user_dir(lb_common.DEFAULT_CONFIG_DIR), name)

    def _in_output_box(self, message: str, warn: bool = False) -> dict:
        """LlamaBoard's way to answer: the message in the Train tab's output box (and as a warning)."""
        if warn:
            gr.Warning(message)
        return {self.manager.get_elem_by_id("train.output_box"): message}

    @shows_errors(lambda lines, self, **_: self._in_output_box("; ".join(lines), warn=True))
    def save_args(self, data: dict) -> dict:
        error = self._initialize(data, do_train=True, from_preview=True)
        if error:
            return self._in_output_box(error, warn=True)
        path = self._preset_path(data[self.manager.get_elem_by_id("train.config_path")])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lb_common.save_args(path, self._build_config_dict(data))
        return self._in_output_box(f"Form saved as your preset {os.path.basename(path)}")

    @shows_errors(lambda lines, self, **_: self._in_output_box("; ".join(lines)))
    def load_args(self, lang: str, config_path: str) -> dict:
        output_box = self.manager.get_elem_by_id("train.output_box")
        config = lb_common.load_args(self._preset_path(config_path))
        if not isinstance(config, dict):
            raise invalid("config path", f"you have no preset named {config_path!r}")
        out: dict = {output_box: f"Preset {config_path} loaded"}
        for elem_id, value in config.items():
            try:
                out[self.manager.get_elem_by_id(elem_id)] = value
            except KeyError:
                continue  # a preset from another LlamaBoard version
        return out


def _user_config_path() -> str:
    """Replaces common._get_config_path: LlamaBoard's remembered language, hub, last model and model paths are each
    user's own (one shared file made everyone's page load with the last user's model and its "non-instruct" notice)."""
    folder = _user_dir(os.path.join(lb_common.DEFAULT_CACHE_DIR, "users"))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, lb_common.USER_CONFIG)


def _list_user_presets(current_time: str) -> gr.Dropdown:
    """Replaces control.list_config_paths: lists only the signed-in user's presets."""
    files = [f"{current_time}.yaml"]
    folder = _user_dir(lb_common.DEFAULT_CONFIG_DIR)
    if os.path.isdir(folder):
        files += sorted(f for f in os.listdir(folder) if f.endswith(".yaml") and f not in files)
    return gr.Dropdown(choices=files)


# Called before a user's model loads in Chat or a model is exported: returns a refusal, or "" to go on (and audits).
Guard = Callable[[str, str, dict], str]


class PerUserChat:
    """Stands in for Engine.chatter: one LlamaBoard chat model per signed-in user."""

    def __init__(self, manager: Any, guard: Guard) -> None:
        self.manager = manager
        self._guard = guard
        self._models: dict[str, WebChatModel] = {}
        self._lock = threading.Lock()

    def _model(self) -> WebChatModel:
        user = current_user()
        with self._lock:
            if user not in self._models:
                self._models[user] = WebChatModel(self.manager, lazy_init=True)
            return self._models[user]

    @property
    def loaded(self) -> bool:
        model = self._models.get(current_user())
        return model is not None and model.loaded

    def load_model(self, data: dict) -> Generator[str, None, None]:
        model_path = data[self.manager.get_elem_by_id("top.model_path")]
        refusal = self._guard(current_user(), "chat.load", {"model": model_path})
        if refusal:
            yield refusal
            return
        yield from self._model().load_model(data)

    def unload_model(self, data: dict) -> Generator[str, None, None]:
        yield from self._model().unload_model(data)

    append = staticmethod(WebChatModel.append)

    def stream(self, *args: Any) -> Generator[tuple, None, None]:
        yield from self._model().stream(*args)


def _guarded_export(guard: Guard) -> Callable:
    """Replaces export.save_model: the export folder is a relative path inside the user's own exports folder, hub
    pushes go through the model registry instead, and every export is authorised and audited."""
    original = lb_export.save_model

    @functools.wraps(original)
    def save_model(*args: Any) -> Generator[str, None, None]:
        args = list(args)
        export_dir, hub_id = str(args[11] or ""), str(args[12] or "")
        norm = posixpath.normpath(export_dir) if export_dir else ""
        if hub_id:
            yield "export hub model id: pushing to a hub goes through the model registry, not Export; clear it"
            return
        if export_dir and (export_dir.startswith(("/", "~")) or norm.startswith("..") or "\\" in export_dir):
            yield f"export dir: {export_dir!r} must be a relative folder name (it goes under your exports folder)"
            return
        target = os.path.join(_user_dir("exports"), norm) if export_dir else ""
        refusal = guard(current_user(), "llamaboard.export", {"model": args[2], "export_dir": target})
        if refusal:
            yield refusal
            return
        args[11] = target
        yield from original(*args)

    return save_model


# --------------------------------------------------------------------------------------------------------------------
# Building


@dataclass
class LlamaBoard:
    engine: Engine
    train_inputs: set = field(default_factory=set)  # the Train form: the inputs of LlamaBoard's Preview button

    def elem(self, elem_id: str) -> Any:
        return self.engine.manager.get_elem_by_id(elem_id)


def build(blocks: gr.Blocks, guard: Guard, extend_train: Callable[[LlamaBoard], None]) -> LlamaBoard:
    """Inside `with blocks:`, the body of interface.create_ui up to its footer, with the app's Engine and hooks.

    `extend_train` adds rows at the end of the Train tab. Call `finish` after the app's own tabs.
    """
    check_version()
    lb_common._get_config_path = _user_config_path  # read by load_config/save_config wherever they are imported
    engine = Engine(demo_mode=False, pure_chat=False)
    engine.runner = ReviewedRunner(engine.manager)
    engine.chatter = PerUserChat(engine.manager, guard)
    board = LlamaBoard(engine)
    manager = engine.manager

    manager.add_elems("head", {"title": gr.HTML(), "subtitle": gr.HTML()})
    manager.add_elems("top", create_top())
    with gr.Tab("Train", id="train", elem_id="lfops-tab-train"):
        with _patched(lb_train, "list_config_paths", _list_user_presets):
            manager.add_elems("train", create_train_tab(engine))
        board.train_inputs = set(_preview_inputs(blocks, board))
        for elem_id in ("train.start_btn", "train.stop_btn"):
            board.elem(elem_id).visible = False
        extend_train(board)
    with gr.Tab("Evaluate & Predict", id="eval", elem_id="lfops-tab-eval"):
        manager.add_elems("eval", create_eval_tab(engine))
        for elem_id in ("eval.start_btn", "eval.stop_btn"):
            board.elem(elem_id).visible = False
    with gr.Tab("Chat", id="chat", elem_id="lfops-tab-chat"):
        manager.add_elems("infer", create_infer_tab(engine))
    with gr.Tab("Export", id="export", elem_id="lfops-tab-export"):
        with _patched(lb_export, "save_model", _guarded_export(guard)):
            manager.add_elems("export", create_export_tab(engine))
    return board


def finish(blocks: gr.Blocks, board: LlamaBoard) -> None:
    """The rest of create_ui: footer, initial values on page load, language switching."""
    engine, manager = board.engine, board.engine.manager
    lang = manager.get_elem_by_id("top.lang")
    manager.add_elems("footer", create_footer())
    quiet_footer(blocks)
    # engine.resume never re-attaches: ReviewedRunner.running stays False and PerUserChat answers per user.
    blocks.load(engine.resume, outputs=manager.get_elem_list(), concurrency_limit=None)
    lang.change(engine.change_lang, [lang], manager.get_elem_list(), queue=False)
    lang.input(lb_common.save_config, inputs=[lang], queue=False)


def quiet_footer(blocks: gr.Blocks) -> gr.Timer | None:
    """LlamaBoard's footer asks for the accelerator's memory every 5 s from every open page; with no accelerator its
    slider stays hidden, so its timer is switched off here and an idle page costs nothing (docs/live-runs.md)."""
    from llamafactory.extras.misc import get_current_memory

    if get_current_memory()[1] != -1:
        return None
    for dep in blocks.fns.values():
        if getattr(dep.fn, "__name__", "") == "get_device_memory":
            for block_id, event in dep.targets:
                timer = blocks.blocks.get(block_id)
                if event == "tick" and isinstance(timer, gr.Timer):
                    timer.active = False
                    return timer
    return None


def _preview_inputs(blocks: gr.Blocks, board: LlamaBoard) -> list:
    """The inputs of the Preview button's click: the full Train form, as LlamaBoard itself reads it."""
    button = board.elem("train.cmd_preview_btn")
    for dep in blocks.fns.values():
        if any(target[0] == button._id and target[1] == "click" for target in dep.targets):
            if not dep.inputs_as_dict:
                raise RuntimeError("LlamaBoard's Preview no longer takes the form as a dict")
            return list(dep.inputs)
    raise RuntimeError("LlamaBoard's Preview button has no click event")


# --------------------------------------------------------------------------------------------------------------------
# Reading the Train form


def form_values(board: LlamaBoard, values: dict[str, Any] | None = None) -> dict:
    """The Train form as LlamaBoard's events hand it over ({component: value}): initial values, then `values` by id."""
    data = {elem: elem.value for elem in board.train_inputs}
    for elem_id, value in (values or {}).items():
        data[board.elem(elem_id)] = value
    return data


def train_args(board: LlamaBoard, data: dict) -> dict[str, Any]:
    """The training arguments LlamaBoard previews and writes to training_args.yaml for this form."""
    problems = _check_form(board, data)
    if problems:
        raise FormError(_labelled(problems))
    runner = board.engine.runner
    error = runner._initialize(data, do_train=True, from_preview=True)
    if error:
        raise FormError([Problem("form", error)])
    return lb_common._clean_cmd(runner._parse_train_args(data))


def preview(board: LlamaBoard, data: dict) -> str:
    """LlamaBoard's Preview command text for the same form (markdown)."""
    return lb_common.gen_cmd(train_args(board, data))


def _check_form(board: LlamaBoard, data: dict) -> list[Problem]:
    def get(elem_id: str) -> Any:
        return data[board.elem(elem_id)]

    problems = [Problem(elem_id, reason) for elem_id, reason in _REQUIRED.items() if not get(elem_id)]
    for elem_id, kind in _NUMBER_FIELDS.items():
        try:
            kind(get(elem_id))
        except (TypeError, ValueError):
            what = "a number" if kind is float else "a whole number"
            problems.append(Problem(elem_id, f"must be {what} (got {get(elem_id)!r})"))
    try:
        if not isinstance(json.loads(get("train.extra_args")), dict):
            raise ValueError
    except (TypeError, ValueError):
        problems.append(Problem("train.extra_args", 'must be a JSON object, e.g. {"optim": "adamw_torch"}'))
    return problems


@dataclass
class RepoArgs:
    args: dict[str, Any]
    notes: list[str]  # what was rewritten or left out, for the analyst to read
    problems: list[Problem]


def repo_args(board: LlamaBoard, data: dict, name: str, workdir: Path) -> RepoArgs:
    """The form's training arguments as a repository config: paths of this machine rewritten or refused."""
    args = train_args(board, data)
    explicit = set(json.loads(data[board.elem("train.extra_args")]))
    notes: list[str] = []
    problems: list[Problem] = []
    left_out = [k for k in HOST_SETTINGS if k in args and k not in explicit]
    for key in left_out:
        del args[key]
    if left_out:
        notes.append("left out (LlamaBoard's settings for this machine): " + ", ".join(left_out))

    if "output_dir" not in explicit:
        new = f"saves/{name}"
        if args.get("output_dir") != new:
            notes.append(f"output_dir: {args.get('output_dir')} -> {new}")
        args["output_dir"] = new
    model = str(args.get("model_name_or_path", ""))
    if model and not os.path.isabs(model) and (workdir / model).is_dir():
        args["model_name_or_path"] = str((workdir / model).resolve())
        notes.append(f"model_name_or_path: {model} -> {args['model_name_or_path']}")
    ddir = args.get("dataset_dir")
    if isinstance(ddir, str) and ddir not in ("ONLINE",) and not ddir.startswith("REMOTE:"):
        repo_dir = repo_data_path(ddir, workdir)
        if repo_dir is not None and repo_dir != ddir:
            notes.append(f"dataset_dir: {ddir} -> {repo_dir}")
            args["dataset_dir"] = repo_dir

    if "deepspeed" in args and "deepspeed" not in explicit:
        problems.append(
            Problem(
                "train.ds_stage",
                "DeepSpeed stages point at LlamaBoard's cache on this machine; commit a DeepSpeed config to the "
                'repository and name it in Extra arguments ({"deepspeed": "path/in/repo.json"})',
            )
        )
    if data[board.elem("top.checkpoint_path")]:
        problems.append(
            Problem("top.checkpoint_path", "checkpoints on this machine are not in the repository; clear it")
        )
    if args.get("reward_model") and "reward_model" not in explicit:
        problems.append(Problem("train.reward_model", "checkpoints on this machine are not in the repository"))
    for key, value in args.items():
        if is_secret_arg(key) and value:
            problems.append(
                Problem(key, "secrets never go into the config repository; give the run an environment variable")
            )
    return RepoArgs(args, notes, _labelled(problems))


def repo_data_path(ddir: str, workdir: Path) -> str | None:
    """`ddir` as a path inside the repository, when it points into the export of the repository's data/."""
    path = Path(ddir) if os.path.isabs(ddir) else workdir / ddir
    root = workdir.resolve()
    candidates = [Path(os.path.normpath(path))]
    if path.exists():
        candidates.append(path.resolve())
    data_real = (workdir / "data").resolve()
    for cand in candidates:
        for base, prefix in ((data_real, "data"), (root, "")):
            if cand == base or base in cand.parents:
                rel = cand.relative_to(base).as_posix()
                joined = posixpath.join(prefix, rel) if prefix else rel
                return posixpath.normpath(joined) if joined not in ("", ".") else None
    return None


# --------------------------------------------------------------------------------------------------------------------
# Filling the Train form from a config (Open from repo)

_STAGE_NAMES = {stage: name for name, stage in TRAINING_STAGES.items()}
_SPLIT = lambda value: [v.strip() for v in str(value).split(",") if v.strip()]  # noqa: E731
# A training argument -> the Train form field that produces it one to one, and how its value is shown there: the
# inverse of Runner._parse_train_args where it is one to one. Arguments without a field here are kept as the opened
# config has them (see `edited_args`).
_FORM_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "model_name_or_path": ("top.model_path", str),
    "finetuning_type": ("top.finetuning_type", str),
    "template": ("top.template", str),
    "stage": ("train.training_stage", lambda v: _STAGE_NAMES.get(v, v)),
    "dataset_dir": ("train.dataset_dir", str),
    "dataset": ("train.dataset", lambda v: v if isinstance(v, list) else _SPLIT(v)),
    "cutoff_len": ("train.cutoff_len", int),
    "learning_rate": ("train.learning_rate", lambda v: f"{float(v):g}"),
    "num_train_epochs": ("train.num_train_epochs", lambda v: f"{float(v):g}"),
    "max_samples": ("train.max_samples", lambda v: str(int(v))),
    "per_device_train_batch_size": ("train.batch_size", int),
    "gradient_accumulation_steps": ("train.gradient_accumulation_steps", int),
    "lr_scheduler_type": ("train.lr_scheduler_type", str),
    "max_grad_norm": ("train.max_grad_norm", lambda v: f"{float(v):g}"),
    "logging_steps": ("train.logging_steps", int),
    "save_steps": ("train.save_steps", int),
    "warmup_steps": ("train.warmup_steps", int),
    "val_size": ("train.val_size", float),
    "lora_rank": ("train.lora_rank", int),
    "lora_alpha": ("train.lora_alpha", int),
    "lora_dropout": ("train.lora_dropout", float),
    "lora_target": ("train.lora_target", lambda v: ",".join(v) if isinstance(v, list) else str(v)),
    "packing": ("train.packing", bool),
    "train_on_prompt": ("train.train_on_prompt", bool),
    "mask_history": ("train.mask_history", bool),
    "quantization_bit": ("top.quantization_bit", str),
}
_COMPUTE_TYPES = ("pure_bf16", "bf16", "fp16")  # the first one true in the config; none: fp32


def form_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """The Train form's values (by LlamaBoard's ids) that show `args`: the fields that map one to one."""
    values: dict[str, Any] = {}
    for key, (elem_id, shown) in _FORM_FIELDS.items():
        if args.get(key) is not None:
            try:
                values[elem_id] = shown(args[key])
            except (TypeError, ValueError):
                continue  # shown as the form had it; the opened config's value is kept (edited_args)
    values["train.compute_type"] = next((c for c in _COMPUTE_TYPES if args.get(c)), "fp32")
    values["train.extra_args"] = "{}"
    return values


def form_ids(board: LlamaBoard, data: dict) -> dict[str, Any]:
    """The Train form ({component: value}) by LlamaBoard's ids, what `form_values` takes back."""
    manager = board.engine.manager
    return {manager.get_id_by_elem(elem): value for elem, value in data.items() if elem in board.train_inputs}


def edited_args(
    board: LlamaBoard, opened_form: dict[str, Any], data: dict, base: dict[str, Any], name: str, workdir: Path
) -> RepoArgs:
    """The opened config `base` with exactly what the analyst changed in the form since opening it: what the form made
    of the opened values against what it makes of the values now; every other argument stays as `base` has it (the
    form does not show everything a config can hold, and what it adds of its own is no change of the analyst's)."""
    before = repo_args(board, form_values(board, opened_form), name, workdir)
    after = repo_args(board, data, name, workdir)
    args = dict(base)
    for key, value in after.args.items():
        if before.args.get(key) != value:
            args[key] = value
    for key in before.args:
        if key not in after.args:
            args.pop(key, None)
    return RepoArgs(args, [], after.problems)
