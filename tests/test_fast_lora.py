"""The fused LoRA training step computes what peft computes: outputs, input and weight grads."""

import copy
import shutil

import peft
import pytest
import torch

from finetune_gui.speedups import cpu_kernels
from finetune_gui.speedups.fused_lora import FusedLoraLinear, _LoraAdd, enable_fused_lora, keep_bits


def two_layer_lora(dtype, dropout=0.0, **extra):
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(),
                               torch.nn.Linear(48, 32, bias=False)).to(dtype)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["0", "2"],
                             init_lora_weights=False, **extra)
    return peft.get_peft_model(base, config)


def forward_backward(model, x, autocast):
    model.train()
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = model(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.detach().float(), x.grad.float(), grads


@pytest.mark.parametrize("dtype,autocast,tol", [
    (torch.float32, False, 1e-6),
    (torch.bfloat16, False, 2e-2),
    (torch.float32, True, 2e-2),   # fp32 base under bf16 autocast, as the Trainer runs it
    (torch.bfloat16, True, 2e-2),  # bf16 base under autocast: our CPU default
])
def test_fused_step_equals_peft(dtype, autocast, tol):
    reference = two_layer_lora(dtype)
    fused = copy.deepcopy(reference)
    assert enable_fused_lora(fused) == 2
    x = torch.randn(3, 5, 64, dtype=dtype)
    want, got = forward_backward(reference, x, autocast), forward_backward(fused, x, autocast)

    def rel(a, b):
        return ((a - b).norm() / a.norm()).item()
    assert rel(want[0], got[0]) < tol
    assert rel(want[1], got[1]) < tol
    for name, grad in want[2].items():
        assert grad.dtype == got[2][name].dtype  # the adapter's own dtype, as peft gives it
        assert rel(grad.float(), got[2][name].float()) < tol, name


def test_fused_add_is_one_graph_node_without_a_gradient_copy():
    """The in-place add must not be recorded on a view: autograd would then wrap it in
    CopySlices, which clones and copies back the whole output gradient of every layer."""
    model = two_layer_lora(torch.float32, dropout=0.1)
    enable_fused_lora(model)
    model.train()
    out = model(torch.randn(3, 5, 64, requires_grad=True))
    assert type(out.grad_fn).__name__ == "_LoraAddBackward"


def test_dropout_mask_is_inverted_dropout_on_the_adapter_input():
    """With a given mask, the fused op equals ``base + s * B A (x * m / (1-p))`` and its grads."""
    torch.manual_seed(1)
    p, scaling = 0.25, 2.0
    x = torch.randn(6, 10, requires_grad=True)
    a = torch.randn(3, 10, requires_grad=True)
    b = torch.randn(7, 3, requires_grad=True)
    base = torch.randn(6, 7, requires_grad=True)
    bits = keep_bits((6, 10), p, torch.float32, torch.device("cpu"))
    keep = (bits != 0).float()
    ours = _LoraAdd.apply(base.clone(), x, a, b, scaling / (1 - p), bits)  # a layer output
    ours.sum().backward()
    got = [t.grad.clone() for t in (base, x, a, b)]
    for t in (base, x, a, b):
        t.grad = None
    reference = base + scaling * ((x * keep / (1 - p)) @ a.t()) @ b.t()
    reference.sum().backward()
    assert torch.allclose(ours, reference, atol=1e-5)
    for mine, theirs in zip(got, (base.grad, x.grad, a.grad, b.grad)):
        assert torch.allclose(mine, theirs, atol=1e-4)


@pytest.fixture(params=["numpy", "cpu_kernels"])
def mask_kernels(request):
    """Where CPU dropout masks come from: numpy, or the compiled kernels where they build."""
    if request.param == "numpy":
        return None
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler for the CPU kernels")
    kernels = cpu_kernels.load()
    assert kernels is not None, cpu_kernels.why_unavailable()
    return kernels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_keep_bits_drop_at_rate_p_and_follow_torch_seed(dtype, mask_kernels):
    cpu = torch.device("cpu")
    torch.manual_seed(3)
    bits = keep_bits((1000, 1001), 0.05, dtype, cpu, mask_kernels)
    assert bits.shape == (1000, 1001)
    assert bits.element_size() == torch.empty((), dtype=dtype).element_size()
    assert set(bits.unique().tolist()) == {0, -1}
    assert abs((bits == 0).float().mean().item() - 0.05) < 0.002
    assert abs((bits[:, :500] == 0).float().mean() - (bits[:, 500:] == 0).float().mean()) < 0.003
    torch.manual_seed(3)
    assert torch.equal(bits, keep_bits((1000, 1001), 0.05, dtype, cpu, mask_kernels))
    assert not torch.equal(bits, keep_bits((1000, 1001), 0.05, dtype, cpu, mask_kernels))


def test_fused_dropout_survives_checkpoint_recomputation(mask_kernels):
    """Recomputed activations must see the same masks, or the gradients would be wrong."""
    from torch.utils.checkpoint import checkpoint
    model = two_layer_lora(torch.float32, dropout=0.3)
    enable_fused_lora(model)
    if mask_kernels is not None:
        assert cpu_kernels.enable_cpu_kernels(model)["lora_dropout"] == 2
    model.train()
    x = torch.randn(4, 64, requires_grad=True)

    def grads(use_checkpoint):
        model.zero_grad()
        torch.manual_seed(7)
        out = checkpoint(model, x, use_reentrant=False) if use_checkpoint else model(x)
        out.pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]
    plain, recomputed = grads(False), grads(True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, recomputed))


def test_outside_training_and_for_variants_peft_runs_its_own_forward():
    model = two_layer_lora(torch.float32, dropout=0.5)
    reference = copy.deepcopy(model)
    enable_fused_lora(model)
    x = torch.randn(2, 64)
    model.eval()
    reference.eval()
    assert torch.equal(model(x), reference(x))  # eval: no dropout, peft's path
    with torch.no_grad():
        model.train()
        reference.train()
        torch.manual_seed(0)
        out = model(x)
        torch.manual_seed(0)
        assert torch.equal(out, reference(x))  # no grad: peft's path, peft's dropout
    dora = two_layer_lora(torch.float32, use_dora=True)
    enable_fused_lora(dora)
    layer = dora.base_model.model[0]
    assert isinstance(layer, FusedLoraLinear) and layer._fused_adapter((), {}) is None
