"""Fused CPU kernels for training: cross-entropy, RMSNorm, SwiGLU, attention softmax.

On a CPU, after the matmuls, most of a LoRA training step is elementwise work that eager
PyTorch spreads over many passes through memory: the loss alone upcasts the logits to fp32,
takes a log-softmax, builds a zero-filled one-hot gradient and casts it back. The kernels in
``csrc/cpu_kernels.cpp`` do the same maths with the same roundings in one or two passes, and
draw the fused LoRA step's dropout masks.

They are an optional backend: built once per machine with the system's C++ compiler (about
half a minute; ``scripts/setup.sh`` does it) into the user cache. Without a compiler, or
with ``FINETUNE_GUI_CPU_KERNELS=0``, training runs the eager code, just slower. Each module
falls back to its own forward for anything the kernels do not cover (evaluation, a trained
norm weight, fp16/fp64, CUDA tensors).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .fused_lora import FusedLoraLinear

SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
_FLAGS = ["-O3", "-march=native", "-fopenmp"]
_state: dict = {}


def _cpu_tag() -> str:
    """What ``-march=native`` depends on, so a home shared between machines stays correct."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return flags


def build_dir() -> Path:
    key = hashlib.sha256(b"\0".join(s.encode() for s in (
        SOURCE.read_text(), torch.__version__, platform.machine(), _cpu_tag(),
        " ".join(_FLAGS)))).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "finetune_gui" / "kernels" / key


def is_built() -> bool:
    return any(build_dir().glob("*.so"))


# torch's builder waits, without end, for the lock file of another build to go: a build
# that was killed leaves it behind. A build takes well under STALE_LOCK_SECONDS here.
STALE_LOCK_SECONDS = 300
LOCK_WAIT_SECONDS = 180


def _clear_lock(folder: Path) -> str | None:
    """Make sure no stale lock blocks the build; the reason to give up when one is live."""
    lock = folder / "lock"
    waited = 0.0
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > STALE_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
            _state["notes"] = [f"removed the lock of an interrupted kernel build "
                               f"({age:.0f} s old)"]
            return None
        if waited >= LOCK_WAIT_SECONDS:
            return (f"another process has been building them for {age:.0f} s; PyTorch's "
                    "own ops are used this time")
        time.sleep(0.5)
        waited += 0.5


def load(verbose: bool = False):
    """The compiled kernels, building them on first use; None (see ``why_unavailable``)."""
    if "module" in _state:
        return _state["module"]
    module, reason = None, None
    if os.environ.get("FINETUNE_GUI_CPU_KERNELS", "1") == "0":
        reason = "turned off by FINETUNE_GUI_CPU_KERNELS=0"
    elif not (shutil.which("c++") or shutil.which("g++")):
        reason = "no C++ compiler found (install g++ for faster CPU training)"
    else:
        try:
            from torch.utils.cpp_extension import load as build
            folder = build_dir()
            folder.mkdir(parents=True, exist_ok=True)
            reason = _clear_lock(folder)
        except OSError as exc:
            reason = f"cannot use the kernel cache: {exc}"
    if reason is None:
        try:
            # torch runs `ninja` from PATH: find the one pip put beside this interpreter
            venv_bin = str(Path(sys.executable).parent)
            if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
            module = build("finetune_gui_cpu_kernels", sources=[str(SOURCE)],
                           extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                           build_directory=str(folder), verbose=verbose)
        except Exception as exc:  # a broken toolchain must not stop training
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            first_error = next((ln for ln in lines if "error" in ln.lower()), lines[-1])
            reason = f"could not build them: {first_error.strip()[:300]}"
    _state.update(module=module, reason=reason)
    return module


def build_notes() -> list[str]:
    """What loading had to repair (e.g. the lock of an interrupted build), for the run log."""
    load()
    return list(_state.get("notes", []))


def why_unavailable() -> str | None:
    load()
    return _state["reason"]


def _covered(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float32)
               for t in tensors)


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)``; the head's weights frozen.

    The logits gradient is formed in the forward pass (it needs nothing the backward adds
    but a scale), turned into the hidden-state gradient at once, and the logits freed: no
    rows x vocabulary tensor outlives the call.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        logits = F.linear(hidden, weight, bias).contiguous()
        losses, grad_logits = load().softmax_xent(logits, targets.contiguous())
        del logits
        ctx.save_for_backward(grad_logits @ weight if ctx.needs_input_grad[0] else None)
        return losses.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_loss.to(grad_hidden.dtype), None, None, None


def head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear,
                       targets: torch.Tensor) -> torch.Tensor | None:
    """Summed cross-entropy of ``head(hidden)``; None where the kernels do not cover it."""
    weight, bias = head.weight, head.bias
    if load() is None or weight.requires_grad or (bias is not None and bias.requires_grad) \
            or not _covered(hidden, weight) or hidden.dtype != weight.dtype:
        return None
    with torch.autocast("cpu", enabled=False):
        return _HeadCrossEntropy.apply(hidden, weight, bias, targets)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, inv_rms = load().rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, inv_rms)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, inv_rms = ctx.saved_tensors
        return load().rms_norm_backward(grad, x, weight, inv_rms), None, None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return load().swiglu_forward(gate, up)

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        d_gate, d_up = load().swiglu_backward(grad, gate, up)
        return d_gate, d_up


class _AttentionSoftmax(torch.autograd.Function):
    """``softmax(scores * scale + mask)`` in one pass; saves only the probabilities, which
    the following matmul saves anyway (eager also keeps an fp32 copy)."""

    @staticmethod
    def forward(ctx, scores, mask, scale):
        probs = load().attention_softmax_forward(scores, mask, scale)
        ctx.save_for_backward(probs)
        ctx.scale = scale
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        return load().attention_softmax_backward(grad, probs, ctx.scale), None, None


def _training(module: torch.nn.Module) -> bool:
    return module.training and torch.is_grad_enabled()


def _fused_rms_forward(self, hidden_states):
    weight = self.weight
    if _training(self) and not weight.requires_grad and hidden_states.is_contiguous() \
            and _covered(hidden_states) and weight.dtype == hidden_states.dtype:
        return _RMSNorm.apply(hidden_states, weight, float(self.variance_epsilon))
    return super(type(self), self).forward(hidden_states)


def _fused_mlp_forward(self, x):
    if not _training(self):
        return super(type(self), self).forward(x)
    gate, up = self.gate_proj(x), self.up_proj(x)
    if gate.is_contiguous() and up.is_contiguous() and _covered(gate) and gate.dtype == up.dtype:
        return self.down_proj(_SwiGLU.apply(gate, up))
    return self.down_proj(self.act_fn(gate) * up)


def fused_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                          **kwargs):
    """transformers' eager attention with the scale, mask and softmax as one kernel."""
    from transformers.models.llama.modeling_llama import eager_attention_forward, repeat_kv
    # the scores' dtype: autocast's where it is on (fp32 rows under bf16 autocast give bf16
    # scores beside an fp32 mask: eager promotes those, the kernel takes one dtype)
    scores_dtype = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                    else query.dtype)
    if not _training(module) or dropout or attention_mask is None or not _covered(query) \
            or attention_mask.dtype != query.dtype or scores_dtype != query.dtype \
            or attention_mask.dim() != 4 \
            or attention_mask.stride(-1) != 1 \
            or attention_mask.shape[-2:] != (query.shape[-2], key.shape[-2]):
        return eager_attention_forward(module, query, key, value, attention_mask, scaling,
                                       dropout, **kwargs)
    keys = repeat_kv(key, module.num_key_value_groups)
    values = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, keys.transpose(2, 3)).contiguous()
    probs = _AttentionSoftmax.apply(scores, attention_mask, float(scaling))
    return torch.matmul(probs, values).transpose(1, 2).contiguous(), probs


ATTENTION = "finetune_gui_cpu"  # its name in transformers' attention and mask registries


def _use_fused_attention(model: torch.nn.Module) -> int:
    """Switch a model on eager attention, whose attention modules all follow Llama's, to
    ``fused_eager_attention``; returns how many attention modules it covers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    attentions = [m for m in model.modules() if type(m).__name__.endswith("Attention")
                  and hasattr(m, "num_key_value_groups")]
    config = getattr(model, "config", None)
    if not attentions or getattr(config, "_attn_implementation", None) != "eager" \
            or any(type(m).__name__ not in _ATTENTIONS for m in attentions):
        return 0
    AttentionInterface.register(ATTENTION, fused_eager_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    model.set_attn_implementation(ATTENTION)
    return len(attentions)


# The model types whose eager modules the kernels reproduce, by class name: Llama's RMSNorm
# (``weight * to_dtype(x * rsqrt(mean(x^2) + eps))``), its SiLU-gated MLP and its attention.
# Others (Gemma's ``1 + weight`` norm, GELU MLPs) keep their own forward. The memory estimate
# reads this too (``finetune_gui.estimate``).
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_RMS_NORMS = {f"{t.capitalize()}RMSNorm" for t in MODEL_TYPES}
_SWIGLU_MLPS = {f"{t.capitalize()}MLP" for t in MODEL_TYPES}
_ATTENTIONS = {f"{t.capitalize()}Attention" for t in MODEL_TYPES}
_fused_classes: dict[type, type] = {}


def _fused_class(cls: type, forward) -> type:
    if cls not in _fused_classes:
        _fused_classes[cls] = type(f"Fused{cls.__name__}", (cls,), {"forward": forward})
    return _fused_classes[cls]


def enable_cpu_kernels(model: torch.nn.Module) -> dict[str, int]:
    """Give Llama-style norms, MLPs and eager attention the fused training forward, and fused
    LoRA layers the kernels' dropout masks; counts of each.

    Empty when the kernels are unavailable. Call it after LoRA is attached (and after
    ``enable_fused_lora``): the MLP's projections are looked up at call time, so their
    adapters still run.
    """
    if load() is None:
        return {}
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    counts = {"rms_norm": 0, "swiglu": 0, "lora_dropout": 0,
              "attention": _use_fused_attention(causal_lm)}
    for module in model.modules():
        name = type(module).__name__
        if isinstance(module, FusedLoraLinear):
            module.mask_kernels = load()
            counts["lora_dropout"] += 1
        if name in _RMS_NORMS and hasattr(module, "variance_epsilon"):
            module.__class__ = _fused_class(type(module), _fused_rms_forward)
            counts["rms_norm"] += 1
        elif name in _SWIGLU_MLPS and getattr(getattr(module, "config", None), "hidden_act",
                                              None) == "silu":
            module.__class__ = _fused_class(type(module), _fused_mlp_forward)
            counts["swiglu"] += 1
    return counts
