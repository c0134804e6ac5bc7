"""LLaMA-Factory 0.9.5's own example configs validate as LLaMA-Factory would judge them (tests/corpus/*/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import DirFiles, TrainConfig

CORPUS = Path(__file__).parent / "corpus" / "llamafactory-0.9.5"
CONFIGS = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("examples/**/*.yaml"))
# Refused, with the key and reason: see the corpus README for why LLaMA-Factory refuses them as well.
REFUSED = {
    "examples/extras/asft/llama2_full_asft.yaml": "dataset: 'med' is not defined in data/dataset_info.json",
    "examples/extras/asft/qwen2_full_asft.yaml": "dataset: 'math' is not defined in data/dataset_info.json",
    "examples/extras/fp8/llama3_fp8_fsdp_sft.yaml": "fsdp_transformer_layer_cls_to_wrap: not a LLaMA-Factory",
    "examples/megatron/qwen2_vl_full.yaml": "tensor_model_parallel_size: not a LLaMA-Factory training argument",
    "examples/megatron/qwen3_moe_full.yaml": "tensor_model_parallel_size: not a LLaMA-Factory training argument",
}


def validate(rel: str):
    config = TrainConfig.load(CORPUS / rel)
    return config.validate(DirFiles(CORPUS))


def test_the_corpus_is_what_its_readme_lists():
    readme = (CORPUS / "README.md").read_text()
    assert len(CONFIGS) == 50
    assert all(f"| `{rel}` |" in readme for rel in CONFIGS)
    assert set(REFUSED) <= set(CONFIGS)


@pytest.mark.parametrize("rel", [c for c in CONFIGS if c not in REFUSED])
def test_llamafactory_example_validates(rel):
    report, version = validate(rel)
    assert report.errors == [], [str(p) for p in report.errors]
    assert version.startswith("sha256:")


@pytest.mark.parametrize("rel", sorted(REFUSED))
def test_llamafactory_example_that_cannot_run_here_is_refused_naming_the_key(rel):
    report, _ = validate(rel)
    assert any(REFUSED[rel] in str(p) for p in report.errors), [str(p) for p in report.errors]


def test_each_stage_and_prediction_are_in_the_corpus():
    stages = {TrainConfig.load(CORPUS / rel).args.get("stage") for rel in CONFIGS}
    assert {"pt", "sft", "rm", "dpo", "kto"} <= stages
    predict = TrainConfig.load(CORPUS / "examples/extras/nlg_eval/llama3_lora_predict.yaml").args
    assert predict["do_predict"] and "dataset" not in predict and "eval_dataset" in predict
    assert "template" not in TrainConfig.load(CORPUS / "examples/train_lora/qwen3_lora_pretrain.yaml").args


def test_remote_dataset_dir_validates_with_a_not_pinned_warning():
    report, version = validate("examples/train_lora/qwen3_lora_sft_ray.yaml")
    assert report.ok and version
    assert [str(w) for w in report.warnings] == [
        "dataset_dir: dataset_info.json and the datasets come from the hub repository 'llamafactory/demo_data', "
        "not pinned"
    ]


def test_zero3_of_the_deepspeed_file_reaches_llamafactorys_checks(tmp_path):
    """LLaMA-Factory refuses predict_with_generate under ZeRO-3: the stage is read from the config's own file."""
    text = (CORPUS / "examples/train_lora/qwen3_lora_sft_ds3.yaml").read_text()
    text += "val_size: 0.1\npredict_with_generate: true\n"
    for stage, refused in (("ds_z3_config.json", True), ("ds_z2_config.json", False)):
        config = TrainConfig.parse(text.replace("ds_z3_config.json", stage))
        report, _ = config.validate(DirFiles(CORPUS))
        errors = [str(p) for p in report.errors]
        assert (
            "predict_with_generate: LLaMA-Factory rejects it: `predict_with_generate` is incompatible with "
            "DeepSpeed ZeRO-3." in errors
        ) is refused, errors
