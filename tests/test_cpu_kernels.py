"""The fused CPU kernels compute what eager PyTorch computes: losses, outputs and gradients."""

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from finetune_gui.speedups import cpu_kernels

if shutil.which("c++") is None and shutil.which("g++") is None:
    pytest.skip("no C++ compiler: the kernels are an optional backend", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def kernels():
    module = cpu_kernels.load()
    assert module is not None, cpu_kernels.why_unavailable()
    return module


SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
ARCHITECTURES = {  # model, config, (RMSNorms, MLPs) it holds
    "llama": (LlamaForCausalLM, LlamaConfig(**SHAPE), (5, 2)),
    "mistral": (MistralForCausalLM, MistralConfig(**SHAPE), (5, 2)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SHAPE), (5, 2)),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**SHAPE, head_dim=16), (9, 2)),  # + q/k norms
}


def frozen(model_cls, config, dtype):
    torch.manual_seed(0)
    model = model_cls(config).to(dtype).train()
    model.requires_grad_(False)
    model.set_attn_implementation("eager")  # as the training job sets it for bf16 on a CPU
    return model


def logits_and_input_grad(model, ids):
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    padded = torch.ones_like(ids)
    padded[0, -4:] = 0  # a padded row, as in a batch
    logits = model(inputs_embeds=embeds, attention_mask=padded).logits
    (logits.float() * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
    return logits.detach().float(), embeds.grad.float()


def _native_bf16() -> bool:
    """The CPU computes bf16 natively (AVX-512-BF16 or AMX), as eager's kernels assume."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


NATIVE_BF16 = _native_bf16()


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fused_norms_and_mlps_match_eager(arch, dtype):
    model_cls, config, (norms, mlps) = ARCHITECTURES[arch]
    eager = frozen(model_cls, config, dtype)
    fused = copy.deepcopy(eager)
    assert cpu_kernels.enable_cpu_kernels(fused) == {"rms_norm": norms, "swiglu": mlps,
                                                      "lora_dropout": 0, "attention": 2}
    assert fused.config._attn_implementation == cpu_kernels.ATTENTION
    ids = torch.randint(0, 300, (3, 11))
    (want, want_grad), (got, got_grad) = (logits_and_input_grad(m, ids) for m in (eager, fused))
    if dtype == torch.float32:
        assert relative(got, want) < 1e-6 and relative(got_grad, want_grad) < 1e-5
    elif NATIVE_BF16:  # same roundings as eager: identical outputs, gradients within bf16
        assert torch.equal(got, want)       # summation order
        assert relative(got_grad, want_grad) < 1e-2
    else:  # eager emulates bf16 here (rounding some intermediates once more): one rounding apart
        assert relative(got, want) < 4e-3 and relative(got_grad, want_grad) < 1e-2


def test_fp32_model_under_bf16_autocast_matches_eager():
    """An fp32 model trained under bf16 autocast (a 4-bit base with gradient checkpointing on a
    bf16 CPU): the scores come out bf16 while the mask stays fp32. The attention kernel takes
    one dtype, so it must hand such a call to eager (it failed the job before)."""
    model_cls, config, _ = ARCHITECTURES["llama"]
    eager = frozen(model_cls, config, torch.float32)
    fused = copy.deepcopy(eager)
    cpu_kernels.enable_cpu_kernels(fused)
    ids = torch.randint(0, 300, (3, 11))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (want, want_grad), (got, got_grad) = (logits_and_input_grad(m, ids) for m in (eager, fused))
    assert relative(got, want) < 1e-2 and relative(got_grad, want_grad) < 2e-2


def test_fused_modules_fall_back_outside_training():
    model_cls, config, _ = ARCHITECTURES["llama"]
    model = frozen(model_cls, config, torch.bfloat16)
    cpu_kernels.enable_cpu_kernels(model)
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert out.grad_fn is None
    model.train()
    embeds = model.get_input_embeddings()(ids).requires_grad_()
    graph = model(inputs_embeds=embeds).logits.grad_fn
    seen, stack = set(), [graph]
    while stack:  # the training graph holds the fused nodes
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    names = {type(node).__name__ for node in seen}
    assert {"_RMSNormBackward", "_SwiGLUBackward", "_AttentionSoftmaxBackward"} <= names


def test_trained_norm_weight_keeps_the_eager_forward():
    model_cls, config, _ = ARCHITECTURES["llama"]
    model = frozen(model_cls, config, torch.float32)
    model.model.norm.weight.requires_grad_(True)  # e.g. modules_to_save
    cpu_kernels.enable_cpu_kernels(model)
    model(input_ids=torch.randint(0, 300, (2, 7))).logits.sum().backward()
    assert model.model.norm.weight.grad is not None and model.model.norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype,bias", [(torch.float32, False), (torch.bfloat16, False),
                                        (torch.bfloat16, True)], ids=["fp32", "bf16", "bias"])
def test_head_cross_entropy_matches_eager(dtype, bias):
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=bias).to(dtype).requires_grad_(False)
    hidden = torch.randn(37, 64, dtype=dtype) * 3
    targets = torch.randint(0, 5000, (37,))
    losses, grads = [], []
    for fused in (False, True):
        h = hidden.clone().requires_grad_()
        loss = cpu_kernels.head_cross_entropy(h, head, targets) if fused else \
            F.cross_entropy(head(h).float(), targets, reduction="sum")
        (loss * 0.5).backward()  # the backward scales by the incoming gradient
        losses.append(loss.item())
        grads.append(h.grad.float())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert relative(grads[1], grads[0]) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_head_cross_entropy_declines_what_it_does_not_cover():
    head = torch.nn.Linear(8, 20)
    hidden, targets = torch.randn(4, 8), torch.randint(0, 20, (4,))
    assert cpu_kernels.head_cross_entropy(hidden, head, targets) is None  # trained head
    head.requires_grad_(False)
    half = copy.deepcopy(head).half()
    assert cpu_kernels.head_cross_entropy(hidden.half(), half, targets) is None  # fp16
    assert cpu_kernels.head_cross_entropy(hidden, head, targets) is not None


def test_cross_entropy_keeps_nan_and_rejects_bad_targets(kernels):
    logits = torch.randn(3, 50)
    logits[1, 7] = float("nan")
    loss, _ = kernels.softmax_xent(logits, torch.tensor([0, 1, 2]))
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    with pytest.raises(RuntimeError, match="target 50 out of range for a vocabulary of 50"):
        kernels.softmax_xent(torch.randn(2, 50), torch.tensor([3, 50]))


def test_exp_is_accurate_over_the_softmax_range(kernels):
    """Its exp is a polynomial: check it against libm where softmax values live."""
    logits = torch.linspace(-100, 0, 4001).reshape(1, -1)
    _, grad = kernels.softmax_xent(logits, torch.tensor([0]))
    want = torch.softmax(logits.double(), -1).float()
    want[0, 0] -= 1
    assert torch.allclose(grad, want, rtol=1e-5, atol=1e-12)


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("FINETUNE_GUI_CPU_KERNELS", "0")
    model_cls, config, _ = ARCHITECTURES["llama"]
    assert cpu_kernels.enable_cpu_kernels(frozen(model_cls, config, torch.float32)) == {}
    assert "FINETUNE_GUI_CPU_KERNELS=0" in cpu_kernels.why_unavailable()


def test_attention_is_switched_only_from_eager():
    model_cls, config, _ = ARCHITECTURES["llama"]
    model = frozen(model_cls, config, torch.bfloat16)
    model.set_attn_implementation("sdpa")  # the user's choice, or fp32 training
    assert cpu_kernels.enable_cpu_kernels(model)["attention"] == 0
    assert model.config._attn_implementation == "sdpa"
