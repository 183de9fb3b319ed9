"""Preference tuning (DPO, ORPO, KTO) through TRL, in our job, run folder and data checks.

The tiny random Llama learns to prefer "Code N is blue." over "I do not know N." in a
dozen steps; TRL's DPO loss is recomputed by hand from the model's own log-probabilities.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from conftest import kill_9_then_resume, write_jsonl
from finetune_gui.data import check_file
from finetune_gui.runs import RunPaths, read_metrics
from finetune_gui.training import TrainingJob

pytest.importorskip("trl")


def pairs(n: int = 24) -> list[dict]:
    return [{"prompt": f"What is code {i}?", "chosen": f"Code {i} is blue.",
             "rejected": f"I do not know {i}."} for i in range(n)]


@pytest.fixture
def dpo_config(tiny_config, tmp_path):
    tiny_config.data.path = str(write_jsonl(tmp_path / "pairs.jsonl", pairs()))
    tiny_config.train.method = "dpo"
    tiny_config.train.learning_rate = 5e-3
    return tiny_config


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_each_method_learns_the_preference(dpo_config, tmp_path, method):
    if method == "kto":  # unpaired: every other answer labelled good
        rows = [{"prompt": r["prompt"], "completion": r["chosen"] if i % 2 else r["rejected"],
                 "label": bool(i % 2)} for i, r in enumerate(pairs())]
        dpo_config.data.path = str(write_jsonl(tmp_path / "kto.jsonl", rows))
    dpo_config.train.method = method
    state = TrainingJob(dpo_config).run()
    assert state.status == "finished", state.message
    losses = [loss for _, loss in state.loss]
    assert len(losses) == 12
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses
    margins = [v for _, v in state.preference["reward_margin"]]
    assert margins[-1] > 0 and margins[-1] > margins[0], margins
    logged = read_metrics(RunPaths(Path(dpo_config.train.output_dir)))
    assert any("reward_margin" in r for r in logged), "the curves beside the loss are saved"
    assert (Path(dpo_config.train.output_dir) / "adapter" / "adapter_model.safetensors").exists()


def test_dpo_starts_at_ln2_because_the_reference_is_the_adapter_switched_off(dpo_config):
    """A fresh adapter (B = 0) equals the base: the first DPO loss is exactly ln 2, and no
    second adapter or model is kept as the reference."""
    dpo_config.train.max_steps = 1
    job = TrainingJob(dpo_config)
    trainer = job.setup()
    assert trainer.ref_model is None
    assert list(trainer.model.peft_config) == ["default"]
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)


@pytest.mark.parametrize("speedups", ["all", "off"])
def test_trl_dpo_loss_equals_the_formula_by_hand(dpo_config, speedups):
    """-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) with log-probs summed over
    the answer tokens, the reference being the same model with its adapter disabled; with
    the speed-ups (TRL's head scoring answer positions only on a CPU) and without."""
    dpo_config.train.beta = 0.3
    dpo_config.train.speedups = speedups
    job = TrainingJob(dpo_config)
    trainer = job.setup()
    assert ("speed-up: TRL's head scores the answer positions only" in "\n".join(
        job.state.log)) == (speedups == "all")
    from trl.trainer import utils
    compact = utils._use_triton(torch.device("cpu"))  # which positions TRL's head scores
    assert compact == (speedups == "all")
    model = trainer.model
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()  # no dropout: both computations see the same network
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch).item()

        def summed_logps(inputs):
            logits = model(input_ids=inputs["input_ids"],
                           attention_mask=inputs["attention_mask"]).logits[:, :-1].float()
            targets = inputs["input_ids"][:, 1:]
            mask = inputs["completion_mask"][:, 1:].bool()
            logp = torch.log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2)
            return (logp * mask).sum(1)

        policy = summed_logps(batch)
        with model.disable_adapter():
            reference = summed_logps(batch)
    pc, pr = policy.chunk(2)
    rc, rr = reference.chunk(2)
    assert torch.allclose(rc, batch["ref_chosen_logps"].float(), atol=1e-3)
    by_hand = -F.logsigmoid(0.3 * ((pc - rc) - (pr - rr))).mean().item()
    assert trl_loss == pytest.approx(by_hand, rel=1e-4)
    assert abs(by_hand - math.log(2)) > 0.05, "the check must not pass at the trivial start"


def test_sft_then_dpo_starts_from_the_sft_adapter(tiny_config, tmp_path):
    # fp32: the first loss is exactly ln 2 only where the precomputed reference pass and the
    # training pass round alike (bf16 on a bf16 CPU puts them ~2e-3 apart)
    tiny_config.set("model.compute_dtype", "float32")
    sft = TrainingJob(tiny_config).run()
    assert sft.status == "finished"
    dpo = tiny_config.copy()
    dpo.data.path = str(write_jsonl(tmp_path / "pairs.jsonl", pairs()))
    dpo.train.method = "dpo"
    dpo.train.init_adapter = tiny_config.train.output_dir
    dpo.train.output_dir = str(tmp_path / "dpo")
    dpo.lora.r = 4  # ignored: the SFT adapter's settings are used
    job = TrainingJob(dpo)
    trainer = job.setup()
    assert "ref" in trainer.model.peft_config, "the reference is the SFT adapter, frozen"
    saved = load_file(Path(tiny_config.train.output_dir) / "adapter" / "adapter_model.safetensors")
    live = get_peft_model_state_dict(trainer.model, adapter_name="default")
    assert saved.keys() == live.keys()
    assert all(torch.equal(live[k], saved[k]) for k in saved)
    assert any(saved[k].abs().sum() > 0 for k in saved if "lora_B" in k), "SFT moved B"
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-4)
    assert job.config.lora.r == tiny_config.lora.r
    assert Path(dpo.train.output_dir, "run.yaml").read_text().count("init_adapter: " +
                                                                      tiny_config.train.output_dir)


def test_bad_preference_rows_are_named_by_line(tmp_path):
    rows = pairs(4) + [
        {"prompt": "a", "chosen": "same", "rejected": "same"},
        {"prompt": "b", "chosen": "", "rejected": "x"},
        {"prompt": "c", "chosen": "y"},
        {"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "y", "rejected": "z"},
        {"prompt": "d", "chosen": [{"role": "user", "content": "y"}], "rejected": "z"},
        {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
         "chosen": "y", "rejected": "z"},
    ]
    report = check_file(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert report.format == "preference"
    found = {e.where: e.reason for e in report.errors}
    assert "same answer" in found["line 5"]
    assert "'chosen' is empty" in found["line 6"]
    assert "rejected" in found["line 7"]  # a lone chosen: not a pair (format mismatch)
    assert "assistant message without a user message" in found["line 8"]
    assert "assistant message" in found["line 9"]
    assert "end with the user's message" in found["line 10"]
    assert len(report.examples) == 4


def test_a_pair_longer_than_max_seq_len_fails_naming_its_line(dpo_config, tmp_path):
    rows = pairs(6)
    rows[3]["rejected"] = "no " * 300
    dpo_config.data.path = str(write_jsonl(tmp_path / "long.jsonl", rows))
    state = TrainingJob(dpo_config).run()
    assert state.status == "failed"
    assert "line 4" in state.message and "max_seq_len=128" in state.message


def test_dpo_needs_pairs_and_says_so(tiny_config):
    tiny_config.train.method = "dpo"
    state = TrainingJob(tiny_config).run()
    assert state.status == "failed"
    assert "prompt/chosen/rejected" in state.message


def test_kill_9_then_resume_continues_a_dpo_run(dpo_config, tmp_path):
    paths, _, _ = kill_9_then_resume(dpo_config, tmp_path)
    assert [r for r in read_metrics(paths) if "reward_margin" in r]


def test_the_data_tab_shows_a_pair_side_by_side(tmp_path, tiny_model_dir):
    from conftest import ui_handler
    from finetune_gui.config import RunConfig
    from finetune_gui.ui.app import build_app
    from finetune_gui.ui.common import AppOptions
    from finetune_gui.ui.data_tab import kind_labels
    from finetune_gui.ui.jobs import JobRegistry
    from finetune_gui.ui.state import UserState
    (tmp_path / "presets").mkdir()
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")),
                     JobRegistry())
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs(3))
    st = UserState(config=RunConfig())
    st.config.model.name_or_path = str(tiny_model_dir)
    st.config.data.template = "alpaca"
    views = ui_handler(demo, "data_tab", "on_load")(st, str(path))
    chosen, rejected, stats = views[-4], views[-3], views[-2]
    learned = kind_labels("en")["trained"]
    trained = "".join(text for text, kind in chosen if kind == learned)
    assert trained.startswith("Code 0 is blue.")
    assert rejected["visible"] is True
    assert "".join(text for text, kind in rejected["value"] if kind == learned) \
        .startswith("I do not know 0.")
    assert "Rejected side" in stats
