"""The shape of the model a config trains: parameters, layers, widths, vocabulary, what is already quantised.

Read from the model's own `config.json` (and the weight index for the exact parameter count) when
`model_name_or_path` is a folder on this machine; otherwise the parameter count is read from the name
("Meta-Llama-3-8B-Instruct" -> 8B, "SmolLM-135M" -> 0.135B) and the widths come from the nearest published
architecture in `REFERENCE_SHAPES`. A name without a size gives no shape (the memory estimate then says so).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# bytes per parameter of a checkpoint's dtype (to turn a weight index's total_size into a parameter count)
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know about a model."""

    params: float  # all parameters
    layers: int
    hidden: int
    intermediate: int  # MLP width per token (MoE: of one expert)
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False
    experts: int = 1  # MoE: experts per layer
    experts_per_token: int = 1
    prequantized_bits: int | None = None  # GPTQ/AWQ/AQLM checkpoints arrive quantised
    source: str = ""  # where the shape came from, said in the estimate

    @property
    def head_dim(self) -> int:
        return self.hidden // max(self.heads, 1)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def embedding_params(self) -> float:
        """Input embeddings and the output head: never quantised, and the output head's width sets the logits."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def layer_params(self) -> float:
        """The parameters of one decoder layer (attention and MLP; norms are negligible)."""
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return attention + 3 * self.hidden * self.intermediate * self.experts


def _arch(name: str, layers: int, hidden: int, intermediate: int, heads: int, kv: int, vocab: int) -> ModelShape:
    shape = ModelShape(0.0, layers, hidden, intermediate, heads, kv, vocab, source=f"widths of {name}")
    return replace(shape, params=shape.layers * shape.layer_params + shape.embedding_params)


# Published architectures (their config.json files), used for the widths when only the size is known.
REFERENCE_SHAPES = (
    _arch("Qwen2.5-0.5B", 24, 896, 4864, 14, 2, 151936),
    _arch("Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, 151936),
    _arch("Qwen2.5-3B", 36, 2048, 11008, 16, 2, 151936),
    _arch("Llama-2-7B", 32, 4096, 11008, 32, 32, 32000),
    _arch("Llama-3-8B", 32, 4096, 14336, 32, 8, 128256),
    _arch("Llama-2-13B", 40, 5120, 13824, 40, 40, 32000),
    _arch("LLaMA-30B", 60, 6656, 17920, 52, 52, 32000),
    _arch("Llama-2-70B", 80, 8192, 28672, 64, 8, 32000),
    _arch("Llama-3.1-405B", 126, 16384, 53248, 128, 8, 128256),
)

_SIZE = re.compile(r"(?<![\w.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z0-9])")
_PREQUANTIZED = (("aqlm", 2), ("gptq", 4), ("awq", 4), ("int4", 4), ("int8", 8))


def params_from_name(name: str) -> float | None:
    """The parameter count a model id states ("Qwen3-30B-A3B" -> 30e9: the first size is the total)."""
    for part in re.split(r"[/_-]", name):
        m = _SIZE.search(part)
        if m:
            experts = int(m.group(1) or 1)
            scale = 1e9 if m.group(3) in "bB" else 1e6
            return experts * float(m.group(2)) * scale
    return None


def reference_shape(params: float, source: str) -> ModelShape:
    """The nearest published architecture (by log of the size), carrying `params` as its parameter count."""
    nearest = min(REFERENCE_SHAPES, key=lambda s: abs(math.log(s.params / params)))
    return replace(nearest, params=params, source=f"{source}; {nearest.source}")


def prequantized_bits_from_name(name: str) -> int | None:
    lowered = name.lower()
    return next((bits for marker, bits in _PREQUANTIZED if marker in lowered), None)


def shape_of(model: str) -> ModelShape | None:
    """The shape of `model` (a local folder or a hub id); None when neither its config nor its name tells."""
    path = Path(model)
    if model and path.is_dir() and (path / "config.json").is_file():
        try:
            shape = shape_from_config(json.loads((path / "config.json").read_text()), path)
        except (ValueError, TypeError, KeyError, RecursionError):
            shape = None
        if shape is not None:
            return shape
    params = params_from_name(path.name if path.name else model)
    if params is None:
        return None
    shape = reference_shape(params, f"size from the name {path.name or model!r}")
    return replace(shape, prequantized_bits=prequantized_bits_from_name(model))


def shape_from_config(config: dict[str, Any], folder: Path | None = None) -> ModelShape | None:
    """A shape from a Hugging Face `config.json` (a multimodal model's `text_config` when it has one)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    get = lambda *keys, default=None: next((text[k] for k in keys if isinstance(text.get(k), int)), default)  # noqa: E731
    hidden = get("hidden_size", "n_embd", "d_model")
    layers = get("num_hidden_layers", "n_layer", "num_layers")
    heads = get("num_attention_heads", "n_head")
    vocab = get("vocab_size")
    if not all((hidden, layers, heads, vocab)):
        return None
    experts = get("num_local_experts", "num_experts", "n_routed_experts", default=1)
    intermediate = get("moe_intermediate_size", default=None) if experts > 1 else None
    intermediate = intermediate or get("intermediate_size", "n_inner", "ffn_hidden_size", default=4 * hidden)
    shape = ModelShape(
        params=0.0,
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=get("num_key_value_heads", "multi_query_group_num", default=heads),
        vocab=vocab,
        tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        experts=experts,
        experts_per_token=get("num_experts_per_tok", "moe_topk", default=1) if experts > 1 else 1,
        prequantized_bits=_quantized_bits(config),
        source="the model's config.json",
    )
    counted = _params_from_weights(folder, config) if folder is not None else None
    return replace(shape, params=counted or shape.layers * shape.layer_params + shape.embedding_params)


def _quantized_bits(config: dict[str, Any]) -> int | None:
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return None
    bits = quant.get("bits") or quant.get("w_bit")
    return bits if isinstance(bits, int) and not isinstance(bits, bool) else 4


def _params_from_weights(folder: Path, config: dict[str, Any]) -> float | None:
    """The exact count from the weight index's total size (or the weight files' sizes) and the checkpoint dtype."""
    dtype_bytes = _DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or ""), None)
    if dtype_bytes is None or _quantized_bits(config):
        return None
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
            if isinstance(total, int) and total > 0:
                return total / dtype_bytes
        files = list(folder.glob("*.safetensors"))
        if files:
            return sum(f.stat().st_size for f in files) / dtype_bytes
    except (OSError, ValueError, AttributeError):
        return None
    return None
