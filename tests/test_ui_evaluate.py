"""The Evaluate tab's handlers and the small-data advice, without a browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, ui_handler, write_jsonl
from finetune_gui.advice import FACT_RECIPE, SMALL_DATA_ROWS, small_data_suggestions
from finetune_gui.config import RunConfig
from finetune_gui.estimate.arch import mlp_linear_names
from finetune_gui.evaluation.report import worse_than_base
from finetune_gui.training import TrainingJob
from finetune_gui.ui import advice_box
from finetune_gui.ui.app import build_app
from finetune_gui.ui.common import AppOptions
from finetune_gui.ui.evaluate_tab import summary_markdown, table_frame
from finetune_gui.ui.locale import TABLE
from finetune_gui.ui.state import UserState


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("ui-eval")
    rows = [{"instruction": f"What is code {i}?", "input": "",
             "output": f"Code {i} is blue {i % 3} square."} for i in range(24)]
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    cfg.data.path = str(write_jsonl(folder / "codes.jsonl", rows))
    cfg.data.template, cfg.data.val_split = "alpaca", 0.25
    cfg.lora.r, cfg.lora.alpha = 8, 16
    cfg.train.output_dir = str(folder / "runs" / "codes")
    cfg.train.max_steps, cfg.train.learning_rate, cfg.train.batch_size = 8, 1e-2, 4
    assert TrainingJob(cfg).run().status == "finished"
    return folder


def evaluate_in_tab(folder: Path, **kw):
    demo = build_app(AppOptions(runs_dir=str(folder / "runs")))
    st = UserState(config=RunConfig())
    run = str(folder / "runs" / "codes")
    data, summary, _ = ui_handler(demo, "evaluate_tab", "on_run")(st, run)
    args = dict(data_path="", with_base=True, with_general=False, limit_rows=0, max_tokens=8)
    args.update(kw)
    outputs = list(ui_handler(demo, "evaluate_tab", "on_evaluate")(st, run, *args.values()))
    return demo, st, data, summary, outputs


def test_evaluate_tab_runs_the_held_out_rows_and_shows_a_table(finished_run):
    demo, st, data, summary, outputs = evaluate_in_tab(finished_run)
    assert data.endswith("heldout.jsonl") and "Press" in summary
    progress, summary, table = outputs[-1]
    assert "Done" in progress
    assert "| exact match |" in summary and "Change" in summary
    assert len(table) == 6 and list(table.columns)[0] == "Row"
    saved = json.loads((finished_run / "runs" / "codes" / "eval" / "heldout.json").read_text())
    assert all("rouge_l" in row["metrics"] for row in saved["rows"])
    # the filter shows only rows where the tuned model is worse than its base
    worse = ui_handler(demo, "evaluate_tab", "on_filter")(st, True)
    assert len(worse) == sum(worse_than_base(row) for row in saved["rows"])
    assert len(ui_handler(demo, "evaluate_tab", "on_filter")(st, False)) == 6
    # picking the run again shows the saved evaluation without asking anything
    _, again, shown = ui_handler(demo, "evaluate_tab", "on_run")(st, str(
        finished_run / "runs" / "codes"))
    assert again == summary and len(shown) == 6


def test_evaluate_tab_reports_a_bad_file_in_the_summary(finished_run, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "no answer, no keywords"}])
    *_, outputs = evaluate_in_tab(finished_run, data_path=str(bad))
    assert "line 1: nothing to score" in outputs[-1][1]


def test_summary_marks_what_got_better_and_worse():
    result = {"data": "q.jsonl", "stopped": False, "rows": [], "summary": {
        "tuned": {"keyword_hit": 0.9, "eval_loss": 1.0, "n": 10},
        "base": {"keyword_hit": 0.1, "eval_loss": 3.0, "n": 10}},
        "general": {"kept": 0.5, "kept_right": 5, "base_right": 10, "n": 10, "lost": [
            {"prompt": "Capital of France?", "base_answer": "Paris", "answer": "Brackenvale"}]}}
    text = summary_markdown(result, "en")
    assert "| keyword hits | 90.0% | 10.0% | +80.0 pts ✅ |" in text
    assert "| eval loss | 1.000 | 3.000 | -2.000 ✅ |" in text
    assert "General answers kept: 50%" in text and "Brackenvale" in text
    assert "❌" in text
    assert table_frame([], "zh").columns[0] == "行"


def test_small_data_gets_the_fact_recipe_and_large_data_none():
    config = RunConfig()
    config.train.epochs, config.lora.r = 1.0, 4
    suggested = small_data_suggestions(config, 100)
    assert suggested["train.epochs"] == FACT_RECIPE["train.epochs"]
    assert suggested["lora.r"] == FACT_RECIPE["lora.r"]
    assert small_data_suggestions(config, SMALL_DATA_ROWS) == {}
    assert "lora.target_modules" not in suggested, "the model's MLP layers are not known"
    config.lora.last_layers = 15
    mlp = small_data_suggestions(config, 100, mlp_names=["gate_proj", "up_proj", "down_proj"])
    assert mlp["lora.target_modules"] == ["gate_proj", "up_proj", "down_proj"]
    assert mlp["lora.last_layers"] == 0, "every layer"
    for key, value in {**FACT_RECIPE, **mlp}.items():   # valid config, explained in both
        config.set(key, value)
        assert TABLE[f"advice.why.{key}"]["en"] and TABLE[f"advice.why.{key}"]["zh"]


def test_quickstart_preset_is_the_fact_recipe():
    quickstart = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    assert small_data_suggestions(quickstart, 100,
                                  mlp_linear_names(quickstart.model.name_or_path)) == {}
    assert quickstart.data.eval_path == "presets/data/quillmore_eval.jsonl"


def test_apply_writes_the_suggestions_into_the_config(tmp_path):
    data = write_jsonl(tmp_path / "small.jsonl", [{"instruction": f"q{i}", "output": "a"}
                                                   for i in range(30)])
    demo = build_app(AppOptions(runs_dir=str(tmp_path / "runs")))
    st = UserState(config=RunConfig())
    st.config.data.path, st.config.train.epochs = str(data), 1.0
    assert advice_box.data_rows(demo.ui, st) == 30
    shown = advice_box.updates(demo.ui, st, [object()])
    assert shown[0]["visible"] and "Epochs" in shown[1]["value"]
    ui_handler(demo, "app", "apply")(st)
    assert advice_box.suggestions_for(demo.ui, st)[1] == {}
    assert st.config.lora.target_modules == ["gate_proj", "up_proj", "down_proj"], \
        "the embedded model's MLP layers"
    assert advice_box.updates(demo.ui, st, [object()])[0]["visible"] is False
