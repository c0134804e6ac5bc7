"""Launch preflight (backend/preflight): the memory estimate against published peak memory, what a config needs
against what a target has, and where it shows: the save note, the review, the launch refusal (nothing changed), and
`lfops preflight`. This machine has no GPU, so "this machine" is the real local target without one.

The published figures and their sources are in tests/published_memory.py: LLaMA-Factory's hardware table (tolerance
25%) and Qwen's measured peaks (tolerance 35%); docs/preflight.md has every row with its error.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from backend.config import DirFiles, TrainConfig
from backend.errors import LfopsError
from backend.preflight import Preflight, check, needs_of, preflight, shape_of
from backend.preflight.memory import estimate, lora_params
from backend.preflight.model_shape import params_from_name
from backend.preflight.targets import Target, local_target
from backend.settings import ClusterProfile
from tests.published_memory import (
    BASE,
    LF_TABLE,
    LF_TOLERANCE,
    QWEN_LENGTHS,
    QWEN_MEASURED,
    QWEN_TOLERANCE,
    SIZES,
    lf_estimate,
    qwen_estimate,
)
from tests.runs_fixtures import small_config
from tests.snapshots import snapshot


@pytest.mark.parametrize("method", LF_TABLE)
@pytest.mark.parametrize("column", range(4), ids=SIZES)
def test_memory_estimate_within_25_percent_of_llamafactory_hardware_table(method, column):
    args, published = LF_TABLE[method]
    estimated = lf_estimate(args, SIZES[column])
    error = (estimated - published[column]) / published[column]
    assert abs(error) <= LF_TOLERANCE, (
        f"{method} {SIZES[column]}: {estimated:.1f} vs {published[column]} ({error:+.0%})"
    )


@pytest.mark.parametrize(("size", "method"), QWEN_MEASURED)
def test_memory_estimate_within_35_percent_of_qwen_measured_peaks(size, method):
    errors = []
    for length, measured in zip(QWEN_LENGTHS, QWEN_MEASURED[(size, method)], strict=True):
        estimated = qwen_estimate(size, method, length)
        errors.append((length, estimated, measured, (estimated - measured) / measured))
    worst = max(errors, key=lambda e: abs(e[3]))
    assert abs(worst[3]) <= QWEN_TOLERANCE, f"Qwen-{size} {method}: {errors}"


def test_the_estimate_grows_with_what_costs_memory_and_shrinks_with_sharding():
    lora = {"finetuning_type": "lora", "bf16": True}
    assert lf_estimate(lora, "7B", cutoff_len=4096) > lf_estimate(lora, "7B", cutoff_len=1024)
    assert lf_estimate({**lora, "quantization_bit": 4}, "7B") < lf_estimate(lora, "7B")
    assert lf_estimate({"finetuning_type": "full", "bf16": True}, "7B") > 5 * lf_estimate(lora, "7B")
    full = TrainConfig({**BASE, "finetuning_type": "full", "bf16": True, "model_name_or_path": "x/m-7B"})
    shape = shape_of("x/m-7B")
    zero3 = replace(needs_of(full), deepspeed=True, zero_stage=3)
    zero2 = replace(zero3, zero_stage=2)
    one, eight = estimate(zero3, shape, 1).per_device_gib, estimate(zero3, shape, 8).per_device_gib
    assert eight < one / 5  # ZeRO-3 shards weights, gradients and optimiser state over the 8 GPUs
    assert estimate(zero2, shape, 8).per_device_gib > eight  # ZeRO-2 keeps a whole 16-bit copy per GPU
    offloaded = replace(zero3, offload_optimizer=True, offload_param=True)
    assert estimate(offloaded, shape, 8).per_device_gib < eight


def test_deepspeed_stage_and_offload_come_from_the_configs_own_file(tmp_path):
    (tmp_path / "ds").mkdir()
    ds = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}}
    (tmp_path / "ds" / "z3.json").write_text(json.dumps(ds))
    config = TrainConfig({**BASE, "model_name_or_path": "m-7B", "bf16": True, "deepspeed": "ds/z3.json"})
    needs = needs_of(config, DirFiles(tmp_path))
    assert (needs.deepspeed, needs.zero_stage, needs.offload_optimizer, needs.offload_param) == (True, 3, True, True)
    assert needs_of(config, None).zero_stage is None  # unreadable here: counted as ZeRO-0, and said so
    assert any("ZeRO-0" in n for n in estimate(needs_of(config), shape_of("m-7B")).notes)


def test_model_shape_from_a_local_config_json_and_from_a_hub_name(env):
    tiny = env.ws.settings.models_dir / "tiny-llama"
    shape = shape_of(str(tiny))
    config = json.loads((tiny / "config.json").read_text())
    assert (shape.layers, shape.hidden, shape.vocab) == (
        config["num_hidden_layers"],
        config["hidden_size"],
        config["vocab_size"],
    )
    assert shape.source == "the model's config.json" and 0 < shape.params < 1e7
    assert params_from_name("meta-llama/Meta-Llama-3-8B-Instruct") == 8e9
    assert params_from_name("Qwen/Qwen3-30B-A3B") == 30e9  # the total, not the active parameters
    assert params_from_name("HuggingFaceTB/SmolLM-135M") == 135e6
    assert params_from_name("gpt2") is None and shape_of("gpt2") is None
    assert shape_of("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4").prequantized_bits == 4
    lora = needs_of(TrainConfig({**BASE, "model_name_or_path": "m", "lora_rank": 8}))
    llama7 = shape_of("x/m-7B")  # Llama-2-7B widths: 32 layers x 8 x (7 linear layers' in + out) = 19,988,480
    assert lora_params(lora, llama7) == 32 * 8 * (4 * 8192 + 3 * (4096 + 11008))


def test_this_machine_is_described_as_torch_sees_it():
    here = local_target()
    assert here.name == "local" and here.host_memory_gib > 0
    assert here.gpus_per_node == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


GPU8 = Target("gpu8", 8, gpu_model="A100", gpu_memory_gib=80, compute_capability="8.0")
T4 = Target("t4", 1, gpu_model="T4", gpu_memory_gib=15, compute_capability="7.5")
CPU = Target("local", 0, host_memory_gib=64)


def verdicts(args: dict, *targets: Target, model: str = "meta-llama/Llama-2-7b-hf"):
    needs = needs_of(TrainConfig({**BASE, "cutoff_len": 1024, "model_name_or_path": model, **args}))
    return {v.target.name: v for v in preflight(needs, shape_of(model), list(targets)).verdicts}


def test_bf16_needs_a_bf16_gpu_and_the_fix_names_the_targets_that_have_one():
    found = verdicts({"bf16": True}, CPU, GPU8, T4)
    assert found["gpu8"].runnable
    assert not found["local"].runnable and not found["t4"].runnable
    assert found["local"].line() == (
        "this machine (local runner) (no GPU, 64 GiB memory): not runnable: bf16 needs a GPU with bf16 support "
        "(compute capability 8.0+); this machine has no GPU; fix: set compute type fp32 (bf16: false), "
        "or launch on profile gpu8"
    )
    assert "profile t4 has compute capability 7.5; fix: set compute type fp16" in found["t4"].why_not()


@pytest.mark.parametrize(
    ("args", "key", "reason"),
    [
        ({"fp16": True}, "fp16", "fp16 mixed precision needs a GPU"),
        ({"quantization_bit": 4}, "quantization_bit", "quantises with bitsandbytes, which needs a CUDA GPU"),
        ({"flash_attn": "fa2"}, "flash_attn", "flash_attn: fa2 (FlashAttention-2) needs a GPU"),
        ({"fp8": True}, "fp8", "fp8 needs a GPU with fp8 support"),
        ({"deepspeed": "ds.json"}, "deepspeed", "DeepSpeed trains on GPUs"),
    ],
)
def test_what_needs_a_gpu_is_refused_on_a_machine_without_one(args, key, reason):
    verdict = verdicts(args, CPU, GPU8, model="x/m-1.5B")["local"]
    assert not verdict.runnable
    assert [f.key for f in verdict.blocking] == [key] and reason in verdict.blocking[0].reason


def test_memory_over_a_gpus_capacity_is_refused_and_an_unknown_capacity_is_a_note():
    full = {"finetuning_type": "full", "bf16": True}
    found = verdicts(full, GPU8, Target("kwok", 1))
    refused = found["gpu8"].blocking
    assert [f.key for f in refused] == ["memory"] and "GiB per GPU, profile gpu8 has 80.0 GiB" in refused[0].reason
    assert "DeepSpeed ZeRO-3" in refused[0].fix
    unknown = found["kwok"]  # a profile that does not describe its GPUs: not refused, and told how to check
    assert unknown.runnable
    assert [n.text() for n in unknown.notes] == [
        "bf16: assumed the GPUs support it (set gpu_compute_capability of profile kwok to check)",
        "memory not checked (set gpu_memory_gib of profile kwok)",
    ]


def test_every_llamafactory_example_config_gets_a_verdict_for_every_target():
    """LLaMA-Factory 0.9.5's own example configs (tests/corpus) all go through the preflight without error."""
    from pathlib import Path

    corpus = Path(__file__).parent / "corpus" / "llamafactory-0.9.5"
    for path in sorted(corpus.rglob("*.yaml")):
        config = TrainConfig.load(path)
        needs = needs_of(config, DirFiles(corpus))
        report = preflight(needs, shape_of(needs.model), [CPU, GPU8, T4])
        assert len(report.verdicts) == 3, path
        assert all(v.line() for v in report.verdicts)


def test_a_profile_describing_its_gpus_is_checked_with_typed_settings():
    from backend.errors import SettingsError
    from backend.settings import parse_cluster_profiles

    profiles = parse_cluster_profiles(
        '{"h100": {"gpus_per_node": 8, "gpu_memory_gib": "80", "gpu_compute_capability": "9.0"}}'
    )
    assert profiles["h100"].gpu_memory_gib == 80.0 and profiles["h100"].gpu_compute_capability == "9.0"
    for raw, message in (
        ('{"g": {"gpu_memory_gib": "lots"}}', "LFOPS_CLUSTER_PROFILES.g.gpu_memory_gib: must be a number >= 0"),
        ('{"g": {"gpu_compute_capability": "8"}}', "LFOPS_CLUSTER_PROFILES.g.gpu_compute_capability: must be one of"),
    ):
        with pytest.raises(SettingsError, match=message):
            parse_cluster_profiles(raw)


# ---- where it shows: save, review, launch, CLI -------------------------------------------------------------------


def with_gpu_profile(env) -> None:
    """A cluster profile whose GPUs are described (the launch on it is not made here: tests/test_preflight_k8s.py)."""
    gpu = ClusterProfile(name="gpu", gpus_per_node=1, gpu_memory_gib=80, gpu_compute_capability="9.0")
    env.ws.settings = env.ws.settings.model_copy(update={"cluster_profiles": {"gpu": gpu}})


def test_save_notes_bf16_and_local_launch_is_refused_with_the_fix_changing_nothing(env):
    with_gpu_profile(env)
    alice, rita = env.actor("alice"), env.actor("rita")
    result = env.ws.changes.save(alice, small_config(env, bf16=True), "bf16", "bf16 as LlamaBoard's default")
    assert result.change_request  # saved: the note does not refuse
    assert result.preflight[0].startswith("preflight: this machine (local runner) (no GPU, ") and result.preflight[
        0
    ].endswith(
        "not runnable: bf16 needs a GPU with bf16 support (compute capability 8.0+); this machine has no GPU; "
        "fix: set compute type fp32 (bf16: false), or launch on profile gpu"
    )
    assert "profile gpu (1 x GPU (80 GiB, compute 9.0)): runnable, ~" in result.preflight[1]
    assert result.preflight[2] == "preflight: runs on profile gpu"
    detail = env.ws.changes.show(rita, result.change_request)
    assert detail.preflight == result.preflight  # the reviewer sees which targets can run it
    env.ws.changes.approve(rita, result.change_request, "ok")
    env.ws.changes.merge(rita, result.change_request)
    before = snapshot(env)
    with pytest.raises(LfopsError) as refused:
        env.ws.runs.launch(alice, result.change_request)
    assert str(refused.value) == (
        "launch refused on this machine (local runner): bf16 needs a GPU with bf16 support (compute capability "
        "8.0+); this machine has no GPU; fix: set compute type fp32 (bf16: false), or launch on profile gpu"
    )
    assert snapshot(env) == before  # no run, no audit event, nothing in Git
    assert not list(env.ws.settings.runs_dir.glob("run-*"))


def test_an_fp32_config_saves_without_a_refusal_note_for_this_machine(env):
    result = env.ws.changes.save(env.actor("alice"), small_config(env), "fp32", "fp32 runs here")
    assert "not runnable" not in " ".join(result.preflight)
    assert "this machine (local runner)" in result.preflight[0] and "runnable, ~" in result.preflight[0]


def test_cli_preflight_prints_the_table_and_exits_by_the_verdict(env, tmp_path, capsys, monkeypatch):
    from backend.cli import main

    profiles = {"gpu": {"gpus_per_node": 2, "gpu_memory_gib": 24, "gpu_compute_capability": "8.6"}}
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(profiles))
    ws = str(env.ws.settings.workspace)
    config = tmp_path / "bf16.yaml"
    config.write_text(small_config(env, bf16=True).canonical_yaml())
    assert main(["--workspace", ws, "preflight", str(config), "--profile", "local"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["target", "has", "runnable"]
    assert "this machine (local runner)" in out and " NO " in out and "bf16 needs a GPU with bf16 support" in out
    assert main(["--workspace", ws, "preflight", str(config)]) == 0  # runnable somewhere: on profile gpu
    out = capsys.readouterr().out
    assert "profile gpu" in out and "2 x GPU (24 GiB, compute 8.6)" in out and "or launch on profile gpu" in out
    assert main(["--workspace", ws, "preflight", str(config), "--profile", "nope"]) == 2
    assert "--profile: 'nope' is not a launch target; known: local, gpu" in capsys.readouterr().err


def test_check_of_one_target_names_no_other_target():
    verdict = check(needs_of(TrainConfig({**BASE, "model_name_or_path": "m-7B", "bf16": True})), shape_of("m-7B"), CPU)
    assert not verdict.runnable and "launch on" not in verdict.why_not()


def test_preflight_targets_follow_the_settings(env):
    with_gpu_profile(env)
    assert [t.name for t in env.ws.preflight.targets()] == ["local", "gpu"]
    assert [t.name for t in Preflight(env.ws.settings.model_copy(update={"runner": "kubernetes"})).targets()] == ["gpu"]
