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


@pytest.mark.parametrize("machine,settings,want", [
    (CPU_FP32, {}, ("answer_head", "fused_lora", "fast_dropout", "cpu_kernels")),
    (CPU_FP32, {"train__speedups": "off"}, ()),
    (CPU_FP32, {"train__speedups": "off", "train__fused_lora": "on"}, ("fused_lora",)),
    (CPU_FP32, {"train__cpu_kernels": "off"}, ("answer_head", "fused_lora", "fast_dropout")),
    (CPU_FP32, {"train__cpu_kernels": True}, ("answer_head", "fused_lora", "fast_dropout",
                                              "cpu_kernels")),  # an old config's switch
    (CPU_FP32, {"model__quantization": "4bit"},
     ("answer_head", "fused_lora", "fast_dropout", "cpu_kernels", "dequantise_4bit")),
    (SMALL_RAM, {"model__quantization": "4bit"},
     ("answer_head", "fast_dropout", "cpu_kernels")),  # NF4 layers: peft's own forward
    (A100, {}, ("answer_head", "fused_lora", "fast_dropout")),  # liger not installed
    (replace(A100, has_liger=True), {},
     ("answer_head", "fused_lora", "fast_dropout", "liger")),
    (replace(A100, has_liger=True), {"train__speedups": "safe"},
     ("answer_head", "fused_lora", "fast_dropout")),
])
def test_one_switch_chooses_the_speedups(machine, settings, want):
    assert plan_for(machine, **settings).speedups == want


def test_plan_notes_say_why_4bit_is_kept():
    plan = plan_for(SMALL_RAM, model__quantization="4bit")
    assert any("4-bit kept" in note and "GiB" in note for note in plan.notes), plan.notes
    plan = plan_for(CPU_BF16, model__quantization="4bit")
    assert any("dequantised once" in note for note in plan.notes), plan.notes


def test_loss_curve_agrees_with_speedups_on_and_off(tiny_config, tmp_path):
    """Every safe speed-up against the libraries' own code: same data, same seed."""
    curves = {}
    for level in ("all", "off"):
        cfg = tiny_config.copy()
        cfg.set("train.speedups", level)
        cfg.set("train.output_dir", str(tmp_path / level))
        state = TrainingJob(cfg).run()
        assert state.status == "finished", state.message
        curves[level] = [loss for _, loss in state.loss]
    fast, reference = curves["all"], curves["off"]
    assert len(fast) == len(reference) >= 10
    assert fast[-1] < 0.8 * fast[0]
    assert fast == pytest.approx(reference, rel=1e-3), (fast, reference)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("bitsandbytes"),
                    reason="needs bitsandbytes")
def test_dequantised_4bit_base_computes_what_4bit_computes(tiny_config):
    """Dequantising once gives the numbers bitsandbytes dequantises at every step."""
    from finetune_gui import models
    tiny_config.set("model.quantization", "4bit")
    ids = torch.randint(0, 200, (2, 24))
    outputs = {}
    for level in ("all", "off"):
        tiny_config.set("train.speedups", level)
        plan = resolve_plan(tiny_config)
        assert plan.dequantise_4bit == (level == "all")
        model, _ = models.load_model(tiny_config.model, for_training=False, plan=plan)
        quantised = any("4bit" in type(m).__name__ for m in model.modules())
        assert quantised == (level == "off")
        with torch.no_grad():
            outputs[level] = model(input_ids=ids).logits.float()
    assert torch.allclose(outputs["all"], outputs["off"], atol=1e-4, rtol=1e-4)


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
