"""The execution plan (one place for every machine-dependent choice) and the speed-ups
switch: plans for machines this box is not, parity of each speed-up with its reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from finetune_gui.config import RunConfig
from finetune_gui.plan import Machine, resolve_plan
from finetune_gui.training import TrainingJob

GIB = 2 ** 30
A100 = Machine(cuda=True, cuda_bf16=True, cuda_count=1, cuda_total_bytes=80 * GIB,
               has_bitsandbytes=True, ram_available_bytes=64 * GIB)
T4 = Machine(cuda=True, cuda_bf16=False, cuda_count=1, cuda_total_bytes=16 * GIB,
             has_bitsandbytes=True, ram_available_bytes=12 * GIB)
CPU_BF16 = Machine(cpu_bf16=True, ram_available_bytes=16 * GIB, has_bitsandbytes=True)
CPU_FP32 = Machine(cpu_bf16=False, ram_available_bytes=16 * GIB, has_bitsandbytes=True)
SMALL_RAM = Machine(cpu_bf16=True, ram_available_bytes=GIB // 4, has_bitsandbytes=True)


def plan_for(machine: Machine, **settings):
    cfg = RunConfig()
    for key, value in settings.items():
        cfg.set(key.replace("__", "."), value)
    return resolve_plan(cfg, machine, base_params=135_000_000)


@pytest.mark.parametrize("machine,settings,want", [
    # A T4/V100 only emulates bf16: fp16 mixed precision, never bf16
    (T4, {}, {"precision": "fp16", "compute_dtype": "float16", "base_dtype": "float16"}),
    (A100, {}, {"precision": "bf16", "base_dtype": "bfloat16", "optimizer": "adamw_torch",
                "attention": "sdpa", "device_index": 0}),
    (A100, {"model__quantization": "4bit"},
     {"base_dtype": "nf4", "optimizer": "paged_adamw_8bit", "dequantise_4bit": False}),
    (replace(A100, has_flash_attn=True), {},
     {"attention": "flash_attention_2"}),
    (replace(A100, local_rank=1), {}, {"device_index": 1}),
    # a bf16 CPU stores the frozen base in bf16, as a GPU would hold it
    (CPU_BF16, {}, {"device": "cpu", "precision": "bf16", "base_dtype": "bfloat16",
                    "load_dtype": "float32", "attention": "eager",
                    "optimizer": "adamw_torch_fused", "device_index": None}),
    (CPU_FP32, {}, {"precision": "fp32", "base_dtype": "float32", "attention": "sdpa"}),
    # 4-bit on a CPU: quantised, then dequantised once where the RAM allows it
    (CPU_BF16, {"model__quantization": "4bit"},
     {"base_dtype": "bfloat16", "dequantise_4bit": True}),
    (CPU_FP32, {"model__quantization": "4bit"}, {"base_dtype": "float32", "dequantise_4bit": True}),
    (SMALL_RAM, {"model__quantization": "4bit"}, {"base_dtype": "nf4", "dequantise_4bit": False}),
    (CPU_BF16, {"model__quantization": "4bit", "train__speedups": "off"},
     {"base_dtype": "nf4", "dequantise_4bit": False}),
    (CPU_BF16, {"train__precision": "fp16", "model__quantization": "8bit"},
     {"precision": "fp32", "base_dtype": "int8"}),
    (CPU_BF16, {"model__device": "cuda"}, {"device": "cuda"}),  # refused at load, with a message
])
def test_plan_for_machines(machine, settings, want):
    plan = plan_for(machine, **settings)
    got = {key: getattr(plan, key) for key in want}
    assert got == want, plan.summary()


SAFE = ("answer_head", "shared_prefix", "fused_lora", "fast_dropout")  # on any device


@pytest.mark.parametrize("machine,settings,want", [
    (CPU_FP32, {}, (*SAFE, "cpu_kernels")),
    (CPU_FP32, {"train__speedups": "off"}, ()),
    (CPU_FP32, {"train__speedups": "off", "train__fused_lora": "on"}, ("fused_lora",)),
    (CPU_FP32, {"train__cpu_kernels": "off"}, SAFE),
    (CPU_FP32, {"train__cpu_kernels": True}, (*SAFE, "cpu_kernels")),  # an old config's switch
    (CPU_FP32, {"model__quantization": "4bit"}, (*SAFE, "cpu_kernels", "dequantise_4bit")),
    (SMALL_RAM, {"model__quantization": "4bit"},
     ("answer_head", "shared_prefix", "fast_dropout", "cpu_kernels")),  # NF4: peft's forward
    (A100, {}, SAFE),  # liger not installed
    (replace(A100, has_liger=True), {}, (*SAFE, "liger")),
    (replace(A100, has_liger=True), {"train__speedups": "safe"}, SAFE),
    # packed rows share no prefix; NEFTune's noise is drawn per row
    (CPU_FP32, {"train__packing": True},
     ("answer_head", "fused_lora", "fast_dropout", "cpu_kernels")),
    (CPU_FP32, {"train__method": "dpo"},
     ("compact_logprobs", "fused_lora", "fast_dropout", "cpu_kernels")),
    (A100, {"train__method": "dpo"}, ("fused_lora", "fast_dropout")),
    (CPU_FP32, {"train__neftune_noise_alpha": 5.0},
     ("answer_head", "fused_lora", "fast_dropout", "cpu_kernels")),
])
def test_one_switch_chooses_the_speedups(machine, settings, want):
    assert plan_for(machine, **settings).speedups == want


def test_plan_notes_say_why_4bit_is_kept():
    plan = plan_for(SMALL_RAM, model__quantization="4bit")
    assert any("4-bit kept" in note and "GiB" in note for note in plan.notes), plan.notes
    plan = plan_for(CPU_BF16, model__quantization="4bit")
    assert any("dequantised once" in note for note in plan.notes), plan.notes


def train_each(config, tmp_path: Path, key: str, values) -> dict:
    """A finished run of ``config`` for each value of ``key``: {value: its JobState}."""
    states = {}
    for value in values:
        cfg = config.copy()
        cfg.set(key, value)
        cfg.set("train.output_dir", str(tmp_path / value))
        states[value] = TrainingJob(cfg).run()
        assert states[value].status == "finished", states[value].message
    return states


def test_loss_curve_agrees_with_speedups_on_and_off(tiny_config, tmp_path):
    """Every safe speed-up against the libraries' own code: same data, same seed — in fp32,
    where both must agree closely on any machine (in bf16, roundings in a different order
    drift by ~0.2% over a few steps; the kernels' bf16 parity is tested op by op)."""
    tiny_config.set("train.precision", "fp32")
    states = train_each(tiny_config, tmp_path, "train.speedups", ("all", "off"))
    curves = {level: [loss for _, loss in state.loss] for level, state in states.items()}
    fast, reference = curves["all"], curves["off"]
    assert len(fast) == len(reference) >= 10
    assert fast[-1] < 0.8 * fast[0]
    assert fast == pytest.approx(reference, rel=1e-3), (fast, reference)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("bitsandbytes"),
                    reason="needs bitsandbytes")
def test_dequantised_4bit_base_computes_what_4bit_computes(tiny_config):
    """Dequantising once gives the weights bitsandbytes dequantises at every step, exactly
    (compared in fp32: on a bf16 CPU the dequantised base would be stored in bf16 whole)."""
    import bitsandbytes

    from finetune_gui import models
    tiny_config.set("model.quantization", "4bit")
    tiny_config.set("model.compute_dtype", "float32")
    ids = torch.randint(0, 200, (2, 24))
    loaded, outputs = {}, {}
    for level in ("all", "off"):
        tiny_config.set("train.speedups", level)
        plan = resolve_plan(tiny_config)
        assert plan.dequantise_4bit == (level == "all")
        model, _ = models.load_model(tiny_config.model, for_training=False, plan=plan)
        quantised = any("4bit" in type(m).__name__ for m in model.modules())
        assert quantised == (level == "off")
        # read before any forward: bitsandbytes repacks 4-bit weights for its CPU kernel then
        loaded[level] = {name: (bitsandbytes.functional.dequantize_4bit(
            m.weight.data, m.weight.quant_state) if type(m).__name__ == "Linear4bit"
            else m.weight.detach().clone()) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name != "lm_head"}
        with torch.no_grad():
            outputs[level] = model(input_ids=ids).logits.float()
    assert len(loaded["off"]) == len(loaded["all"]) == 14
    for name, per_step in loaded["off"].items():
        assert torch.equal(loaded["all"][name], per_step), name
    # The logits then agree up to bitsandbytes' own CPU kernel, which on a CPU with native
    # bf16 (after repacking the weights) rounds like bf16: ~0.5% apart here, within 1e-4 on
    # the AVX2-only EPYC.
    error = (outputs["all"] - outputs["off"]).norm() / outputs["off"].norm()
    assert error < 2e-2, error


@pytest.mark.skipif(not __import__("importlib").util.find_spec("bitsandbytes"),
                    reason="needs bitsandbytes")
def test_dequantised_4bit_base_is_not_prepared_as_a_kbit_model(tiny_config, monkeypatch):
    """transformers still flags a dequantised model is_loaded_in_4bit; k-bit preparation then
    cast the whole base to fp32 (on a bf16 CPU: 4-bit ran at 0.7x of 16-bit, 3.2 GB instead
    of 2.3 GB). Only real quantised layers call for it."""
    import peft

    from finetune_gui import lora, models
    tiny_config.set("model.quantization", "4bit")
    plan = resolve_plan(tiny_config)
    assert plan.dequantise_4bit
    model, _ = models.load_model(tiny_config.model, plan=plan)

    def refuse(*args, **kwargs):
        raise AssertionError("k-bit preparation of a dequantised base")
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", refuse)
    tuned = lora.attach_lora(model, tiny_config.lora, gradient_checkpointing=False)
    frozen = {p.dtype for n, p in tuned.named_parameters() if "lora_" not in n}
    assert frozen == {getattr(torch, plan.base_dtype)}


def test_plan_is_saved_beside_the_run(tiny_config):
    import json
    state = TrainingJob(tiny_config).run()
    assert state.status == "finished", state.message
    saved = json.loads((Path(tiny_config.train.output_dir) / "plan.json").read_text())
    assert saved == resolve_plan(tiny_config).to_dict()
    state_json = json.loads((Path(tiny_config.train.output_dir) / "state.json").read_text())
    assert state_json["step"] == tiny_config.train.max_steps


def _built_kernels() -> Path:
    from finetune_gui.speedups import cpu_kernels
    if cpu_kernels.load() is None:
        pytest.skip(f"no kernels here: {cpu_kernels.why_unavailable()}")
    return cpu_kernels.build_dir()


def test_stale_lock_of_a_killed_build_does_not_hang_the_next_job(tmp_path):
    """A build killed mid-way leaves build_dir/lock; torch alone would wait for ever."""
    built = _built_kernels()
    cache = tmp_path / "cache"
    target = cache / built.relative_to(built.parents[2])
    shutil.copytree(built, target)
    (target / "lock").touch()
    old = time.time() - 3600
    os.utime(target / "lock", (old, old))
    code = ("from finetune_gui.speedups import cpu_kernels as k; m = k.load(); "
            "print(m is not None, k.build_notes())")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=240, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("True"), done.stdout + done.stderr[-2000:]
    assert "interrupted kernel build" in done.stdout
    assert not (target / "lock").exists()


def test_live_lock_of_another_build_falls_back_after_a_wait(tmp_path, monkeypatch):
    from finetune_gui.speedups import cpu_kernels
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(cpu_kernels, "LOCK_WAIT_SECONDS", 1)
    folder = cpu_kernels.build_dir()
    folder.mkdir(parents=True)
    (folder / "lock").touch()  # fresh: another process is building right now
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no compiler: the kernels are unavailable for another reason")
    started = time.time()
    assert cpu_kernels.load() is None
    assert time.time() - started < 30
    assert "another process" in cpu_kernels.why_unavailable()


@pytest.mark.skipif(not __import__("importlib").util.find_spec("bitsandbytes"),
                    reason="needs bitsandbytes")
def test_chat_never_merges_into_a_4bit_base(tiny_config):
    """Merging re-quantises NF4 layers and un-merging drifts the base: keep the branch."""
    from finetune_gui.chat import ChatEngine
    tiny_config.set("model.quantization", "4bit")
    tiny_config.set("train.speedups", "off")  # the base stays 4-bit
    state = TrainingJob(tiny_config).run()
    assert state.status == "finished", state.message
    engine = ChatEngine.from_run(tiny_config.train.output_dir)
    ids = torch.tensor([[1, 5, 9, 12, 40]])
    with engine.using(use_adapter=False) as model:
        before = model(ids).logits.clone()
    with engine.using() as model:
        tuned = model(ids).logits.clone()
    engine.merge()
    assert not engine.merged
    with engine.using() as model:
        assert torch.equal(model(ids).logits, tuned)
    with engine.using(use_adapter=False) as model:
        assert torch.equal(model(ids).logits, before)


def test_switch_values_survive_yaml_on_off():
    """YAML reads a bare off/on as false/true: --set train.speedups=off must still mean off."""
    cfg = RunConfig()
    cfg.apply_override("train.speedups=off")
    cfg.apply_override("train.fused_lora=on")
    assert (cfg.train.speedups, cfg.train.fused_lora) == ("off", "on")
    from finetune_gui.errors import ConfigError
    with pytest.raises(ConfigError, match="train.speedups"):
        cfg.apply_override("train.speedups=on")  # not a level: off, safe or all


def tiny_lora_model(attention: str = "eager", layers: int = 3, **lora):
    """A random 64-wide Llama with random (non-zero) LoRA weights, in training mode."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         attn_implementation=attention)
    model = get_peft_model(AutoModelForCausalLM.from_config(config),
                           LoraConfig(r=4, init_lora_weights=False,
                                      **{"target_modules": "all-linear", **lora}))
    return model.train()


def outputs_and_grads(model, mask: torch.Tensor, forward):
    """The outputs at real positions and the adapter gradients of a loss over them."""
    model.zero_grad()
    out = forward()
    (out * mask[..., None]).pow(2).mean().backward()
    return out.detach() * mask[..., None], [p.grad.clone() for p in model.parameters()
                                            if p.requires_grad]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("shared,padded_row_ends", [(12, (30, 25, 30, 20)), (29, (30,) * 4)])
def test_shared_prefix_gives_the_outputs_and_gradients_of_whole_rows(attention, shared,
                                                                    padded_row_ends):
    """The batch's common start computed once: same outputs at every real position and the
    same adapter gradients as running every row whole (the reference path)."""
    from finetune_gui.speedups.shared_prefix import (common_prefix_length,
                                                     forward_with_shared_prefix)
    model = tiny_lora_model(attention)
    ids = torch.randint(0, 300, (4, 30))
    ids[:, :shared] = ids[0, :shared]
    mask = torch.ones_like(ids)
    for row, end in enumerate(padded_row_ends):
        mask[row, end:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    prefix = common_prefix_length(ids, mask)
    assert prefix == min(shared, min(padded_row_ends), 29)
    whole, whole_grads = outputs_and_grads(model, mask, lambda: model(**inputs).logits)
    fast, fast_grads = outputs_and_grads(
        model, mask, lambda: forward_with_shared_prefix(model, inputs, prefix))
    assert fast.shape == whole.shape
    assert torch.allclose(fast, whole, atol=1e-5)
    for got, want in zip(fast_grads, whole_grads):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)


def test_common_prefix_stops_at_padding_and_needs_two_rows():
    from finetune_gui.speedups.shared_prefix import common_prefix_length
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 9]])
    assert common_prefix_length(ids, None) == 3
    assert common_prefix_length(ids, torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])) == 1
    assert common_prefix_length(ids[:1], None) == 0
    assert common_prefix_length(torch.tensor([[1, 2], [1, 2]]), None) == 1  # one left to run


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_frozen_bottom_replays_the_lower_layers_exactly(shared_prefix):
    """Adapters on the top layers only: the second pass over a batch skips the lower layers
    (their modules are not called) and gives the same outputs and gradients; with a shared
    prefix, only its one-row call runs them."""
    from finetune_gui.speedups import frozen_bottom
    from finetune_gui.speedups.shared_prefix import (common_prefix_length,
                                                     forward_with_shared_prefix)
    model = tiny_lora_model(layers=4, target_modules=["q_proj", "v_proj", "down_proj"],
                            layers_to_transform=[2, 3])
    ids = torch.randint(0, 300, (4, 30))
    ids[:, :12] = ids[0, :12]
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[3, 20:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    whole, whole_grads = outputs_and_grads(model, mask, lambda: model(**inputs).logits)
    causal_lm = model.get_base_model()
    assert frozen_bottom.why_not(causal_lm) is None
    bottom = frozen_bottom.attach(causal_lm, 2 ** 30, log=lambda line: None)
    assert bottom.first_trained == 2
    lower_calls = []
    for layer in frozen_bottom.decoder_layers(causal_lm)[:2]:
        layer.mlp.register_forward_hook(lambda *args: lower_calls.append(1))

    def forward():
        with bottom.batch(ids, mask):
            if shared_prefix:
                return forward_with_shared_prefix(model, inputs, common_prefix_length(ids, mask),
                                                  window=bottom.window)
            return model(**inputs).logits
    for recorded in (False, True):
        lower_calls.clear()
        out, grads = outputs_and_grads(model, mask, forward)
        assert torch.allclose(out, whole, atol=1e-6)
        for got, want in zip(grads, whole_grads):
            assert torch.allclose(got, want, atol=1e-7, rtol=1e-5)
        # recording: every lower layer runs (twice with a shared prefix: prefix, rest);
        # replaying: none, or only the shared prefix's one-row call
        assert len(lower_calls) == (2 * (1 + shared_prefix) if not recorded
                                    else 2 if shared_prefix else 0)


def test_frozen_bottom_stops_past_its_budget_and_refuses_trainable_lower_layers():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from finetune_gui.speedups import frozen_bottom
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    everywhere = get_peft_model(AutoModelForCausalLM.from_config(config),
                                LoraConfig(r=2, target_modules=["q_proj"]))
    assert "first layer" in frozen_bottom.why_not(everywhere.get_base_model())
    top = get_peft_model(AutoModelForCausalLM.from_config(config),
                         LoraConfig(r=2, target_modules=["q_proj"], layers_to_transform=[1]))
    lines = []
    bottom = frozen_bottom.attach(top.get_base_model(), budget_bytes=1000, log=lines.append)
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad(), bottom.batch(ids, None):
        top(input_ids=ids)
    assert "outgrew" in lines[-1]  # 2 rows x 10 tokens x 32 floats > 1000 bytes
    with torch.no_grad(), bottom.batch(ids, None):  # off now: the layers run as before
        assert torch.isfinite(top(input_ids=ids).logits).all()


def test_loss_curve_agrees_with_frozen_lower_layers_kept_and_not(tiny_config, tmp_path):
    """Adapters on the top layer of two, several epochs: from the second epoch on the lower
    layer is replayed from its record, and the loss curve is the reference's."""
    tiny_config.set("lora.last_layers", 1)
    tiny_config.set("train.max_steps", 0)
    tiny_config.set("train.epochs", 3)
    states = train_each(tiny_config, tmp_path, "train.frozen_bottom", ("on", "off"))
    curves = {setting: [loss for _, loss in state.loss] for setting, state in states.items()}
    for setting, state in states.items():
        kept = any("outputs of the 1 frozen lower layers are kept" in line for line in state.log)
        assert kept == (setting == "on"), state.log
    assert len(curves["on"]) >= 15
    assert curves["on"] == pytest.approx(curves["off"], rel=1e-4)
