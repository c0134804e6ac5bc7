"""The preflight: what a config needs against what each launch target has, with reasons and fixes.

A `Finding` that blocks says why the run would fail on that target (it would only fail later, after queueing and
loading the model) and how to fix it: a change to the config, or another target where it runs. Findings that do not
block are said with the verdict (e.g. what a profile that does not describe its GPUs was assumed to have). The config
is never changed to fit: the fix is for its author, through a new change request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from backend.preflight.memory import MemoryEstimate, estimate
from backend.preflight.model_shape import ModelShape
from backend.preflight.needs import BF16_CAPABILITY, CUDA_QUANTIZATION, FLASH_ATTENTION, FP8_CAPABILITY, Needs
from backend.preflight.targets import Target

TIGHT = 0.9  # an estimate above this share of a GPU's memory is said to be tight (the estimate is +-25%)


@dataclass(frozen=True)
class Finding:
    key: str  # the config key it is about, as the config writes it ("bf16", "quantization_bit", "memory")
    reason: str
    fix: str = ""
    blocking: bool = True

    def text(self) -> str:
        return f"{self.reason}; fix: {self.fix}" if self.fix else self.reason


@dataclass(frozen=True)
class Verdict:
    target: Target
    findings: tuple[Finding, ...]
    memory: MemoryEstimate | None
    capacity_gib: float = 0.0  # per device (a GPU's memory, or this machine's memory without a GPU); 0: not known
    elsewhere: tuple[str, ...] = ()  # the targets that run the config as it is (for a blocked one's fix)

    @property
    def runnable(self) -> bool:
        return not self.blocking

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if not f.blocking]

    def memory_text(self) -> str:
        if self.memory is None:
            return "memory not estimated"
        of = f" of {self.capacity_gib:.0f} GiB" if self.capacity_gib else ""
        return f"{self.memory.summary()}{of}"

    def line(self) -> str:
        """One line: "profile gpu8 (8 x A100 (80 GiB, compute 8.0)): runnable, ~16.2 GiB per GPU ... of 80 GiB"."""
        head = f"{self.target.label} ({self.target.hardware}): "
        if self.runnable:
            notes = "".join(f"; note: {n.text()}" for n in self.notes)
            return f"{head}runnable, {self.memory_text()}{notes}"
        return head + "not runnable: " + self.why_not()

    def why_not(self) -> str:
        """The blocking findings with their fixes, and the targets where the config runs as it is."""
        text = "; ".join(f.text() for f in self.blocking)
        return text + (f", or launch on {' or '.join(self.elsewhere)}" if self.elsewhere and text else "")


@dataclass(frozen=True)
class Report:
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...] = field(default=())  # about the config rather than a target (e.g. model size unknown)

    def verdict(self, name: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.target.name == name), None)

    @property
    def runnable_on(self) -> list[str]:
        return [v.target.label for v in self.verdicts if v.runnable]

    def lines(self) -> list[str]:
        return [v.line() for v in self.verdicts] + list(self.notes)

    def table(self) -> str:
        """The report as a plain-text table (what `lfops preflight` prints)."""
        rows = [("target", "has", "runnable", "memory per device (estimate)", "why not / notes")]
        for v in self.verdicts:
            memory = f"{v.memory.per_device_gib:.1f} GiB" if v.memory else "-"
            if v.memory and v.capacity_gib:
                memory += f" of {v.capacity_gib:.0f}"
            why = v.why_not() if v.blocking else "; ".join(f.text() for f in v.notes) or "-"
            rows.append((v.target.label, v.target.hardware, "yes" if v.runnable else "NO", memory, why))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)
        return text + "".join(f"\n{n}" for n in self.notes)


def check(needs: Needs, shape: ModelShape | None, target: Target) -> Verdict:
    """The verdict for one target (fixes name the config changes; `preflight` adds the other targets)."""
    on_gpu = target.gpus_per_node > 0 and not needs.use_cpu
    findings = [*_precision(needs, target, on_gpu), *_kernels(needs, shape, target, on_gpu)]
    memory = estimate(needs, shape, target.world_size, on_gpu) if shape is not None else None
    capacity = target.gpu_memory_gib if on_gpu else target.host_memory_gib
    findings += _memory(memory, capacity, target, on_gpu)
    return Verdict(target, tuple(findings), memory, capacity)


def preflight(needs: Needs, shape: ModelShape | None, targets: list[Target]) -> Report:
    """The verdict for each target; a blocked target's fixes also name the targets where the config runs as it is."""
    verdicts = [check(needs, shape, t) for t in targets]
    runnable = [v.target for v in verdicts if v.runnable]
    out = [
        replace(v, elsewhere=tuple(t.label for t in runnable if t.name != v.target.name)) if v.blocking else v
        for v in verdicts
    ]
    notes = () if shape is not None else (f"model size unknown ({needs.model!r}): memory not estimated",)
    return Report(tuple(out), notes)


def _precision(needs: Needs, target: Target, on_gpu: bool) -> list[Finding]:
    where = "this machine has no GPU" if target.is_local else f"{target.label} has no GPU"
    findings = []
    if needs.needs_bf16 and not (needs.use_cpu and needs.precision == "bf16"):
        fix = "set compute type fp32 (bf16: false)" if not on_gpu else "set compute type fp16 (fp16: true, bf16: false)"
        if needs.precision == "pure_bf16":
            fix = "set compute type fp32 (pure_bf16: false)" if not on_gpu else "set compute type fp16 (fp16: true)"
        reason = f"{needs.precision_key} needs a GPU with bf16 support (compute capability {BF16_CAPABILITY}+)"
        findings += _needs_capability(target, on_gpu, BF16_CAPABILITY, needs.precision_key, reason, where, fix)
    if needs.precision == "fp16" and not on_gpu:
        findings.append(
            Finding("fp16", f"fp16 mixed precision needs a GPU; {where}", "set compute type fp32 (fp16: false)")
        )
    if needs.fp8:
        reason = f"fp8 needs a GPU with fp8 support (compute capability {FP8_CAPABILITY}+: Ada, Hopper)"
        findings += _needs_capability(target, on_gpu, FP8_CAPABILITY, "fp8", reason, where, "set fp8: false")
    return findings


def _kernels(needs: Needs, shape: ModelShape | None, target: Target, on_gpu: bool) -> list[Finding]:
    where = "this machine has no GPU" if target.is_local else f"{target.label} has no GPU"
    findings = []
    if needs.flash_attn in FLASH_ATTENTION:
        version = {"fa2": "FlashAttention-2", "fa3": "FlashAttention-3"}[needs.flash_attn]
        needed = FLASH_ATTENTION[needs.flash_attn]
        reason = f"flash_attn: {needs.flash_attn} ({version}) needs a GPU of compute capability {needed}+"
        fix = "set flash_attn: auto (or sdpa)"
        findings += _needs_capability(
            target, on_gpu, FLASH_ATTENTION[needs.flash_attn], "flash_attn", reason, where, fix
        )
        if on_gpu and target.is_local and not target.installed.get("flash_attn", True):
            findings.append(Finding("flash_attn", f"{version} needs the flash-attn package, not installed here", fix))
    if needs.quantization_bit and needs.quantization_method in CUDA_QUANTIZATION:
        package = {"bnb": "bitsandbytes", "hqq": "hqq", "eetq": "eetq"}[needs.quantization_method]
        fix = "train in 16 bits (remove quantization_bit)"
        if not on_gpu:
            reason = f"quantization_bit: {needs.quantization_bit} quantises with {package}, which needs a CUDA GPU"
            findings.append(Finding("quantization_bit", f"{reason}; {where}", fix))
        elif target.is_local and package == "bitsandbytes" and not target.installed.get("bitsandbytes", True):
            findings.append(Finding("quantization_bit", "bitsandbytes is not installed here", fix))
    elif shape is not None and shape.prequantized_bits and not on_gpu:
        reason = f"the model is a {shape.prequantized_bits}-bit quantised checkpoint (GPTQ/AWQ/AQLM): it needs a GPU"
        findings.append(Finding("model_name_or_path", f"{reason}; {where}", "use the 16-bit model"))
    if needs.deepspeed:
        if not on_gpu:
            findings.append(Finding("deepspeed", f"DeepSpeed trains on GPUs; {where}", "remove deepspeed"))
        elif target.is_local and not target.installed.get("deepspeed", True):
            findings.append(Finding("deepspeed", "DeepSpeed is not installed here", "remove deepspeed"))
    if needs.fsdp and not on_gpu:
        findings.append(Finding("fsdp", f"FSDP trains on GPUs; {where}", "remove fsdp"))
    return findings


def _needs_capability(
    target: Target, on_gpu: bool, needed: str, key: str, reason: str, where: str, fix: str
) -> list[Finding]:
    if not on_gpu:
        return [Finding(key, f"{reason}; {where}", fix)]
    ok = target.capability_at_least(needed)
    if ok is None:
        setting = "" if target.is_local else f" (set gpu_compute_capability of profile {target.name} to check)"
        return [Finding(key, f"{key}: assumed the GPUs support it{setting}", blocking=False)]
    if not ok:
        return [Finding(key, f"{reason}; {target.label} has compute capability {target.compute_capability}", fix)]
    return []


def _memory(memory: MemoryEstimate | None, capacity: float, target: Target, on_gpu: bool) -> list[Finding]:
    if memory is None:
        return []
    if not capacity:
        setting = f"set gpu_memory_gib of profile {target.name}" if not target.is_local else "not known"
        return [Finding("memory", f"memory not checked ({setting})", blocking=False)]
    device = "per GPU" if on_gpu else "of this machine's memory"
    if memory.per_device_gib > capacity:
        fix = (
            "lower per_device_train_batch_size or cutoff_len, train LoRA or QLoRA (quantization_bit: 4), "
            "or shard with DeepSpeed ZeRO-3 over more GPUs"
        )
        if not on_gpu:
            fix = "a smaller model, or a GPU"
        reason = f"needs ~{memory.per_device_gib:.1f} GiB {device}, {target.label} has {capacity:.1f} GiB"
        return [Finding("memory", reason, fix)]
    if memory.per_device_gib > TIGHT * capacity:
        reason = f"~{memory.per_device_gib:.1f} GiB of {capacity:.1f} GiB {device}: tight (the estimate is +-25%)"
        return [Finding("memory", reason, blocking=False)]
    return []
