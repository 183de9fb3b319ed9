"""Fast LoRA dropout: the fused step's bit-mask draw for the adapters it does not cover.

Reference path: peft's own ``nn.Dropout`` (speed-ups off). Same distribution; the parity
test is tests/test_speedups.py.
"""

from __future__ import annotations

import torch

from .fused_lora import keep_mask


class BernoulliDropout(torch.nn.Module):
    """Inverted dropout like ``nn.Dropout``, with the mask of the fused LoRA step.

    Same distribution (keep with probability 1-p, scale by 1/(1-p)); on CPUs ``bernoulli_``
    is several times slower, and LoRA calls dropout on every adapted layer's input. Used by
    the adapters the fused step does not cover (DoRA, quantised bases, fused_lora off).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = keep_mask(x.shape, self.p, x.device)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Swap the adapters' ``nn.Dropout`` for ``BernoulliDropout``; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, layer in dropouts.items():
            if isinstance(layer, torch.nn.Dropout) and layer.p > 0:
                dropouts[name] = BernoulliDropout(layer.p)
                swapped += 1
    return swapped
