"""A fused training step for plain LoRA layers: the same maths in fewer passes over memory.

peft computes a LoRA layer as ``base(x) + B(A(dropout(x))) * scaling`` through half a dozen
autograd nodes: it casts ``x`` to the adapter's fp32 dtype, draws an fp32 uniform per input
element for the dropout mask, multiplies twice, and autocast casts everything back to bf16.
On a CPU that bookkeeping, not the small LoRA matmuls, was a fifth of each training step.

``FusedLoraLinear`` does the adapter branch as one autograd function in the base output's
dtype. The dropout mask is a bit mask (all ones where kept, zero where dropped) applied
with one bitwise AND; the ``1/(1-p)`` rescale folds into the LoRA scaling, so the
result equals inverted dropout exactly. Masks are drawn independently per layer, as peft
does, with ``p`` resolved to 1/65536 (on a CPU, from numpy's SFC64 or the compiled CPU
kernels' counter-based draw, seeded by torch's generator, so ``torch.manual_seed`` and
checkpoint recomputation reproduce them).
Anything the fast path does not cover (evaluation, merged or disabled adapters, several
active adapters, DoRA, LoRA bias, quantised base layers) runs peft's own forward.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear

_MASK_INT = {2: (torch.int16, np.int16), 4: (torch.int32, np.int32)}  # by activation bytes


def _drop_on_cpu(shape: tuple[int, ...], p: float) -> np.ndarray:
    count = int(np.prod(shape))
    seed = int(torch.randint(0, 2**62, (1,)))
    draws = np.random.SFC64(seed).random_raw((count + 3) // 4).view(np.uint16)[:count]
    return draws < round(p * 65536)


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Boolean dropout mask: True (keep) with probability 1-p, p resolved to 1/65536 on CPU.

    On a CPU, numpy's SFC64 draws it several times faster than torch's generator; its seed
    comes from torch's, so ``torch.manual_seed`` and checkpoint recomputation replay it.
    """
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    return torch.from_numpy(~_drop_on_cpu(shape, p)).view(shape)


def keep_bits(shape: tuple[int, ...], p: float, dtype: torch.dtype,
              device: torch.device, kernels=None) -> torch.Tensor:
    """Integer mask the width of ``dtype``: -1 (every bit set) to keep, 0 to drop.

    ``kernels``: the compiled ``finetune_gui.cpu_kernels``, whose counter-based draw (seeded
    from torch's generator too) is four times faster on a CPU than numpy's.
    """
    int_dtype, np_int = _MASK_INT[dtype.itemsize]
    if device.type != "cpu":
        return -keep_mask(shape, p, device).to(int_dtype)
    if kernels is not None:
        seed = int(torch.randint(0, 2**62, (1,)))
        return kernels.dropout_bits(int(np.prod(shape)), p, seed, dtype.itemsize).view(shape)
    # dropped: 1 - 1 = 0, kept: 0 - 1 = -1, in one pass
    return torch.from_numpy(np.subtract(_drop_on_cpu(shape, p), 1, dtype=np_int)).view(shape)


def _masked(values: torch.Tensor, bits: torch.Tensor | None) -> torch.Tensor:
    if bits is None:
        return values
    return (values.view(bits.dtype) & bits).view(values.dtype)


class _LoraAdd(torch.autograd.Function):
    """``result + scale * ((x & mask) @ A.T) @ B.T`` with its backward written out."""

    @staticmethod
    def forward(ctx, result, x, lora_a, lora_b, scale, bits):
        a_w, b_w = lora_a.to(x.dtype), lora_b.to(x.dtype)
        dropped = _masked(x, bits)
        hidden = dropped @ a_w.t()
        # A plain nn.Linear does not save its output for backward: add into it in place.
        # ``result`` comes in whole and is flattened here, where autograd does not see the
        # view: an in-place op on a view would make autograd clone and copy back the full
        # output gradient (CopySlices) in backward.
        result.view(-1, result.shape[-1]).addmm_(hidden, b_w.t(), alpha=scale)
        ctx.mark_dirty(result)
        ctx.save_for_backward(dropped, bits, a_w, b_w, hidden)
        ctx.scale = scale
        ctx.param_dtypes = (lora_a.dtype, lora_b.dtype)
        return result

    @staticmethod
    def backward(ctx, grad_out):
        dropped, bits, a_w, b_w, hidden = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1]).to(a_w.dtype)
        grad_b = (hidden.t() @ grad).t().mul_(ctx.scale)  # faster than grad.t() @ hidden
        grad_hidden = (grad @ b_w).mul_(ctx.scale)
        grad_a = grad_hidden.t() @ dropped
        grad_x = _masked(grad_hidden @ a_w, bits) if ctx.needs_input_grad[1] else None
        return (grad_out, grad_x, grad_a.to(ctx.param_dtypes[0]),
                grad_b.to(ctx.param_dtypes[1]), None, None)


def _dropout_p(module: torch.nn.Module) -> float | None:
    if isinstance(module, torch.nn.Identity):
        return 0.0
    p = getattr(module, "p", None)
    return float(p) if isinstance(p, float) and 0.0 <= p < 1.0 else None


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA ``Linear`` whose training forward runs the fused adapter branch."""

    mask_kernels = None  # set by finetune_gui.cpu_kernels to draw dropout masks in C++

    def _fused_adapter(self, args, kwargs) -> str | None:
        if args or kwargs or not (self.training and torch.is_grad_enabled()) \
                or self.merged or self.disable_adapters or len(self.active_adapters) != 1:
            return None
        name = self.active_adapters[0]
        if name not in self.lora_A or name in self.lora_variant or self.lora_bias.get(name) \
                or self.fan_in_fan_out or _dropout_p(self.lora_dropout[name]) is None:
            return None
        return name

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = self._fused_adapter(args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        # fp64 (the bit mask needs 16/32 bits) or a strided output (it is added to in place)
        if result.element_size() not in _MASK_INT or not result.is_contiguous():
            return super().forward(x, *args, **kwargs)
        p = _dropout_p(self.lora_dropout[name])
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(result.dtype)
            bits = keep_bits(flat.shape, p, flat.dtype, flat.device,
                             self.mask_kernels) if p > 0 else None
            return _LoraAdd.apply(result, flat, self.lora_A[name].weight,
                                  self.lora_B[name].weight, self.scaling[name] / (1.0 - p), bits)


def enable_fused_lora(model: torch.nn.Module) -> int:
    """Give every plain LoRA ``Linear`` the fused training forward; returns how many.

    Not under FSDP or DeepSpeed, whose sharded parameters are gathered by hooks on the
    modules peft calls, not on the weights read here.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") or \
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return 0
    count = 0
    for module in model.modules():
        # a plain nn.Linear base: its output is not saved for backward, so it may be added to
        if type(module) is PeftLoraLinear and type(module.get_base_layer()) is torch.nn.Linear:
            module.__class__ = FusedLoraLinear
            count += 1
    return count
