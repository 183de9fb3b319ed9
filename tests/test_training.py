"""Training on a tiny random Llama: the loss must fall, and stop/resume must be seamless."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from finetune_gui.chat import ChatEngine
from finetune_gui.plan import resolve_plan
from finetune_gui.runs import RunPaths, read_metrics
from finetune_gui.training import JobBusyError, TrainingJob


def losses(state):
    return [loss for _, loss in state.loss]


def assert_learned(state):
    values = losses(state)
    assert state.status == "finished", state.message
    assert len(values) >= 6
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert last < 0.8 * first, values


@pytest.mark.parametrize("overrides", [
    {},
    {"lora.target_modules": ["q_proj", "v_proj"], "lora.r": 4},
    {"train.gradient_checkpointing": True},
    {"train.precision": "bf16", "train.gradient_checkpointing": True},
    {"lora.use_dora": True},
    {"lora.use_rslora": True, "data.template": "chatml"},
    {"model.quantization": "4bit", "train.gradient_checkpointing": True},
    {"model.quantization": "8bit"},
    {"train.fused_lora": "off"},
    {"lora.dropout": 0.1, "train.precision": "bf16", "train.gradient_checkpointing": True},
    {"train.cpu_kernels": "off", "train.precision": "bf16"},
    {"train.speedups": "off", "lora.dropout": 0.1},
    {"model.quantization": "4bit", "train.speedups": "off"},
    {"lora.last_layers": 1, "train.gradient_checkpointing": True},
], ids=["default", "qv-r4", "checkpointing", "bf16-checkpointing", "dora", "rslora-chatml",
        "qlora-4bit", "8bit", "peft-forward", "fused-dropout-bf16-checkpointing",
        "eager-cpu-ops", "last-layer-checkpointing", "speedups-off", "qlora-4bit-kept"])
def test_loss_falls(tiny_config, overrides):
    for key, value in overrides.items():
        tiny_config.set(key, value)
    state = TrainingJob(tiny_config).run()
    assert_learned(state)
    assert state.trainable_params > 0
    plan = resolve_plan(tiny_config)
    assert any(plan.summary() in line for line in state.log)
    fused = [line for line in state.log if "fused LoRA training step" in line]
    plain_lora = not tiny_config.lora.use_dora
    assert bool(fused) == plan.uses("fused_lora")
    if fused and plain_lora:
        assert "on 0 layers" not in fused[0]
    kernels = [line for line in state.log if "fused CPU kernels" in line]
    assert bool(kernels) == plan.uses("cpu_kernels")
    if kernels and shutil.which("c++"):  # the tiny Llama: 2 layers, 2 norms each + final
        assert "loss, 5 RMSNorm, 2 SwiGLU and " in kernels[-1], kernels


def test_run_folder_and_adapter_loads_with_plain_peft(tiny_config):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    state = TrainingJob(tiny_config).run()
    assert_learned(state)
    paths = RunPaths(Path(tiny_config.train.output_dir))
    assert paths.config.exists() and (paths.adapter / "run.yaml").exists()
    assert (paths.adapter / "adapter_model.safetensors").exists()
    assert json.loads(paths.state.read_text())["status"] == "finished"
    records = read_metrics(paths)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))

    engine = ChatEngine.from_run(paths.root)
    messages = [{"role": "user", "content": "What is code 3?"}]
    tuned = engine.answer(messages)
    base = engine.answer(messages, use_adapter=False)
    assert tuned != base, "the adapter should change the answer"

    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_config.model.name_or_path), str(paths.adapter))
    ids = torch.tensor([engine.prompt_ids(messages)])
    out = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=tiny_config.generation.max_new_tokens,
                         repetition_penalty=tiny_config.generation.repetition_penalty,
                         eos_token_id=engine._stop_ids)
    text = engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert text == tuned


def test_stop_then_resume_continues_to_the_planned_total(tiny_config):
    tiny_config.train.max_steps = 16
    job = TrainingJob(tiny_config)
    job.start()
    while job.state.step < 5 and job.state.status in ("loading", "running"):
        job.wait(0.05)
    job.stop()
    stopped = job.wait()
    assert stopped.status == "stopped", stopped.message
    k = stopped.step
    assert 5 <= k < 16
    paths = RunPaths(Path(tiny_config.train.output_dir))
    assert paths.latest_checkpoint().name == f"checkpoint-{k}"

    resumed = TrainingJob(tiny_config, resume=True).run()
    assert resumed.status == "finished", resumed.message
    steps = [s for s, _ in resumed.loss]
    assert steps == list(range(1, 17)), "the curve continues from k without a gap or restart"
    assert [r["step"] for r in read_metrics(paths) if "loss" in r] == list(range(1, 17))


def test_one_job_at_a_time(tiny_config, tmp_path):
    first = TrainingJob(tiny_config)
    first.start()
    try:
        second = tiny_config.copy()
        second.train.output_dir = str(tmp_path / "other")
        with pytest.raises(JobBusyError, match="already running"):
            TrainingJob(second).start()
    finally:
        first.stop()
        first.wait()


def test_eval_loss_is_logged(tiny_config):
    tiny_config.data.val_split = 0.25
    tiny_config.train.eval_steps = 4
    state = TrainingJob(tiny_config).run()
    assert [s for s, _ in state.eval_loss] == [4, 8, 12]
    assert state.eval_loss[-1][1] < state.eval_loss[0][1]


def test_targets_that_match_nothing_fail_clearly(tiny_config):
    tiny_config.lora.target_modules = ["query_key_value"]
    state = TrainingJob(tiny_config).run()
    assert state.status == "failed"
    assert "match no layer of this model" in state.message


def test_existing_run_is_not_overwritten(tiny_config):
    assert TrainingJob(tiny_config).run().status == "finished"
    again = TrainingJob(tiny_config).run()
    assert again.status == "failed" and "already holds a run" in again.message


def test_nan_loss_stops_the_run_with_a_message(tmp_path):
    from transformers import TrainerControl, TrainerState

    from finetune_gui.errors import FinetuneError
    import threading

    from finetune_gui.job_progress import JobState, ProgressCallback
    from finetune_gui.runs import RunPaths
    callback = ProgressCallback(JobState(), threading.Lock(), threading.Event(),
                                RunPaths(tmp_path), started=0.0)
    state = TrainerState()
    state.global_step = 7
    with pytest.raises(FinetuneError, match="loss became nan at step 7: training stopped"):
        callback.on_log(None, state, TrainerControl(), logs={"loss": math.nan})


@pytest.mark.parametrize("tied", [True, False])
def test_response_only_loss_equals_the_models_own_loss(tiny_model_dir, tied, tmp_path):
    """Skipping the head at untrained positions must not change the loss or its gradients."""
    from peft import LoraConfig as PeftLora, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from finetune_gui.trainer import ResponseOnlyTrainer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, tie_word_embeddings=tied)
    model = get_peft_model(model, PeftLora(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(0, 1000, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[2, 9:] = -100
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    trainer = ResponseOnlyTrainer(model=model, args=TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    assert trainer._head is not None, "the fast path applies to a plain Llama head"
    ours = trainer.compute_loss(model, dict(inputs))
    ours.backward()
    our_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    reference = model(**inputs).loss
    reference.backward()
    ref_grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.allclose(ours, reference, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(our_grads, ref_grads))
    assert model.get_base_model().lm_head.__class__.__name__ == "Linear", "head restored"


def test_bernoulli_dropout_matches_nn_dropout_statistics():
    from finetune_gui.speedups.dropout import BernoulliDropout
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    out = BernoulliDropout(0.2).train()(x)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.8) < 0.01
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.8))
    assert torch.equal(BernoulliDropout(0.2).eval()(x), x)


def test_cpu_bf16_training_keeps_a_bf16_base_and_fp32_adapters(tiny_config):
    from finetune_gui import models
    from finetune_gui.lora import attach_lora
    from finetune_gui.speedups.dropout import use_fast_dropout
    model, _ = models.load_model(tiny_config.model)
    models.store_in_bf16(model)
    model = attach_lora(model, tiny_config.lora, gradient_checkpointing=False)
    assert use_fast_dropout(model) == 0  # tiny_config has dropout 0: nothing to swap
    base = model.get_base_model()
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread nice")
def test_background_job_runs_at_lower_cpu_priority_than_the_app(tiny_config):
    """The app's handlers keep their priority; the job's thread (and its workers) yield."""
    import os
    import threading
    seen = {}

    class Probe(TrainingJob):
        def _recipe(self):
            seen["job"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            super()._recipe()
    app_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    job = Probe(tiny_config)
    job.start()
    state = job.wait(300)
    assert state.status == "finished", state.message
    assert seen["job"] == min(19, app_nice + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == app_nice
    assert any("CPU priority lowered" in line for line in state.log)


def test_last_layers_adapt_only_the_top_layers(tiny_config):
    from safetensors.torch import load_file
    tiny_config.lora.last_layers = 1          # the tiny Llama has layers 0 and 1
    state = TrainingJob(tiny_config).run()
    assert_learned(state)
    saved = load_file(Path(tiny_config.train.output_dir) / "adapter" / "adapter_model.safetensors")
    assert saved and all(".layers.1." in key for key in saved), sorted(saved)[:4]
    assert len({key.split(".layers.1.")[1].split(".")[1] for key in saved}) == 7  # all-linear
