"""Training config validation, canonical YAML and identity hashes, read the way LLaMA-Factory reads them."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from backend import yamlio
from backend.config import DirFiles, TrainConfig, parse_and_validate
from backend.errors import ValidationFailed

BASE = {
    "model_name_or_path": "/models/tiny",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "dataset": "demo",
    "template": "default",
    "learning_rate": 5.0e-5,
    "output_dir": "saves/x",
}


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    (tmp_path / "data" / "dataset_info.json").write_text(
        '{"demo": {"file_name": "demo.json"}, "hub": {"hf_hub_url": "org/ds"}}'
    )
    return DirFiles(tmp_path)


def errors_of(doc: str | bytes, repo) -> list[str]:
    try:
        config = TrainConfig.parse(doc)
    except ValidationFailed as exc:
        return [str(p) for p in exc.problems]
    report, _ = config.validate(repo)
    return [str(p) for p in report.errors]


def with_(**kw) -> str:
    return yamlio.dump({**BASE, **kw})  # quotes "5e-5", which PyYAML's safe_dump would leave bare


def test_valid_config_validates_and_has_a_dataset_version(repo):
    config, version = parse_and_validate(with_(), repo)
    assert version.startswith("sha256:")
    assert config.base_model == "/models/tiny"


def test_unquoted_exponent_float_is_a_number_as_in_llamafactory(repo):
    doc = with_().replace("learning_rate: 5.0e-05", "learning_rate: 5e-5")
    assert "learning_rate: 5e-5\n" in doc
    config, _ = parse_and_validate(doc, repo)
    assert config.args["learning_rate"] == 5e-5


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"learning_rate": "5e-5"}, "learning_rate: must be a number"),
        ({"lora_rank": 1.5}, "lora_rank: must be an integer"),
        ({"do_train": "yes"}, "do_train: must be true or false"),
        ({"stage": "xyz"}, "stage: must be one of pt, sft, rm, ppo, dpo, kto"),
        ({"finetuning_type": "qlora"}, "finetuning_type: must be one of"),
        ({"template": "nope"}, "template: unknown template 'nope'"),
        ({"not_an_arg": 1}, "not_an_arg: not a LLaMA-Factory training argument"),
        ({"dataset": "missing"}, "dataset: 'missing' is not defined in data/dataset_info.json"),
        ({"dataset_dir": "../elsewhere"}, "dataset_dir: must be a path inside the repository"),
        ({"lr_scheduler_type": "sideways"}, "LLaMA-Factory rejects it"),
        ({"hf_hub_token": "hf_abc"}, "hf_hub_token: secrets never go into a config"),
        ({"swanlab_api_key": "k"}, "swanlab_api_key: secrets never go into a config"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(repo, change, expected):
    errors = errors_of(with_(**change), repo)
    assert any(expected in e for e in errors), errors


def test_missing_dataset_file_is_an_error(repo):
    (repo.root / "data" / "demo.json").unlink()
    assert errors_of(with_(), repo) == ["dataset: 'demo': file data/demo.json does not exist"]


def test_required_keys(repo):
    doc = yaml.safe_dump({k: v for k, v in BASE.items() if k != "template"})
    assert "template: is required" in errors_of(doc, repo)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b"- a\n- b\n", "file: must be a YAML mapping, got list"),
        (b"plain string", "file: must be a YAML mapping, got str"),
        (b"a: [1, 2\n", "invalid YAML"),
        (b"\xff\xfe\x00bad", "file: not UTF-8"),
        (b"a: 1\na: 2\n", "duplicate key 'a'"),
        (b"a: &x [1, 2]\nb: *x\n", "anchors (&name) are not allowed"),
        (b"lfops: [1]\n", "lfops: must be a mapping"),
    ],
)
def test_malformed_documents(repo, doc, expected):
    errors = errors_of(doc, repo)
    assert any(expected in e for e in errors), errors


def test_alias_bomb_is_refused_quickly(repo):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=False)
    )
    assert any("not allowed" in e for e in errors_of(bomb, repo))


def test_gpu_config_validates_on_this_cpu_machine(repo):
    config, _ = parse_and_validate(with_(bf16=True, deepspeed="examples/deepspeed/ds_z3_config.json"), repo)
    assert config.args["bf16"] is True and "deepspeed" in config.args


def test_hub_dataset_is_flagged_unpinned(repo):
    config = TrainConfig.parse(with_(dataset="hub"))
    report, version = config.validate(repo)
    assert report.ok and version
    assert [str(w) for w in report.warnings] == ["dataset: 'hub' comes from a hub and is not pinned"]


def test_canonical_yaml_is_stable_and_order_independent():
    a = TrainConfig.parse(with_())
    reordered = TrainConfig.parse(yaml.safe_dump(dict(reversed(list(BASE.items())))))
    assert a.canonical_yaml() == reordered.canonical_yaml()
    again = TrainConfig.parse(a.canonical_yaml())
    assert again.canonical_yaml() == a.canonical_yaml()
    assert a.canonical_yaml().splitlines()[:2] == ["### model", "model_name_or_path: /models/tiny"]


def test_canonical_floats_and_strings_read_the_same_in_pyyaml_and_omegaconf():
    config = TrainConfig.parse(with_(learning_rate=5e-5, warmup_ratio=0.1, run_name="1e3", adam_epsilon=1e-08))
    text = config.training_yaml()
    assert "learning_rate: 5.0e-05" in text
    by_pyyaml = yaml.safe_load(text)
    by_omegaconf = OmegaConf.to_container(OmegaConf.create(text))
    assert by_pyyaml == by_omegaconf
    assert by_pyyaml["learning_rate"] == 5e-5 and by_pyyaml["run_name"] == "1e3"


def test_config_hash_tracks_values_not_order_or_metadata():
    a = TrainConfig.parse(with_())
    b = TrainConfig.parse(with_(learning_rate=1e-4))
    c = TrainConfig(dict(a.args), {"description": "other words"})
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == c.config_hash()
    assert "lfops" not in c.training_yaml() and "other words" in c.canonical_yaml()


def test_dataset_version_tracks_file_contents(repo):
    _, v1 = parse_and_validate(with_(), repo)
    (repo.root / "data" / "demo.json").write_text('[{"instruction": "changed", "input": "", "output": "b"}]')
    _, v2 = parse_and_validate(with_(), repo)
    assert v1 != v2


def test_local_base_model_is_hashed(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    config = TrainConfig.parse(with_(model_name_or_path=str(model)))
    rev1 = config.base_model_revision()
    (model / "config.json").write_text('{"hidden_size": 128}')
    assert rev1.startswith("local:") and config.base_model_revision() != rev1
    hub = TrainConfig.parse(with_(model_name_or_path="org/model", model_revision="abc123"))
    assert hub.base_model_revision() == "abc123"
    assert TrainConfig.parse(with_(model_name_or_path="org/model")).base_model_revision() == "main (unpinned)"


# ---- agreement with LLaMA-Factory (its get_train_args checks) and the value rules ----------------------------------


def test_pretraining_needs_no_template_but_chat_stages_do(repo):
    pt = {k: v for k, v in BASE.items() if k != "template"} | {"stage": "pt"}
    config, _ = parse_and_validate(yamlio.dump(pt), repo)
    assert config.args["stage"] == "pt"
    assert "template: is required" in errors_of(yamlio.dump(pt | {"stage": "dpo"}), repo)


def test_prediction_config_with_eval_dataset_and_no_dataset(repo):
    predict = {k: v for k, v in BASE.items() if k not in ("dataset", "do_train")}
    predict |= {"do_predict": True, "eval_dataset": "demo", "predict_with_generate": True}
    config, version = parse_and_validate(yamlio.dump(predict), repo)
    assert config.dataset_names() == ["demo"] and version.startswith("sha256:")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dataset": None}, "dataset: LLaMA-Factory rejects it: Please specify dataset for training."),
        ({"do_predict": True}, "predict_with_generate: LLaMA-Factory rejects it: Please enable"),
        ({"stage": "pt", "predict_with_generate": True}, "predict_with_generate: LLaMA-Factory rejects it"),
        ({"stage": "ppo"}, "reward_model: LLaMA-Factory rejects it: `reward_model` is necessary for PPO training."),
        ({"stage": "rm", "load_best_model_at_end": True}, "load_best_model_at_end: LLaMA-Factory rejects it"),
        ({"stage": "dpo", "pref_loss": "orpo", "dpo_label_smoothing": 0.1}, "dpo_label_smoothing: LLaMA-Factory"),
        ({"do_eval": True}, "eval_dataset: LLaMA-Factory rejects it: Please make sure eval_dataset be provided"),
        ({"finetuning_type": "full", "quantization_bit": 4}, "config: LLaMA-Factory rejects it: Quantization"),
        ({"lr_scheduler_type": "sideways"}, "lr_scheduler_type: LLaMA-Factory rejects it: sideways is not a valid"),
    ],
)
def test_llamafactorys_cross_argument_checks_name_the_key(repo, change, expected):
    doc = yamlio.dump({k: v for k, v in ({**BASE, **change}).items() if v is not None})
    errors = errors_of(doc, repo)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "rm"},
        {"stage": "dpo"},
        {"stage": "kto"},
        {"stage": "ppo", "reward_model": "saves/rm"},
        {"stage": "sft", "pure_bf16": True},  # no bf16 GPU here; the training host has one
        {"stage": "sft", "max_steps": 10, "num_train_epochs": 1.0},
    ],
)
def test_what_llamafactory_accepts_validates(repo, change):
    parse_and_validate(with_(**change), repo)


def test_optional_packages_are_the_training_hosts_business(repo):
    config = TrainConfig.parse(with_(finetuning_type="full", use_galore=True))
    report, _ = config.validate(repo)
    assert report.ok
    assert "config: the training host needs the package galore_torch (not installed here)" in map(str, report.warnings)


def test_llamafactorys_checks_leave_this_process_and_host_alone(repo, tmp_path, monkeypatch, capfd):
    """No checkpoint in a same-named output_dir here, no global seed, no log lines: the config alone decides."""
    import random

    import transformers

    monkeypatch.chdir(tmp_path)
    (tmp_path / "saves" / "x").mkdir(parents=True)
    (tmp_path / "saves" / "x" / "model.safetensors").write_bytes(b"")  # LLaMA-Factory: "Output directory ... exists"
    verbosity = transformers.logging.get_verbosity()
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    parse_and_validate(with_(seed=7), repo)
    assert random.random() == expected
    assert transformers.logging.get_verbosity() == verbosity
    assert "Process rank" not in capfd.readouterr().err


def with_line(text: str) -> str:
    """BASE with one key written as YAML text (`.nan`, `1e999`... as a user would type them)."""
    key = text.split(":")[0]
    return yamlio.dump({k: v for k, v in BASE.items() if k != key}) + text + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: .nan", "learning_rate: must be a finite number (got nan)"),
        ("learning_rate: .inf", "learning_rate: must be a finite number (got inf)"),
        ("learning_rate: 1e999", "learning_rate: must be a finite number (got inf)"),
        ("learning_rate: 0", "learning_rate: must be greater than 0 (got 0)"),
        ("learning_rate: -1.0e-4", "learning_rate: must be greater than 0 (got -0.0001)"),
        ("num_train_epochs: -1", "num_train_epochs: must be greater than 0 (got -1)"),
        ("num_train_epochs: 0.0", "num_train_epochs: must be greater than 0 (got 0.0)"),
        ("max_steps: 0", "max_steps: must be at least 1, or -1 for no step limit (got 0)"),
        ("max_steps: -2", "max_steps: must be at least 1, or -1 for no step limit (got -2)"),
        ("per_device_train_batch_size: 0", "per_device_train_batch_size: must be at least 1 (got 0)"),
        ("per_device_eval_batch_size: -4", "per_device_eval_batch_size: must be at least 1 (got -4)"),
        ("gradient_accumulation_steps: 0", "gradient_accumulation_steps: must be at least 1 (got 0)"),
        ("cutoff_len: 0", "cutoff_len: must be at least 1 (got 0)"),
        ("cutoff_len: -512", "cutoff_len: must be at least 1 (got -512)"),
        ("warmup_ratio: 1.5", "warmup_ratio: must be between 0 and 1 (got 1.5)"),
        ("weight_decay: .nan", "weight_decay: must be a finite number (got nan)"),
        ("lfops:\n  budget: .inf", "lfops.budget: must be a finite number (got inf)"),
    ],
)
def test_values_that_are_always_wrong_are_refused_naming_the_key(repo, text, expected):
    errors = errors_of(with_line(text), repo)
    assert expected in errors, errors


@pytest.mark.parametrize("text", ["max_steps: -1", "max_steps: 1", "learning_rate: 1", "num_train_epochs: 0.5"])
def test_boundary_values_that_are_right(repo, text):
    parse_and_validate(with_line(text), repo)


def test_remote_dataset_dir_needs_a_repository(repo):
    assert "dataset_dir: REMOTE: must be followed by a hub dataset repository" in errors_of(
        with_(dataset_dir="REMOTE:"), repo
    )
    config = TrainConfig.parse(with_(dataset_dir="REMOTE:org/demo_data"))
    report, version = config.validate(repo)
    assert report.ok and version.startswith("sha256:")
    assert [w.field for w in report.warnings] == ["dataset_dir"]


# ---- configs/: the example configs `lfops init` seeds ------------------------------------------------------------


def test_every_example_config_in_configs_validates_as_seeded(tmp_path):
    from backend import demo

    for rel, content in demo.dataset_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    sources = sorted(demo.example_configs_dir().glob("*.yaml"))
    assert [p.name for p in sources] == ["example.yaml"]
    seeded = demo.example_configs(tmp_path / "models" / demo.DEMO_MODEL)
    assert sorted(seeded) == [f"configs/{p.name}" for p in sources]
    for rel, text in seeded.items():
        assert demo.DEMO_MODEL_PLACEHOLDER not in text
        config, version = parse_and_validate(text, DirFiles(tmp_path), rel)
        assert config.base_model == str(tmp_path / "models" / demo.DEMO_MODEL) and version.startswith("sha256:")
        assert TrainConfig.parse(text).canonical_yaml() == text  # seeded in canonical form
