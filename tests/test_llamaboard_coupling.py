"""webui/llamaboard.py against the installed LlamaBoard: every internal it relies on exists and behaves as assumed.

If LLaMA-Factory is upgraded, these fail first and say which internal moved.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import llamafactory
import pytest
from llamafactory.webui import common as lb_common
from llamafactory.webui import runner as lb_runner
from llamafactory.webui.components import export as lb_export
from llamafactory.webui.components import train as lb_train
from llamafactory.webui.runner import Runner
from sqlalchemy import select

from backend.store.models import AuditEvent
from tests.webui_fixtures import build_in_process, signed_in
from tests.workspace_fixtures import make_env
from webui import llamaboard as lb

# Ids the app reads or changes; a rename in LlamaBoard must fail here, not in a user's browser.
IDS_USED = [
    "top.lang",
    "top.model_name",
    "top.model_path",
    "top.checkpoint_path",
    "top.finetuning_type",
    "top.template",
    "train.cmd_preview_btn",
    "train.start_btn",
    "train.stop_btn",
    "train.output_box",
    "train.config_path",
    "train.extra_args",
    "train.learning_rate",
    "train.num_train_epochs",
    "train.max_grad_norm",
    "train.max_samples",
    "train.dataset",
    "train.dataset_dir",
    "train.output_dir",
    "train.lora_rank",
    "train.compute_type",
    "train.ds_stage",
    "train.reward_model",
    "train.swanlab_api_key",
    "eval.start_btn",
    "eval.stop_btn",
    "eval.output_box",
    "infer.load_btn",
    "export.export_dir",
]


@pytest.fixture(scope="module")
def web(template_workspace, tmp_path_factory):
    cwd = os.getcwd()
    env = make_env(template_workspace, tmp_path_factory.mktemp("coupling") / "ws")
    try:
        yield build_in_process(env)
    finally:
        os.chdir(cwd)
        env.ws.store.dispose()


def demo_form(web, **values) -> dict:
    """The Train form as an analyst fills it for the demo: Custom model at the workspace's tiny model, demo data."""
    model = str(web.env.ws.settings.models_dir / "tiny-llama")
    base = {
        "top.lang": "en",
        "top.model_name": "Custom",
        "top.model_path": model,
        "train.dataset": ["demo_arith"],
        "train.output_dir": "train_2025-01-01-00-00-00",
        "train.config_path": "2025-01-01-00-00-00.yaml",
        "train.compute_type": "fp32",
    }
    return lb.form_values(web.board, {**base, **values})


def preview_args(text: str) -> dict[str, str]:
    """LlamaBoard's Preview markdown (`--key value` lines) back into a dict of strings."""
    return dict(re.findall(r"--(\w+) (.*?) \\?\n", text.replace("```", "\n")))


def test_the_pinned_llamafactory_is_installed():
    assert llamafactory.__version__ == lb.PINNED_VERSION == "0.9.5"
    lb.check_version()


def test_the_ids_the_app_relies_on_exist(web):
    manager = web.board.engine.manager
    missing = [i for i in IDS_USED if i not in dict(manager._id_to_elem)]
    assert not missing, f"LlamaBoard no longer registers {missing}"


def test_the_preview_inputs_are_everything_parse_train_args_reads(web):
    """Our Save handler takes the Preview button's inputs; they must cover every id _parse_train_args reads."""
    source = inspect.getsource(Runner._parse_train_args)
    read = set(re.findall(r'get\("([a-z]+\.[a-z_0-9]+)"\)', source))
    assert len(read) > 60  # the regex still finds LlamaBoard's getters
    ids = {web.board.engine.manager.get_id_by_elem(e) for e in web.board.train_inputs}
    assert read <= ids, f"not in Preview's inputs: {sorted(read - ids)}"


def test_private_methods_used_still_have_their_signatures():
    assert list(inspect.signature(Runner._parse_train_args).parameters) == ["self", "data"]
    assert list(inspect.signature(Runner._initialize).parameters) == ["self", "data", "do_train", "from_preview"]
    assert list(inspect.signature(lb_common._clean_cmd).parameters) == ["args"]
    assert list(inspect.signature(lb_export.save_model).parameters)[11:13] == ["export_dir", "export_hub_model_id"]
    assert callable(lb_train.list_config_paths)
    assert lb_common.DEFAULT_CONFIG_DIR == "llamaboard_config"


def test_what_preview_shows_is_what_gets_saved(web):
    """LlamaBoard's own Preview handler and our repo config agree on every value, except the documented rewrites."""
    data = demo_form(web, **{"train.learning_rate": "2e-4", "train.lora_rank": 16})
    out = next(web.board.engine.runner.preview_train(data))
    shown = preview_args(out[web.board.elem("train.output_box")])
    args = lb.train_args(web.board, data)
    assert shown == {k: str(v) for k, v in args.items()}  # train_args is exactly what Preview renders
    assert shown["learning_rate"] == "0.0002" and shown["lora_rank"] == "16"

    converted = lb.repo_args(web.board, data, "demo-x", web.ctx.workdir.root)
    assert not converted.problems
    rewritten = {"output_dir"}
    left_out = set(lb.HOST_SETTINGS) & set(args)
    assert left_out == {"preprocessing_num_workers", "trust_remote_code", "ddp_timeout"}
    for key, value in converted.args.items():
        if key not in rewritten:
            assert shown[key] == str(value), key
    assert set(shown) - set(converted.args) == left_out
    assert converted.args["output_dir"] == "saves/demo-x"
    assert converted.args["dataset_dir"] == "data"
    assert converted.args["learning_rate"] == 2e-4 and converted.args["lora_rank"] == 16


def test_paths_of_this_machine_are_rewritten_for_the_repository(web):
    root = web.ctx.workdir.root
    assert lb.repo_data_path("data", root) == "data"
    assert lb.repo_data_path(str(root / "data"), root) == "data"
    assert lb.repo_data_path(str((root / "data").resolve()), root) == "data"  # the export behind the symlink
    assert lb.repo_data_path("/somewhere/else", root) is None
    data = demo_form(web, **{"train.dataset_dir": str(root / "data")})
    assert lb.repo_args(web.board, data, "x", root).args["dataset_dir"] == "data"
    # a relative model folder next to LlamaBoard becomes absolute; a hub id stays as it is
    (root / "local-model").mkdir(exist_ok=True)
    data = demo_form(web, **{"top.model_path": "local-model"})
    assert lb.repo_args(web.board, data, "x", root).args["model_name_or_path"] == str(root / "local-model")
    data = demo_form(web, **{"top.model_path": "Qwen/Qwen2.5-0.5B"})
    assert lb.repo_args(web.board, data, "x", root).args["model_name_or_path"] == "Qwen/Qwen2.5-0.5B"


def test_settings_asked_for_in_extra_arguments_are_kept(web):
    extra = json.dumps({"optim": "adamw_torch", "trust_remote_code": True, "output_dir": "out/custom"})
    converted = lb.repo_args(web.board, demo_form(web, **{"train.extra_args": extra}), "x", web.ctx.workdir.root)
    assert converted.args["trust_remote_code"] is True
    assert converted.args["output_dir"] == "out/custom"
    assert "preprocessing_num_workers" not in converted.args


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"train.ds_stage": "2"}, "DeepSpeed stage"),  # as the form labels it (lb.field_label)
        ({"top.checkpoint_path": ["train_old"]}, "Checkpoint path"),
        ({"train.use_swanlab": True, "train.swanlab_api_key": "sk-123"}, "swanlab_api_key"),
        ({"train.extra_args": '{"hf_hub_token": "hf_abc"}'}, "hf_hub_token"),
    ],
)
def test_what_cannot_go_into_a_repository_is_refused_by_field(web, values, field):
    converted = lb.repo_args(web.board, demo_form(web, **values), "x", web.ctx.workdir.root)
    assert [p.field for p in converted.problems] == [field]


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"train.learning_rate": "fast"}, "Learning rate", "must be a number (got 'fast')"),
        ({"train.max_samples": "1e3.5"}, "Max samples", "must be a whole number"),
        ({"train.extra_args": "{optim"}, "Extra arguments", "must be a JSON object"),
        ({"train.dataset": []}, "Dataset", "choose at least one dataset"),
        ({"top.model_path": ""}, "Model path", "give the model path"),
    ],
)
def test_bad_form_input_names_the_field(web, values, field, reason):
    with pytest.raises(lb.FormError) as err:
        lb.train_args(web.board, demo_form(web, **values))
    assert [p.field for p in err.value.problems] == [field]
    assert reason in str(err.value)


def test_start_and_abort_are_hidden_and_refuse_without_spawning(web, monkeypatch):
    board = web.board
    for elem_id in ("train.start_btn", "train.stop_btn", "eval.start_btn", "eval.stop_btn"):
        assert board.elem(elem_id).visible is False, elem_id

    def no_process(*_a, **_k):
        raise AssertionError("LlamaBoard's Start spawned a training process")

    monkeypatch.setattr(lb_runner, "Popen", no_process)  # a spy: any training process would go through it
    runner = board.engine.runner
    assert isinstance(runner, lb.ReviewedRunner)
    out = list(runner.run_train(demo_form(web)))
    assert out == [{board.elem("train.output_box"): lb.START_REFUSED}]
    assert list(runner.run_eval({})) == [{board.elem("eval.output_box"): lb.EVAL_REFUSED}]
    runner.set_abort()  # nothing to abort, nothing raised
    assert runner.running is False and runner.trainer is None
    assert list(runner.monitor()) == []


def test_page_load_never_reattaches_anyones_job(web):
    """LlamaBoard's resume pushes the running job's form into every visitor's page; ours yields initial values only."""
    with signed_in("rita"):
        updates = list(web.board.engine.resume())
    assert len(updates) == 1
    assert web.board.elem("train.resume_btn") not in updates[0]


def test_presets_are_per_user_and_plain_file_names(web):
    runner, board = web.board.engine.runner, web.board
    with signed_in("alice"):
        out = runner.save_args(demo_form(web, **{"train.config_path": "mine.yaml"}))
        assert "mine.yaml" in out[board.elem("train.output_box")]
        assert Path("llamaboard_config/alice/mine.yaml").is_file()
        loaded = runner.load_args("en", "mine.yaml")
        assert loaded[board.elem("train.learning_rate")] == "5e-5"
        assert "mine.yaml" in [c[1] for c in lb._list_user_presets("t").choices]
        refused = runner.save_args(demo_form(web, **{"train.config_path": "../../escape.yaml"}))
        assert "plain file name" in refused[board.elem("train.output_box")]
        assert not Path("../escape.yaml").exists() and not Path("escape.yaml").exists()
    with signed_in("bob"):
        other = runner.load_args("en", "mine.yaml")
        assert "no preset" in other[board.elem("train.output_box")]
        assert "mine.yaml" not in [c[1] for c in lb._list_user_presets("t").choices]


def test_chat_models_are_per_user(web):
    """alice's model (the real tiny Llama, loaded on CPU) is hers: rita neither sees it nor unloads it."""
    chat, board = web.board.engine.chatter, web.board
    assert isinstance(chat, lb.PerUserChat)
    data = {
        board.elem("top.lang"): "en",
        board.elem("top.model_name"): "Custom",
        board.elem("top.model_path"): str(web.env.ws.settings.models_dir / "tiny-llama"),
        board.elem("top.finetuning_type"): "lora",
        board.elem("top.checkpoint_path"): [],
        board.elem("top.template"): "default",
        board.elem("top.rope_scaling"): "none",
        board.elem("top.booster"): "auto",
        board.elem("top.quantization_bit"): "none",
        board.elem("top.quantization_method"): "bnb",
        board.elem("infer.infer_backend"): "huggingface",
        board.elem("infer.infer_dtype"): "float32",
        board.elem("infer.extra_args"): "{}",
    }
    try:
        with signed_in("alice"):
            messages = list(chat.load_model(data))
            assert chat.loaded, messages
        with signed_in("rita"):
            assert not chat.loaded
            list(chat.unload_model(data))
        with signed_in("alice"):
            assert chat.loaded
            reply = list(
                chat.stream(
                    [],
                    [{"role": "user", "content": "What is 2 plus 2?"}],
                    "en",
                    "",
                    "",
                    None,
                    None,
                    None,
                    8,
                    0.7,
                    0.95,
                    True,
                    True,
                    False,
                )
            )
            assert reply and reply[-1][0][-1]["role"] == "assistant"
        with web.env.ws.store.session() as s:
            loads = s.scalars(select(AuditEvent).where(AuditEvent.action == "chat.load")).all()
            assert [e.actor for e in loads] == ["alice"]
    finally:
        with signed_in("alice"):
            list(chat.unload_model(data))


def test_export_is_confined_to_the_users_folder_and_audited(web):
    export = lb._guarded_export(web.ctx.guard)
    args = ["en", "Custom", "/models/m", "lora", [], "default", 5, "none", "", "cpu", False]
    with signed_in("alice"):
        assert "relative folder" in next(export(*args, "../../etc", "", "{}"))
        assert "relative folder" in next(export(*args, "/tmp/x", "", "{}"))
        assert "model registry" in next(export(*args, "out", "me/model", "{}"))
        # allowed: LlamaBoard's own checks run next (no adapter chosen), with the folder under exports/alice
        assert "adapter" in next(export(*args, "out", "", "{}")).lower()
    with signed_in(""):
        assert "sign in" in next(export(*args, "out", "", "{}"))
    with web.env.ws.store.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "llamaboard.export")).all()
        assert [(e.actor, e.detail["export_dir"]) for e in events] == [("alice", "exports/alice/out")]
