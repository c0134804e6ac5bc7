"""An estimate of the memory one device needs to train a config: weights, trainable state, activations, overhead.

The parts, in bytes, for a model of P parameters, L layers, hidden width h, MLP width I, key/value width k,
vocabulary V, on a world of N devices (docs/preflight.md has the derivation and the comparison with published peaks):

- weights: frozen parameters at their loaded width. On a GPU LLaMA-Factory loads in 16 bits even for an fp32 config
  (`infer_optim_dtype`); on a CPU in 32 bits unless bf16 is asked for. On-the-fly quantisation (quantization_bit) or
  a GPTQ/AWQ/AQLM checkpoint stores the linear layers at bits/8 bytes plus block constants; embeddings and the output
  head stay 16-bit.
- trainable state per trainable parameter: weights, gradients and optimiser state. LLaMA-Factory upcasts trainable
  parameters to fp32 (4 + 4 bytes) unless pure_bf16 (2 + 2); AdamW keeps two states of the parameter's width (8, or
  4 for pure_bf16), 8-bit optimisers 2, SGD/LOMO none; mixed precision also keeps a 16-bit copy of each fp32 weight
  in autocast's cache (2). Full tuning trains all P; freeze tuning the last `freeze_trainable_layers` layers; LoRA
  r x (in + out) per targeted linear layer (plus any `additional_target` module in full).
- DeepSpeed ZeRO (bf16/fp16 on, the ZeRO paper's 2 + 2 + 12 bytes): stage 1 shards the optimiser state and fp32
  master weights over N, stage 2 the gradients too, stage 3 the parameters too; offloaded parts leave the GPU.
- activations for batch b and cutoff length s: with gradient checkpointing (LLaMA-Factory's default) each layer keeps
  its input (b s h) and one layer is recomputed at a time; without it every layer keeps 6h + 2k + 4I values per token;
  eager attention adds the score matrices. The logits take b s V x 12 bytes (16-bit logits, their fp32 upcast and
  log-softmax for the loss) unless the Liger kernel fuses the loss.
- allocator: 8% on top of all that (PyTorch's caching allocator reserves more than it hands out), then 1 GiB for the
  CUDA context, cuBLAS workspaces and NCCL buffers (on a CPU, the Python process).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.preflight.model_shape import ModelShape
from backend.preflight.needs import Needs

GIB = 1024**3
OVERHEAD_GIB = 1.0  # CUDA context, cuBLAS workspaces, NCCL buffers (or the Python process on a CPU)
FRAGMENTATION = 1.08  # PyTorch's caching allocator reserves more than it hands out (what nvidia-smi shows)
LOGIT_BYTES = 12  # per logit: 16-bit logits, their fp32 upcast and the log-softmax kept for the loss's backward
_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "word_embeddings", "output")


@dataclass(frozen=True)
class MemoryEstimate:
    per_device_gib: float
    parts: tuple[tuple[str, float], ...]  # (what, GiB), in the order of the total
    on_gpu: bool
    world_size: int
    shape_source: str
    notes: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        return "GPU" if self.on_gpu else "CPU (host memory)"

    def summary(self) -> str:
        parts = ", ".join(f"{what} {gib:.1f}" for what, gib in self.parts if gib >= 0.05)
        where = "per GPU" if self.on_gpu else "of host memory"
        world = f" on {self.world_size} GPUs" if self.on_gpu and self.world_size > 1 else ""
        return f"~{self.per_device_gib:.1f} GiB {where}{world} ({parts} GiB)"


def estimate(needs: Needs, shape: ModelShape, world_size: int = 1, on_gpu: bool = True) -> MemoryEstimate:
    """The memory one device needs to train `needs` on a model of `shape`, with `world_size` devices in all."""
    world = max(world_size, 1)
    notes = [f"model shape from {shape.source}"]
    trainable, frozen = _split(needs, shape)
    frozen_bytes = _frozen_weight_bytes(needs, shape, frozen, on_gpu)
    state_parts, state_notes = _trainable_state(needs, trainable, world, on_gpu)
    notes += state_notes
    if needs.deepspeed and needs.zero_stage == 3 and needs.offload_param and on_gpu:
        frozen_bytes = 0.0
    elif (needs.deepspeed and needs.zero_stage == 3) or needs.fsdp:
        frozen_bytes /= world  # ZeRO-3 / FSDP shard the frozen weights too
    reference = 0.0
    if needs.stage in ("dpo", "kto") and needs.finetuning_type in ("full", "freeze"):
        reference = shape.params * 2  # a frozen 16-bit copy of the model as the reference model
        notes.append("a 16-bit reference model for the preference loss")
    activations, logits = _activations(needs, shape, on_gpu)
    parts = [
        ("weights", frozen_bytes / GIB),
        *[(what, b / GIB) for what, b in state_parts],
        ("reference model", reference / GIB),
        ("activations", activations / GIB),
        ("logits", logits / GIB),
    ]
    parts = [(what, gib * FRAGMENTATION) for what, gib in parts if gib > 0]
    parts.append(("CUDA and buffers" if on_gpu else "process", OVERHEAD_GIB))
    if needs.unmodelled:
        notes.append("not modelled: " + ", ".join(needs.unmodelled))
    return MemoryEstimate(sum(g for _, g in parts), tuple(parts), on_gpu, world, shape.source, tuple(notes))


def _split(needs: Needs, shape: ModelShape) -> tuple[float, float]:
    """(trainable, frozen) parameter counts."""
    if needs.finetuning_type == "full":
        return shape.params, 0.0
    if needs.finetuning_type == "freeze":
        layers = min(abs(needs.freeze_trainable_layers), shape.layers)
        trainable = min(layers * shape.layer_params, shape.params)
        return trainable, shape.params - trainable
    return lora_params(needs, shape), shape.params  # LoRA / OFT: adapters beside the whole frozen model


def lora_params(needs: Needs, shape: ModelShape) -> float:
    """Adapter parameters: rank x (in + out) for each targeted linear layer, plus `additional_target` modules."""
    h, k, inter, r = shape.hidden, shape.kv_dim, shape.intermediate, needs.lora_rank
    e = shape.experts  # an MoE layer has an adapter on each expert's MLP
    sizes = {  # (in, out, how many per layer)
        "q_proj": (h, h, 1),
        "k_proj": (h, k, 1),
        "v_proj": (h, k, 1),
        "o_proj": (h, h, 1),
        "gate_proj": (h, inter, e),
        "up_proj": (h, inter, e),
        "down_proj": (inter, h, e),
    }
    named = [t for t in needs.lora_target if t in sizes]
    # "all" (the default), or names this table does not know (c_attn, W_pack...): every linear layer
    targets = named if named and "all" not in needs.lora_target else list(_LORA_MODULES)
    per_layer = sum(r * (sizes[t][0] + sizes[t][1]) * sizes[t][2] for t in targets)
    extra = sum(shape.vocab * shape.hidden for t in needs.additional_target if t in _EMBEDDING_MODULES)
    return shape.layers * per_layer + extra


def _frozen_weight_bytes(needs: Needs, shape: ModelShape, frozen: float, on_gpu: bool) -> float:
    if frozen <= 0:
        return 0.0
    bits = needs.quantization_bit or shape.prequantized_bits
    width = 2 if on_gpu or needs.half_precision else 4
    if not bits:
        return frozen * width
    linear = max(frozen - shape.embedding_params, 0.0)
    return linear * quantized_bytes(bits, needs) + (frozen - linear) * 2


def quantized_bytes(bits: int, needs: Needs) -> float:
    """Bytes per quantised weight: bits/8 plus the block constants (bitsandbytes: an fp32 scale per 64 weights, or
    8 bits per 64 and an fp32 per 16384 with double quantisation; GPTQ/AWQ: a 16-bit scale and zero per 128)."""
    if needs.quantization_bit and needs.quantization_method == "bnb" and bits == 4:
        return 0.5 + (1 / 64 + 4 / (64 * 256) if needs.double_quantization else 4 / 64)
    if needs.quantization_bit and needs.quantization_method == "bnb" and bits == 8:
        return 1.0 + 4 / 4096  # LLM.int8: a scale per row
    return bits / 8 + 4 / 128


def optimizer_state_bytes(needs: Needs) -> float:
    """Optimiser state per trainable parameter."""
    optim = needs.optim.lower()
    if "8bit" in optim:
        return 2.0
    if optim.startswith(("sgd", "lomo", "adalomo")) or "adafactor" in optim:
        return 0.0  # no state (SGD without momentum, LOMO), or factored second moments (Adafactor): negligible
    return 4.0 if needs.precision == "pure_bf16" else 8.0


def _trainable_state(
    needs: Needs, trainable: float, world: int, on_gpu: bool
) -> tuple[list[tuple[str, float]], list[str]]:
    """(part, bytes) of the trainable parameters' weights, gradients and optimiser state on one device."""
    what = "LoRA adapters" if needs.finetuning_type in ("lora", "oft") else "trainable weights"
    optim = optimizer_state_bytes(needs)
    if needs.deepspeed and on_gpu:
        stage = needs.zero_stage if needs.zero_stage is not None else 0
        notes = [] if needs.zero_stage is not None else ["DeepSpeed file not readable here: counted as ZeRO-0"]
        params = 0.0 if (stage == 3 and needs.offload_param) else trainable * 2 / (world if stage == 3 else 1)
        grads = trainable * 2 / (world if stage >= 2 else 1)
        master = 0.0 if needs.offload_optimizer else trainable * (4 + optim) / (world if stage >= 1 else 1)
        notes.append(f"DeepSpeed ZeRO-{stage} over {world} device(s)")
        return [(what, params), ("gradients", grads), ("optimizer state", master)], notes
    weight = 2.0 if needs.precision == "pure_bf16" else 4.0
    copy = 2.0 if on_gpu and needs.precision in ("bf16", "fp16") and needs.finetuning_type != "lora" else 0.0
    divide = world if needs.fsdp else 1
    parts = [
        (what, trainable * (weight + copy) / divide),
        ("gradients", trainable * weight / divide),
        ("optimizer state", trainable * optim / divide),
    ]
    return parts, (["FSDP counted as full sharding"] if needs.fsdp else [])


def _activations(needs: Needs, shape: ModelShape, on_gpu: bool) -> tuple[float, float]:
    """(activation bytes, logit bytes) for one device's micro-batch."""
    tokens = needs.batch_size * needs.cutoff_len
    width = 2 if on_gpu or needs.half_precision else 4
    per_layer = 6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate * shape.experts_per_token
    if needs.flash_attn == "disabled":  # eager attention keeps the scores and the probabilities
        per_layer += 2 * shape.heads * needs.cutoff_len
    if needs.gradient_checkpointing:
        values = shape.layers * tokens * shape.hidden + tokens * per_layer
    else:
        values = shape.layers * tokens * per_layer
    logits = 0.0 if needs.liger_kernel else tokens * shape.vocab * LOGIT_BYTES
    return values * width, logits
