"""Published peak GPU memory of fine-tuning runs, and the lfops estimate for the same settings: what
tests/test_preflight.py checks the estimate against and bench/preflight_memory.py prints (docs/preflight.md).

- LLaMA-Factory's README, "Hardware Requirement" (hiyouga/LlamaFactory README.md at 142e1ce4; marked "estimated" by
  LLaMA-Factory): GB for 7B/14B/30B/70B by method, here with batch size 1 and cutoff length 1024 (the settings of
  LLaMA-Factory's own memory benchmark).
- Qwen's README, "Profiling of Memory and Speed" (QwenLM/Qwen README.md at 03cd81f5): peak memory measured on one
  A100-80GB for Qwen-1.8B/7B/14B/72B: LoRA (rank 64, all linear layers), LoRA with trained embeddings, Q-LoRA (GPTQ
  Int4 checkpoints), batch 1, FlashAttention-2, gradient checkpointing, 256 to 8192 tokens. Qwen's own training
  script, not LLaMA-Factory: it trains the embeddings in 16 bits where LLaMA-Factory upcasts them to fp32.
"""

from __future__ import annotations

from dataclasses import replace

from backend.config import TrainConfig
from backend.preflight import needs_of, shape_of
from backend.preflight.memory import estimate
from backend.preflight.model_shape import shape_from_config

LF_TOLERANCE = 0.25
QWEN_TOLERANCE = 0.35
BASE = {"stage": "sft", "do_train": True, "dataset": "x", "template": "default", "per_device_train_batch_size": 1}

# LLaMA-Factory README, Hardware Requirement (GB): method -> (config, {size: GB}). The "Freeze" method shares the
# LoRA row there; LLaMA-Factory's default freeze (2 trainable layers in fp32 with AdamW) is not in the table.
LF_TABLE = {
    "Full (bf16 or fp16), 32 bits": ({"finetuning_type": "full", "bf16": True}, (120, 240, 600, 1200)),
    "Full (pure_bf16), 16 bits": ({"finetuning_type": "full", "pure_bf16": True}, (60, 120, 300, 600)),
    "LoRA, 16 bits": ({"finetuning_type": "lora", "bf16": True}, (16, 32, 64, 160)),
    "QLoRA, 8 bits": ({"finetuning_type": "lora", "bf16": True, "quantization_bit": 8}, (10, 20, 40, 80)),
    "QLoRA, 4 bits": ({"finetuning_type": "lora", "bf16": True, "quantization_bit": 4}, (6, 12, 24, 48)),
    "QLoRA, 2 bits": (
        {"finetuning_type": "lora", "bf16": True, "quantization_bit": 2, "quantization_method": "hqq"},
        (4, 8, 16, 24),
    ),
}
SIZES = ("7B", "14B", "30B", "70B")

# Qwen README (v1 models): their config.json widths, and measured peak GB at 256..8192 tokens.
QWEN_SHAPES = {
    "1.8B": {"num_hidden_layers": 24, "hidden_size": 2048, "intermediate_size": 5504, "num_attention_heads": 16},
    "7B": {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32},
    "14B": {"num_hidden_layers": 40, "hidden_size": 5120, "intermediate_size": 13696, "num_attention_heads": 40},
    "72B": {"num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 24576, "num_attention_heads": 64},
}
QWEN_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
QWEN_LORA = {"finetuning_type": "lora", "lora_rank": 64, "lora_target": "c_attn,c_proj,w1,w2", "flash_attn": "fa2"}
QWEN_MEASURED = {
    ("1.8B", "LoRA"): (6.7, 7.4, 8.4, 11.0, 16.2, 21.8),
    ("1.8B", "LoRA (emb)"): (13.7, 14.0, 14.0, 15.1, 19.7, 27.7),
    ("1.8B", "Q-LoRA"): (5.8, 6.0, 6.6, 7.8, 10.2, 15.8),
    ("7B", "LoRA"): (20.1, 20.4, 21.5, 23.8, 29.7, 36.6),
    ("7B", "LoRA (emb)"): (33.7, 34.1, 35.2, 35.1, 39.2, 48.5),
    ("7B", "Q-LoRA"): (11.5, 11.5, 12.3, 13.9, 16.9, 23.5),
    ("14B", "LoRA"): (34.6, 35.1, 35.3, 37.4, 42.5, 55.2),
    ("14B", "LoRA (emb)"): (51.2, 51.1, 51.5, 54.1, 56.8, 67.7),
    ("14B", "Q-LoRA"): (18.7, 18.4, 18.9, 19.9, 23.0, 27.9),
    ("72B", "Q-LoRA"): (61.4, 61.4, 62.9, 64.1, 68.0, 75.6),
}
QWEN_METHODS = {
    "LoRA": {"bf16": True},
    "LoRA (emb)": {"bf16": True, "additional_target": "wte,lm_head"},
    "Q-LoRA": {"fp16": True},  # a GPTQ Int4 checkpoint (Qwen-*-Chat-Int4)
}


def lf_estimate(args: dict, size: str, cutoff_len: int = 1024) -> float:
    config = TrainConfig({**BASE, **args, "cutoff_len": cutoff_len, "model_name_or_path": f"example/model-{size}"})
    needs = needs_of(config)
    return estimate(needs, shape_of(needs.model)).per_device_gib


def qwen_estimate(size: str, method: str, length: int) -> float:
    config = TrainConfig({**BASE, **QWEN_LORA, **QWEN_METHODS[method], "cutoff_len": length, "model_name_or_path": "q"})
    vocab = 151936 if size in ("1.8B", "7B") else 152064
    shape = shape_from_config({**QWEN_SHAPES[size], "vocab_size": vocab})
    if method == "Q-LoRA":
        shape = replace(shape, prequantized_bits=4)
    return estimate(needs_of(config), shape).per_device_gib
