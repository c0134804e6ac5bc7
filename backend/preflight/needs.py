"""What a config needs from the machine that trains it, read from its arguments with LLaMA-Factory's own defaults.

Precision (bf16, fp16, fp8, pure bf16, fp32), FlashAttention kernels, DeepSpeed (its ZeRO stage and offloading, from
the config's DeepSpeed file), quantisation (bitsandbytes and the other on-the-fly methods need CUDA), and what the
memory estimate reads: method, batch size, cutoff length, gradient checkpointing, LoRA rank and targets, optimiser.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from backend.config import Files, TrainConfig, schema

# Quantisation done while loading the model: these libraries run on CUDA only.
CUDA_QUANTIZATION = ("bnb", "hqq", "eetq")
# FlashAttention kernels and the compute capability they need (FlashAttention-2: Ampere, FlashAttention-3: Hopper).
FLASH_ATTENTION = {"fa2": "8.0", "fa3": "9.0"}
BF16_CAPABILITY = "8.0"  # Ampere and newer compute in bf16
FP8_CAPABILITY = "8.9"  # Ada and Hopper have fp8 tensor cores


@dataclass(frozen=True)
class Needs:
    precision: str  # bf16 | fp16 | fp32 | pure_bf16
    fp8: bool
    finetuning_type: str
    stage: str
    quantization_bit: int | None
    quantization_method: str
    double_quantization: bool
    flash_attn: str
    deepspeed: bool
    zero_stage: int | None  # None: no DeepSpeed, or a DeepSpeed file this check cannot read
    offload_optimizer: bool
    offload_param: bool
    fsdp: bool
    use_cpu: bool
    batch_size: int
    cutoff_len: int
    gradient_checkpointing: bool
    lora_rank: int
    lora_target: tuple[str, ...]
    additional_target: tuple[str, ...]
    freeze_trainable_layers: int
    optim: str
    liger_kernel: bool
    model: str
    unmodelled: tuple[str, ...] = field(default=())  # features the memory estimate does not model, said with it

    @property
    def half_precision(self) -> bool:
        return self.precision in ("bf16", "fp16", "pure_bf16")

    @property
    def needs_bf16(self) -> bool:
        return self.precision in ("bf16", "pure_bf16")

    @property
    def precision_key(self) -> str:
        """The config key that asks for the precision, as the user wrote it."""
        return {"pure_bf16": "pure_bf16", "bf16": "bf16", "fp16": "fp16"}.get(self.precision, "bf16")


def needs_of(config: TrainConfig, files: Files | None = None) -> Needs:
    """What `config` needs; `files` (the config repository at its commit) lets its DeepSpeed file be read."""
    specs = schema()
    args = config.args

    def arg(key: str) -> Any:
        value = args.get(key, specs[key].default if key in specs else None)
        return getattr(value, "value", value)  # LLaMA-Factory's enums are str enums

    precision = "pure_bf16" if arg("pure_bf16") else "bf16" if arg("bf16") else "fp16" if arg("fp16") else "fp32"
    deepspeed = _deepspeed_config(args.get("deepspeed"), files)
    zero = deepspeed.get("zero_optimization") if isinstance(deepspeed, dict) else None
    zero = zero if isinstance(zero, dict) else {}
    stage = config.deepspeed_zero_stage(files) if args.get("deepspeed") else None
    unmodelled = [
        name
        for name, on in (
            ("GaLore", arg("use_galore")),
            ("APOLLO", arg("use_apollo")),
            ("BAdam", arg("use_badam")),
            ("Unsloth", arg("use_unsloth")),
            (f"stage {arg('stage')} (its reward or value model)", arg("stage") in ("ppo",)),
        )
        if on
    ]
    return Needs(
        precision=precision,
        fp8=bool(arg("fp8")),
        finetuning_type=str(arg("finetuning_type")),
        stage=str(arg("stage")),
        quantization_bit=arg("quantization_bit"),
        quantization_method=str(arg("quantization_method")),
        double_quantization=bool(arg("double_quantization")),
        flash_attn=str(arg("flash_attn")),
        deepspeed=bool(args.get("deepspeed")),
        zero_stage=stage,
        offload_optimizer=_offloaded(zero.get("offload_optimizer")),
        offload_param=_offloaded(zero.get("offload_param")),
        fsdp=bool(args.get("fsdp")),
        use_cpu=bool(arg("use_cpu")),
        batch_size=int(arg("per_device_train_batch_size") or 1),
        cutoff_len=int(arg("cutoff_len") or 1),
        gradient_checkpointing=not arg("disable_gradient_checkpointing"),
        lora_rank=int(arg("lora_rank") or 8),
        lora_target=_names(arg("lora_target")),
        additional_target=_names(arg("additional_target")),
        freeze_trainable_layers=int(arg("freeze_trainable_layers") or 0),
        optim=str(arg("optim") or ""),
        liger_kernel=bool(arg("enable_liger_kernel")),
        model=config.base_model,
        unmodelled=tuple(unmodelled),
    )


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in str(value or "").split(",") if v.strip())


def _offloaded(section: Any) -> bool:
    return isinstance(section, dict) and str(section.get("device", "none")).lower() in ("cpu", "nvme")


def _deepspeed_config(value: Any, files: Files | None) -> dict | None:
    """The DeepSpeed config: given inline, or the file in the repository (None when it cannot be read here)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or files is None:
        return None
    path = posixpath.normpath(value)
    if value.startswith("/") or path.startswith(".."):
        return None
    raw = files.read(path) if not files.is_link(path) else None
    try:
        doc = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
