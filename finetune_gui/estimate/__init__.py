"""Estimates before loading: exact trainable parameters and the peak memory of a training step.

Works from an architecture config alone — no weights, no download, no GPU needed — fast enough
for a slider (about a millisecond per estimate once the config is read; see
``bench/estimate_speed.py``).

    >>> from finetune_gui.config import RunConfig
    >>> from finetune_gui.estimate import estimate
    >>> cfg = RunConfig()
    >>> cfg.set("model.name_or_path", "meta-llama/Llama-2-7b-hf")
    >>> cfg.set("lora.target_modules", ["q_proj", "v_proj"]); cfg.set("lora.r", 8)
    >>> e = estimate(cfg, gpu_bytes=COMMON_GPUS["T4 16GB"])
    >>> e.trainable_params, e.total_params
    (4194304, 6742609920)

The device: a GPU when ``gpu_bytes`` is given or a GPU is detected (NVML) and ``model.device``
allows it, otherwise the CPU, whose budget is the RAM available now. ``fits`` compares
``peak_bytes`` minus what a paged optimizer can spill to CPU RAM with that budget.
How each term is modelled, and what could not be measured: see ``memory.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config import RunConfig
from ..errors import ConfigError
from ..plan import ExecutionPlan, Machine, resolve_plan
from .data_shape import data_shape
from .arch import (Arch, arch_from_dict, find_config, linear_names_from_config, load_arch,
                   preset_name)
from .gpus import COMMON_GPUS, detected_gpu, gpu_bytes_for
from .memory import Memory, Setup, estimate_memory, weight_bytes
from .params import ParamCount, count_parameters

__all__ = ["COMMON_GPUS", "Estimate", "Setup", "arch_from_dict", "count_parameters", "estimate",
           "estimate_report", "find_config", "gpu_bytes_for", "linear_names_from_config",
           "load_arch", "max_batch_size_fit", "max_seq_len_fit", "preset_name", "weight_bytes"]

MAX_SEQ = 1_048_576
MAX_BATCH = 4096


@dataclass
class Estimate:
    trainable_params: int
    total_params: int
    peak_bytes: int
    breakdown: dict[str, int]
    device: str                  # cuda | cpu
    fits: bool | None
    budget_bytes: int | None = None
    pageable_bytes: int = 0
    source: str = ""
    setup: Setup | None = field(default=None, repr=False)
    plan: ExecutionPlan | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"trainable_params": self.trainable_params, "total_params": self.total_params,
                "peak_bytes": self.peak_bytes, "breakdown": dict(self.breakdown),
                "device": self.device, "fits": self.fits}


def _counts(arch: Arch, config: RunConfig) -> ParamCount:
    lc = config.lora
    targets = lc.target_modules if isinstance(lc.target_modules, str) else tuple(lc.target_modules)
    key = (lc.r, targets, lc.bias, lc.use_dora, tuple(lc.modules_to_save or ()), lc.last_layers)
    cache = arch.__dict__.setdefault("_counts", {})
    if key not in cache:
        cache[key] = count_parameters(
            arch, lc.r, targets if isinstance(targets, str) else list(targets), bias=lc.bias,
            use_dora=lc.use_dora, modules_to_save=list(lc.modules_to_save or ()),
            last_layers=lc.last_layers)
    return cache[key]


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def setup_for(config: RunConfig, arch: Arch, device: str, gpu_bytes: int | None = None
              ) -> Setup:
    """The memory-relevant choices of the execution plan for ``config`` on ``device``
    (a what-if GPU of ``gpu_bytes`` when this machine has none)."""
    return plan_and_setup(config, arch, device, gpu_bytes)[1]


def plan_and_setup(config: RunConfig, arch: Arch, device: str, gpu_bytes: int | None = None
                   ) -> tuple[ExecutionPlan, Setup]:
    machine = Machine.detect()
    if device == "cuda" and not machine.cuda:
        machine = machine.with_gpu(gpu_bytes or 0)
    elif device == "cpu":
        machine = replace(machine, cuda=False)
    plan = resolve_plan(config, machine, base_params=arch_base_params(arch))
    lc, t = config.lora, config.train
    quantization = "none" if plan.dequantise_4bit else config.model.quantization
    weight = DTYPE_BYTES.get(plan.base_dtype, DTYPE_BYTES.get(plan.compute_dtype, 2))
    shape = data_shape(config)
    # DPO and ORPO run the chosen and the rejected answers of each pair as one batch (the
    # reference log-probs are computed once before training)
    paired = 2 if t.method in ("dpo", "orpo") else 1
    return plan, Setup(device=plan.device, quantization=quantization, double_quant=True,
                 weight_bytes=weight, precision=plan.precision, optimizer=plan.optimizer,
                 batch_size=t.batch_size * paired,
                 seq_len=shape.longest if shape else t.max_seq_len,
                 gradient_checkpointing=t.gradient_checkpointing,
                 attn_implementation=plan.attention, lora_dropout=lc.dropout,
                 lora_r=lc.r, use_dora=lc.use_dora, adapted_layers=lc.last_layers,
                 answer_tokens=(shape.longest_answer if shape else None)
                 if plan.uses("answer_head") else None, answer_head=plan.uses("answer_head"),
                 kept_layer_tokens=_kept_layer_tokens(plan, shape, arch, machine),
                 processes=t.processes, fused_lora=plan.uses("fused_lora"),
                 cpu_kernels=plan.uses("cpu_kernels") and _kernels_cover(arch))


def _kernels_cover(arch: Arch) -> bool:
    """Whether the fused CPU kernels replace this model's norms, MLP and attention softmax."""
    from ..speedups.cpu_kernels import MODEL_TYPES  # as resolve_plan imports the speed-ups
    return arch.model_type in MODEL_TYPES and arch.config.get("hidden_act", "silu") == "silu"


def _kept_layer_tokens(plan: ExecutionPlan, shape, arch: Arch, machine: Machine) -> int:
    """Tokens whose frozen lower layers' output training keeps (``frozen_bottom``): all of
    the data's when their records fit the store's budget, as training decides; else none."""
    if not plan.uses("frozen_bottom") or shape is None:
        return 0
    from ..speedups import frozen_bottom  # as resolve_plan imports the speed-ups: lazily
    fits = frozen_bottom.store_fits(shape.tokens, arch.hidden,
                                    DTYPE_BYTES.get(plan.base_dtype, 4),
                                    frozen_bottom.store_budget(machine.ram_available_bytes))
    return shape.tokens if fits else 0


def arch_base_params(arch: Arch) -> int:
    return sum(m.numel for m in arch.modules())  # tied weights counted once


def _device_and_budget(config: RunConfig, gpu_bytes: int | None) -> tuple[str, int | None]:
    if gpu_bytes is not None:
        if gpu_bytes <= 0:
            raise ConfigError(f"GPU memory must be positive, got {gpu_bytes}")
        return "cuda", int(gpu_bytes)
    want = config.model.device
    gpu = detected_gpu() if want in ("auto", "cuda") else None
    if gpu is not None:
        return "cuda", gpu.total_bytes
    if want == "cuda":
        return "cuda", None  # no GPU here: estimate for one, verdict unknown
    import psutil
    return "cpu", int(psutil.virtual_memory().available)


# What a card may be planned to: the rest is headroom for what no estimate sees exactly
# (allocator fragmentation spikes, cuDNN/cuBLAS workspaces, a display, another process).
GPU_USABLE_SHARE = 0.90


def _fits(mem: Memory, budget: int | None, device: str = "cuda") -> bool | None:
    if budget is None:
        return None
    usable = budget * (GPU_USABLE_SHARE if device == "cuda" else 1.0)
    return mem.peak_bytes - mem.pageable_bytes <= usable


def estimate(config: RunConfig, *, gpu_bytes: int | None = None) -> Estimate:
    """Trainable/total parameters and the peak memory of training ``config``, with a breakdown.

    ``gpu_bytes``: estimate for a GPU with this much memory (e.g. ``COMMON_GPUS['T4 16GB']``)
    instead of the detected device. Raises ConfigError / ModelLoadError with a one-line message
    when the model's config cannot be found or the LoRA settings match nothing.
    """
    arch = load_arch(config.model.name_or_path)
    pc = _counts(arch, config)
    device, budget = _device_and_budget(config, gpu_bytes)
    plan, setup = plan_and_setup(config, arch, device, budget)
    mem = estimate_memory(arch, pc, setup)
    return Estimate(trainable_params=pc.trainable, total_params=pc.total,
                    peak_bytes=mem.peak_bytes, breakdown=mem.breakdown, device=device,
                    fits=_fits(mem, budget, device), budget_bytes=budget,
                    pageable_bytes=mem.pageable_bytes, source=arch.source, setup=setup,
                    plan=plan)


def _largest_fitting(config: RunConfig, budget_bytes: int, field_name: str, lo: int,
                     hi: int) -> int:
    arch = load_arch(config.model.name_or_path)
    pc = _counts(arch, config)
    base = setup_for(config, arch, "cuda", budget_bytes)
    # a fit must hold for any data: rows of max_seq_len, every position projected
    base.seq_len, base.answer_tokens = config.train.max_seq_len, None

    def ok(value: int) -> bool:
        setattr(base, field_name, value)
        return bool(_fits(estimate_memory(arch, pc, base), budget_bytes))

    if not ok(lo):
        return 0
    while lo < hi:  # largest value that fits; memory grows with both
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_seq_len_fit(config: RunConfig, budget_bytes: int) -> int:
    """Largest train.max_seq_len that fits a GPU of ``budget_bytes`` at the configured batch size.

    Capped at the model's max_position_embeddings; 0 when not even 8 tokens fit.
    """
    cap = load_arch(config.model.name_or_path).config.get("max_position_embeddings") or MAX_SEQ
    return _largest_fitting(config, budget_bytes, "seq_len", 8, min(int(cap), MAX_SEQ))


def max_batch_size_fit(config: RunConfig, budget_bytes: int) -> int:
    """Largest train.batch_size that fits a GPU of ``budget_bytes`` at the configured length."""
    return _largest_fitting(config, budget_bytes, "batch_size", 1, MAX_BATCH)


def estimate_report(config: RunConfig, vram_gib: float | None = None) -> dict:
    """What ``python -m finetune_gui estimate`` prints as JSON.

    Without ``vram_gib``: the estimate for this machine's device. With it: the estimate for a GPU
    of that many GiB, plus ``max_seq_len_fit`` (at the configured batch size) and
    ``max_batch_size_fit`` (at the configured sequence length).
    """
    gpu_bytes = None if vram_gib is None else int(float(vram_gib) * 2 ** 30)
    est = estimate(config, gpu_bytes=gpu_bytes)
    out = est.to_dict()
    out["budget_bytes"] = est.budget_bytes
    if gpu_bytes is not None:
        out["max_seq_len_fit"] = max_seq_len_fit(config, gpu_bytes)
        out["max_batch_size_fit"] = max_batch_size_fit(config, gpu_bytes)
    return out
