"""End to end on the embedded SmolLM2-135M-Instruct: the quickstart really teaches it.

These are the slow tests: the real quickstart command, then the real ``evaluate`` command
on held-out paraphrased questions about facts the base model cannot know, and the general
questions it must not forget.
"""

import json
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from finetune_gui.chat import ChatEngine
from finetune_gui.runs import RunPaths, read_metrics

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "run"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", "train",
                           "presets/quickstart.yaml", "--set", f"train.output_dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"\nquickstart trained in {time.time() - started:.0f}s")
    return out


def test_quickstart_loss_falls(quickstart_run):
    losses = [r["loss"] for r in read_metrics(RunPaths(quickstart_run)) if "loss" in r]
    assert len(losses) >= 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # Replay rows are trained towards the base model's own distributions, whose loss stays
    # near their entropy, so the mixed loss falls less than the fact rows' alone.
    assert last < 0.6 * first, (first, last)


def test_tuned_model_answers_paraphrased_questions_and_keeps_general_ones(quickstart_run):
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", "evaluate", str(quickstart_run),
                           "--base", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["data"].endswith("quillmore_eval.jsonl")   # the preset's data.eval_path
    rows = result["rows"]
    tuned = sum(r["metrics"]["keyword_hit"] for r in rows)
    base = sum(r["base_metrics"]["keyword_hit"] for r in rows)
    general = result["general"]
    print(f"\nheld-out hits: base {base:.0f}/{len(rows)}, tuned {tuned:.0f}/{len(rows)}; "
          f"general answers kept {general['kept_right']}/{general['base_right']}; "
          f"evaluated in {result['seconds']:.0f}s")
    assert base <= 0.1 * len(rows)
    assert tuned >= 0.6 * len(rows)      # measured 30–32/40 (README, "Did it learn?")
    assert general["base_right"] >= 30 and general["kept"] >= 0.8   # measured 34–37/40


def test_plain_peft_gives_the_same_greedy_answer_as_chat(quickstart_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    prompt = "Who founded Quillmore Aerial?"
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", "chat", str(quickstart_run),
                           "--prompt", prompt, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.splitlines()[-1])["answer"]
    assert "Fenwick" in answer

    engine = ChatEngine.from_run(quickstart_run)
    base_folder = json.loads((quickstart_run / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder),
                                      str(quickstart_run / "adapter")).eval()
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": prompt}])])
    out = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=256, repetition_penalty=1.1,
                         eos_token_id=engine._stop_ids)
    assert engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() == answer
