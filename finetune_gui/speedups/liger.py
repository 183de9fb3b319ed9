"""Liger kernels on CUDA (``liger-kernel``): RMSNorm, SwiGLU and RoPE patched into the
model instance, and the fused linear cross-entropy for the answer-only head.

Optional backend: imported only on CUDA when installed (``pip install liger-kernel``), and
only for model types Liger supports. Reference path: the model's own modules and
``torch.nn.functional.cross_entropy``. Liger needs Triton, so there is no CPU parity test;
``bench/gpu_check.py`` compares the loss curves with Liger on and off on a GPU.
"""

from __future__ import annotations

import importlib.metadata

import torch

MIN_VERSION = (0, 5, 0)  # _apply_liger_kernel_to_instance and reduction="sum" exist since


def _version() -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def why_unavailable(model: torch.nn.Module) -> str | None:
    """None when Liger can patch ``model``, else the reason."""
    version = _version()
    if version is None:
        return "liger-kernel is not installed"
    if version < MIN_VERSION:
        return f"liger-kernel {'.'.join(map(str, version))} is older than 0.5"
    if next(model.parameters()).device.type != "cuda":
        return "Liger kernels run on CUDA only"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as exc:
        return f"liger-kernel does not import: {exc}"
    if getattr(model.config, "model_type", None) not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"Liger has no kernels for model type {model.config.model_type!r}"
    return None


def apply_liger(model: torch.nn.Module) -> str | None:
    """Patch the (not yet peft-wrapped) model's norms, MLPs and RoPE; None if it could not
    be done (``why_unavailable`` says why). The loss stays with the trainer's head."""
    if why_unavailable(model) is not None:
        return None
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
    return "Liger RMSNorm, SwiGLU and RoPE"


def head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear,
                       targets: torch.Tensor) -> torch.Tensor | None:
    """Summed cross-entropy of ``head(hidden)`` without materialising the logits."""
    if hidden.device.type != "cuda" or _version() is None:
        return None
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return loss(head.weight, hidden, targets, head.bias)
