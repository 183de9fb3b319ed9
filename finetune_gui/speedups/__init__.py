"""Every training speed-up, behind one switch (``train.speedups: off | safe | all``).

Each speed-up is one module with a reference path it must agree with (the parity tests in
tests/test_speedups.py, tests/test_fast_lora.py and tests/test_cpu_kernels.py):

========================  ======  =====  ==================================================
name                      level   where  what it replaces
========================  ======  =====  ==================================================
answer_head               safe    any    the head projecting every position (answer_head.py)
compact_logprobs          safe    cpu    TRL's head scoring every position (preference)
                                         (compact_logprobs.py)
shared_prefix             safe    any    every row run whole, its shared start included
                                         (shared_prefix.py)
frozen_bottom             safe    cpu    the frozen lower layers run at every epoch
                                         (frozen_bottom.py)
fused_lora                safe    any    peft's LoRA forward/backward (fused_lora.py)
fast_dropout              safe    any    ``nn.Dropout`` on the adapter input (dropout.py)
cpu_kernels               safe    cpu    eager loss, RMSNorm, SwiGLU, softmax (cpu_kernels.py)
dequantise_4bit           safe    cpu    NF4 dequantised at every step (``finetune_gui.plan``)
liger                     all     cuda   the model's norms, MLP, RoPE and loss (liger.py)
========================  ======  =====  ==================================================

``safe`` speed-ups compute the same numbers as their reference (to float rounding);
``all`` adds ones that are standard but reorder the arithmetic. ``train.fused_lora``,
``train.shared_prefix``, ``train.frozen_bottom`` and ``train.cpu_kernels`` (auto | on |
off) override the switch for those four.
``choose_speedups`` decides (from the plan), ``before_lora``/``after_lora`` apply.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..messages import Message

SPEEDUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "answer_head": ("safe", ("cpu", "cuda")),
    "compact_logprobs": ("safe", ("cpu",)),
    "shared_prefix": ("safe", ("cpu", "cuda")),
    "frozen_bottom": ("safe", ("cpu",)),
    "fused_lora": ("safe", ("cpu", "cuda")),
    "fast_dropout": ("safe", ("cpu", "cuda")),
    "cpu_kernels": ("safe", ("cpu",)),
    "dequantise_4bit": ("safe", ("cpu",)),
    "liger": ("all", ("cuda",)),
}
LEVELS = {"off": (), "safe": ("safe",), "all": ("safe", "all")}
OVERRIDES = {name: name for name in ("fused_lora", "shared_prefix", "frozen_bottom",
                                     "cpu_kernels")}  # speed-up -> its train.* override


def choose_speedups(config, *, device: str, base_dtype: str, machine, notes: list[str]
                    ) -> tuple[str, ...]:
    """The speed-ups a run uses on ``device``: the switch's level, then the overrides."""
    levels = LEVELS[config.train.speedups]
    t = config.train
    # one plain forward of whole rows per step (shared_prefix.py, frozen_bottom.py)
    plain_forward = t.method == "sft" and not (t.packing or t.gradient_checkpointing
                                               or t.neftune_noise_alpha)
    chosen = []
    for name, (level, devices) in SPEEDUPS.items():
        on = level in levels and device in devices
        override = OVERRIDES.get(name)
        if override:
            wanted = getattr(config.train, override)
            on = device in devices and (on if wanted == "auto" else wanted == "on")
        if name == "dequantise_4bit":
            on = on and base_dtype not in ("nf4", "int8") and config.model.quantization == "4bit"
        if name == "liger" and on and not machine.has_liger:
            notes.append(Message("plan.no_liger"))
            on = False
        if name == "answer_head" and config.train.method != "sft":
            on = False  # TRL's preference trainers project their own head (in chunks)
        if name == "compact_logprobs" and config.train.method == "sft":
            on = False  # our own trainer projects answer positions only (answer_head)
        if name == "shared_prefix" and not plain_forward:
            on = False
        if name == "frozen_bottom" and not (plain_forward and config.lora.last_layers):
            on = False  # and the lower layers frozen: adapters on the last layers only
        if name == "fused_lora" and on and base_dtype in ("nf4", "int8"):
            on = False  # quantised base layers: peft's own forward (fused_lora.py)
        if on:
            chosen.append(name)
    return tuple(chosen)


def before_lora(model: torch.nn.Module, plan, log: Callable[[str], None]) -> None:
    """Speed-ups that patch the base model, before peft wraps it."""
    if plan.uses("liger"):
        from .liger import apply_liger, why_unavailable
        reason = why_unavailable(model)
        done = apply_liger(model) if reason is None else None
        log(f"speed-up: {done}" if done else f"Liger kernels skipped: {reason}")


def after_lora(model: torch.nn.Module, plan, log: Callable[[str], None]) -> set[str]:
    """Speed-ups on the peft model; returns those that really run (a kernel build can fail)."""
    active = {name for name in plan.speedups if name in ("answer_head", "shared_prefix",
                                                         "dequantise_4bit", "liger")}
    if plan.uses("compact_logprobs"):
        from .compact_logprobs import enable_compact_logprobs
        reason = enable_compact_logprobs()
        log("speed-up: TRL's head scores the answer positions only" if reason is None
            else f"TRL's head scores every position: {reason}")
        if reason is None:
            active.add("compact_logprobs")
    else:
        from .compact_logprobs import disable_compact_logprobs
        disable_compact_logprobs()
    if plan.uses("fast_dropout"):
        from .dropout import use_fast_dropout
        use_fast_dropout(model)
        active.add("fast_dropout")
    if plan.uses("fused_lora"):
        from .fused_lora import enable_fused_lora
        count = enable_fused_lora(model)
        log(f"speed-up: fused LoRA training step on {count} layers")
        if count:
            active.add("fused_lora")
    if plan.uses("cpu_kernels"):
        from . import cpu_kernels
        if not cpu_kernels.is_built():
            log("building the fused CPU kernels (once per machine, about 30 s)")
        counts = cpu_kernels.enable_cpu_kernels(model)
        for note in cpu_kernels.build_notes():
            log(f"CPU kernels: {note}")
        if counts:
            active.add("cpu_kernels")
            log(f"speed-up: fused CPU kernels: loss, {counts['rms_norm']} RMSNorm, "
                f"{counts['swiglu']} SwiGLU and {counts['attention']} attention modules, "
                f"dropout masks of {counts['lora_dropout']} LoRA layers")
        else:
            log(f"fused CPU kernels unavailable: {cpu_kernels.why_unavailable()}")
    return active
