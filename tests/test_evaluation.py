"""The Evaluate step on a tiny random Llama: held-out rows, the JSON result, batched answers,
early stopping and replay."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, write_jsonl
from finetune_gui.chat import ChatEngine
from finetune_gui.config import GenerationConfig
from finetune_gui.data import Example, Turn, load_examples
from finetune_gui.errors import DataError, FinetuneError
from finetune_gui.evaluation import (HELDOUT_FILE, EvalOptions, evaluate_run, read_eval_rows,
                                     rows_source)
from finetune_gui.runs import RunPaths, read_state
from finetune_gui.training import TrainingJob


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, tiny_model_dir):
    """A tiny run with a quarter of its 24 rows held out (some rows carry keywords)."""
    from finetune_gui.config import RunConfig
    folder = tmp_path_factory.mktemp("split-run")
    rows = [{"instruction": f"What is code {i}?", "input": "",
             "output": f"Code {i} is blue {i % 3} square.", "keywords": [f"blue {i % 3}"]}
            for i in range(24)]
    data = write_jsonl(folder / "codes.jsonl", rows)
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    cfg.data.path, cfg.data.template, cfg.data.val_split = str(data), "alpaca", 0.25
    cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout = 8, 16, 0.0
    cfg.train.output_dir = str(folder / "run")
    cfg.train.max_steps, cfg.train.learning_rate, cfg.train.batch_size = 12, 1e-2, 4
    cfg.train.max_seq_len, cfg.train.warmup_ratio, cfg.train.lr_scheduler = 128, 0.0, "constant"
    state = TrainingJob(cfg).run()
    assert state.status == "finished", state.message
    return cfg, data, rows, state


def test_heldout_split_is_exactly_the_rows_not_trained_on(split_run):
    cfg, data, rows, state = split_run
    root = Path(cfg.train.output_dir)
    heldout = read_eval_rows(root / HELDOUT_FILE)
    assert len(heldout) == 6 and state.examples == 18           # 24 rows: 18 trained + 6 held
    trained = {e.where for e in load_examples(cfg.data, seed=cfg.train.seed).train}
    held = {r.where for r in heldout}
    assert not trained & held and len(trained | held) == 24
    for row in heldout:   # the saved row is the file's row, keywords included
        original = rows[int(row.where.split()[1]) - 1]
        assert row.prompt == original["instruction"] and row.reference == original["output"]
        assert row.keywords == original["keywords"]
    assert rows_source(root, cfg) == str(root / HELDOUT_FILE)   # the default rows


def test_evaluate_cli_json_schema(split_run):
    cfg, *_ = split_run
    proc = subprocess.run([sys.executable, "-m", "finetune_gui", "evaluate", cfg.train.output_dir,
                           "--base", "--json", "--max-new-tokens", "12"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result["summary"]) == {"tuned", "base"}
    for side in ("tuned", "base"):
        summary = result["summary"][side]
        assert summary["n"] == 6
        for metric in ("exact_match", "keyword_hit", "rouge_l", "chrf"):
            assert 0.0 <= summary[metric] <= 1.0
        assert summary["eval_loss"] > 0
    assert result["summary"]["tuned"]["eval_loss"] < result["summary"]["base"]["eval_loss"]
    assert len(result["rows"]) == 6
    for row in result["rows"]:
        assert {"prompt", "reference", "answer", "base_answer", "metrics"} <= set(row)
        assert set(row["metrics"]) == {"exact_match", "keyword_hit", "rouge_l", "chrf"}
    assert "general" in result and result["general"]["n"] == 60
    saved = Path(cfg.train.output_dir) / "eval" / "heldout.json"
    assert json.loads(saved.read_text())["summary"] == result["summary"]


def test_batched_answers_equal_one_at_a_time(split_run):
    cfg, *_ = split_run
    engine = ChatEngine.from_run(cfg.train.output_dir)
    params = GenerationConfig(max_new_tokens=16, temperature=0.0, repetition_penalty=1.0)
    questions = ["What is code 1?", "Tell me, please, what is code 12 and why?", "Hi"]
    batched = engine.answer_examples([Example([Turn(q)]) for q in questions], params)
    for question, answer in zip(questions, batched):
        for adapter in (True,):
            alone = engine.answer([{"role": "user", "content": question}], params,
                                  use_adapter=adapter)
            assert answer == alone
    base = engine.answer_examples([Example([Turn(q)]) for q in questions], params,
                                  use_adapter=False)
    assert base != batched   # the adapter changes the answers


def test_stop_returns_what_was_answered(split_run, tmp_path):
    cfg, *_ = split_run
    asked = []
    result = evaluate_run(cfg.train.output_dir, EvalOptions(general=False, batch_size=2,
                                                            max_new_tokens=4),
                          progress=asked.append, should_stop=lambda: len(asked) >= 1,
                          save=False)
    assert result["stopped"] is True
    assert asked[0].done == 2 and asked[0].total > 2


def test_bad_evaluation_file_names_the_row(split_run, tmp_path):
    cfg, *_ = split_run
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok?", "keywords": ["x"]},
                                               {"question": "nothing to check"},
                                               {"question": "", "answer": "x"}])
    with pytest.raises(DataError, match=r"line 2: nothing to score .*and 1 more"):
        evaluate_run(cfg.train.output_dir, EvalOptions(data=str(bad)))
    no_split = Path(cfg.train.output_dir).parent / "no-split"
    with pytest.raises(FinetuneError, match="not found"):
        evaluate_run(no_split)


def test_early_stopping_stops_and_keeps_the_best_step(tiny_config, tmp_path):
    """Validation answers share nothing with the training answers but the question's
    number and the end of turn: the eval loss falls a little while those are learned, then
    rises as the training answers take over; training stops and the best step's adapter is
    kept. (Answers that differ in one word kept falling for 80 steps on the tiny model.)"""
    train = [{"instruction": f"What is code {i}?", "input": "", "output": f"Code {i} is blue."}
             for i in range(16)]
    val = [{"instruction": f"What is code {i}?", "input": "",
            "output": f"Never heard of {i}, sorry!"} for i in range(16)]
    tiny_config.data.path = str(write_jsonl(tmp_path / "train.jsonl", train))
    tiny_config.data.val_path = str(write_jsonl(tmp_path / "val.jsonl", val))
    tiny_config.train.max_steps, tiny_config.train.eval_steps = 80, 2
    tiny_config.train.early_stopping_patience = 2
    state = TrainingJob(tiny_config).run()
    assert state.status == "finished", state.message
    assert state.step < 80, "eval loss kept falling: the test data did not overfit"
    evals = dict(state.eval_loss)
    best_step = min(evals, key=evals.get)
    assert state.best_step == best_step and state.best_step < state.step
    assert "kept the adapter of step" in state.message
    root = Path(tiny_config.train.output_dir)
    assert read_state(RunPaths(root))["best_step"] == best_step
    kept = load_file(root / "adapter" / "adapter_model.safetensors")
    best = load_file(root / "checkpoints" / f"checkpoint-{best_step}" /
                     "adapter_model.safetensors")
    assert kept.keys() == best.keys()
    assert all(torch.equal(kept[k], best[k]) for k in kept)


def test_early_stopping_needs_held_out_rows(tiny_config):
    tiny_config.train.early_stopping_patience = 2
    state = TrainingJob(tiny_config).run()
    assert state.status == "failed" and "data.val_split" in state.message
