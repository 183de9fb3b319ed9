"""The execution plan: every machine-dependent choice of a run, resolved once.

Device, how the frozen base is stored, the compute dtype, mixed precision, optimizer,
attention kernel, which speed-ups run and what "4-bit" means here are decided by
``resolve_plan`` from the run config and the machine's facts, and nowhere else: training,
the memory estimate, model loading, chat, export, the UI and the run log all read the plan.

``Machine`` holds the facts (detected once, or made up for "what if I had a T4" and for
tests), so the resolution itself is a pure function, testable on any box:

    >>> plan = resolve_plan(RunConfig(), Machine(cuda=True, cuda_bf16=False))
    >>> plan.precision, plan.optimizer
    ('fp16', 'adamw_torch')
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field, replace

from .config import RunConfig
from .messages import Message

GIB = 2 ** 30
# Dequantising a 4-bit base once on a CPU is only worth it with room to spare: the
# bf16 copy plus everything else training holds must stay below this share of free RAM.
DEQUANTISE_RAM_SHARE = 0.6


@dataclass(frozen=True)
class Machine:
    """What the plan depends on. ``Machine.detect()`` reads this machine."""
    cuda: bool = False
    cuda_bf16: bool = False          # native bf16 (Ampere+), not emulated
    cuda_name: str = ""
    cuda_total_bytes: int = 0
    cuda_count: int = 0
    cpu_bf16: bool = False           # AVX-512 BF16 or AMX
    ram_available_bytes: int = 0
    has_bitsandbytes: bool = False
    has_liger: bool = False
    has_flash_attn: bool = False
    local_rank: int | None = None    # set under accelerate launch / torchrun

    @classmethod
    def detect(cls) -> "Machine":
        return _detect()

    def with_gpu(self, total_bytes: int, bf16: bool = True) -> "Machine":
        """This machine as if it had one CUDA GPU of ``total_bytes`` (the estimator's what-if)."""
        return replace(self, cuda=True, cuda_bf16=bf16, cuda_total_bytes=int(total_bytes),
                       cuda_count=max(self.cuda_count, 1), cuda_name=self.cuda_name or "GPU")


@functools.lru_cache(maxsize=1)
def _static_facts() -> dict:
    import torch
    from .hardware import cpu_supports_bf16
    facts = {"cpu_bf16": cpu_supports_bf16(), "cuda": torch.cuda.is_available(),
             "has_bitsandbytes": _installed("bitsandbytes"), "has_liger": _installed("liger_kernel"),
             "has_flash_attn": _installed("flash_attn")}
    if facts["cuda"]:
        # including_emulation=False: a T4 or V100 "supports" bf16 only by emulating it, slowly
        facts.update(cuda_bf16=torch.cuda.is_bf16_supported(including_emulation=False),
                     cuda_name=torch.cuda.get_device_name(), cuda_count=torch.cuda.device_count(),
                     cuda_total_bytes=torch.cuda.get_device_properties(0).total_memory)
    return facts


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _detect() -> Machine:
    import psutil
    rank = os.environ.get("LOCAL_RANK")
    return Machine(**_static_facts(), ram_available_bytes=int(psutil.virtual_memory().available),
                   local_rank=int(rank) if rank and rank.isdigit() else None)


@dataclass
class ExecutionPlan:
    device: str                      # cpu | cuda
    device_index: int | None         # the CUDA device of this process (its LOCAL_RANK)
    quantization: str                # what the config asked: none | 4bit | 8bit
    weights: str                     # how the frozen base is held while training
    load_dtype: str                  # torch dtype name from_pretrained gets
    base_dtype: str                  # float32 | bfloat16 | float16 | nf4 | int8
    compute_dtype: str               # dtype of the matmuls
    precision: str                   # fp32 | bf16 | fp16: the Trainer's mixed precision
    optimizer: str
    attention: str                   # eager | sdpa | flash_attention_2
    speedups: tuple[str, ...]        # names from finetune_gui.speedups.SPEEDUPS
    dequantise_4bit: bool = False    # 4-bit asked on a CPU: quantise, then dequantise once
    notes: list[str] = field(default_factory=list)

    def uses(self, speedup: str) -> bool:
        return speedup in self.speedups

    @property
    def autocast(self) -> bool:
        return self.precision in ("bf16", "fp16")

    def summary(self) -> str:
        """One line for the run log and the Train tab."""
        where = self.device if self.device_index is None else f"{self.device}:{self.device_index}"
        fast = ", ".join(self.speedups) or "none"
        return (f"{where} · base {self.weights} · compute {self.compute_dtype} · precision "
                f"{self.precision} · optimizer {self.optimizer} · attention {self.attention} "
                f"· speed-ups: {fast}")

    def rows(self) -> list[tuple[str, str]]:
        """(choice, value) pairs for a table on the LoRA and Train tabs."""
        where = self.device if self.device_index is None else f"{self.device}:{self.device_index}"
        return [("device", where), ("frozen base", self.weights),
                ("compute dtype", self.compute_dtype), ("mixed precision", self.precision),
                ("optimizer", self.optimizer), ("attention", self.attention),
                ("speed-ups", ", ".join(self.speedups) or "none")]

    def to_dict(self) -> dict:
        return {"device": self.device, "device_index": self.device_index,
                "quantization": self.quantization, "weights": self.weights,
                "base_dtype": self.base_dtype, "compute_dtype": self.compute_dtype,
                "precision": self.precision, "optimizer": self.optimizer,
                "attention": self.attention, "speedups": list(self.speedups),
                "dequantise_4bit": self.dequantise_4bit, "notes": list(self.notes)}


def resolve_plan(config: RunConfig, machine: Machine | None = None, *,
                 base_params: int | None = None) -> ExecutionPlan:
    """The plan for ``config`` on ``machine`` (this one when None).

    ``base_params``: the base model's parameter count, to decide whether a 4-bit base can
    be dequantised once on a CPU; read from the model's config when not given."""
    from .speedups import choose_speedups
    machine = machine or Machine.detect()
    m, t = config.model, config.train
    notes: list[str] = []
    device = _device(m.device, machine)
    index = (machine.local_rank or 0) if device == "cuda" else None
    compute = _compute_dtype(m.compute_dtype, device, machine)
    precision = _precision(t.precision, device, machine, compute)
    dequantise = False
    if m.quantization == "none":
        if device == "cuda":
            base = load = compute
        elif precision == "bf16":
            base, load = "bfloat16", "float32"
            notes.append(Message("plan.cpu_bf16"))
        else:
            base = load = "float32"
        weights = base
    elif device == "cpu" and m.quantization == "4bit":
        dequantise = _dequantise_fits(config, machine, base_params, compute, notes)
        base = compute if dequantise else "nf4"
        load = "float32"
        weights = (f"NF4, dequantised once to {_short(compute)}" if dequantise
                   else "NF4 (4-bit)")
        if precision == "fp16":
            precision = "fp32"
    else:
        base = "nf4" if m.quantization == "4bit" else "int8"
        load = compute if device == "cuda" else "float32"
        weights = "NF4 (4-bit)" if base == "nf4" else "int8 (LLM.int8)"
        if device == "cpu" and precision == "fp16":
            precision = "fp32"
    if m.quantization != "none" and not machine.has_bitsandbytes:
        notes.append(Message("plan.no_bitsandbytes", quantization=m.quantization))
    optimizer = _optimizer(config, device, base)
    attention = _attention(device, precision, machine)
    speedups = choose_speedups(config, device=device, base_dtype=base, machine=machine,
                               notes=notes)
    return ExecutionPlan(device=device, device_index=index, quantization=m.quantization,
                         weights=weights, load_dtype=load, base_dtype=base, compute_dtype=compute,
                         precision=precision, optimizer=optimizer, attention=attention,
                         speedups=speedups, dequantise_4bit=dequantise, notes=notes)


def _device(wanted: str, machine: Machine) -> str:
    if wanted == "auto":
        return "cuda" if machine.cuda else "cpu"
    return wanted  # cuda without a GPU is refused when the model loads, with a message


def _compute_dtype(wanted: str, device: str, machine: Machine) -> str:
    if wanted != "auto":
        return wanted
    if device == "cuda":
        return "bfloat16" if machine.cuda_bf16 else "float16"
    return "bfloat16" if machine.cpu_bf16 else "float32"


def _precision(wanted: str, device: str, machine: Machine, compute: str) -> str:
    if wanted != "auto":
        return wanted
    if device == "cuda":
        return "bf16" if machine.cuda_bf16 else "fp16"
    return "bf16" if machine.cpu_bf16 and compute != "float32" else "fp32"


def _optimizer(config: RunConfig, device: str, base: str) -> str:
    """auto: paged 8-bit AdamW for QLoRA on a GPU, plain AdamW for other GPU runs, PyTorch's
    fused AdamW on a CPU (one kernel per tensor instead of a dozen ops: 20 -> 6 ms a step
    for a 30-layer model's 420 adapter tensors)."""
    if config.train.optimizer != "auto":
        return config.train.optimizer
    if device == "cuda":
        return "paged_adamw_8bit" if base in ("nf4", "int8") else "adamw_torch"
    return "adamw_torch_fused"


def _attention(device: str, precision: str, machine: Machine) -> str:
    """Flash-attention 2 where installed and the dtype is 16-bit on CUDA, else PyTorch's
    SDPA; on a CPU with bf16 tensors eager attention beat SDPA's CPU kernel on short rows."""
    if device == "cuda":
        return "flash_attention_2" if machine.has_flash_attn and precision != "fp32" else "sdpa"
    return "eager" if precision == "bf16" else "sdpa"


def _short(dtype: str) -> str:
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)


def _dequantise_fits(config: RunConfig, machine: Machine, base_params: int | None,
                     compute: str, notes: list[str]) -> bool:
    """4-bit on a CPU only saves memory (no kernel there multiplies NF4 faster than bf16).
    Where the machine has the RAM, the base is quantised (so its numbers are exactly what
    4-bit gives) and dequantised once, so that every fast path applies."""
    if config.train.speedups == "off":
        notes.append(Message("plan.4bit_speedups_off"))
        return False
    params = base_params if base_params is not None else _model_params(config)
    if params is None:
        notes.append(Message("plan.4bit_size_unknown"))
        return False
    need = (4 if compute == "float32" else 2) * params
    room = DEQUANTISE_RAM_SHARE * machine.ram_available_bytes
    if need > room:
        notes.append(Message("plan.4bit_no_room", dtype=_short(compute), need=f"{need / GIB:.1f}",
                             room=f"{room / GIB:.1f}"))
        return False
    notes.append(Message("plan.4bit_dequantised", dtype=_short(compute), need=f"{need / GIB:.1f}"))
    return True


def _model_params(config: RunConfig) -> int | None:
    try:
        from .estimate import arch_base_params
        from .estimate.arch import load_arch
        return arch_base_params(load_arch(config.model.name_or_path))
    except Exception:  # any unreadable config: the plan simply keeps 4-bit
        return None
