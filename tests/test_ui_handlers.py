"""Fast tests of the UI's handlers and helpers, without a browser."""

from __future__ import annotations

import json
import threading

import gradio as gr
import pytest

from finetune_gui.config import RunConfig
from finetune_gui.errors import FinetuneError
from finetune_gui.job_progress import JobState
from finetune_gui.training import JobBusyError
from finetune_gui.ui import data_view as dv
from finetune_gui.ui.common import AppOptions, Ui, friendly
from finetune_gui.ui.fields import apply_values, set_field
from finetune_gui.ui.jobs import JobRegistry
from finetune_gui.ui.presets import list_presets, load_preset, save_preset, sparse_dict
from finetune_gui.models import source_kind as model_source_kind
from finetune_gui.ui.state import UserState
from finetune_gui.ui.workspace import PathNotAllowed, Workspace
from tests.conftest import write_jsonl


# ---- workspace: paths stay inside presets/, runs/, data/uploads/ when shared -----------

def test_shared_workspace_refuses_paths_outside(tmp_path):
    ws = Workspace.create(tmp_path, "runs", shared=True)
    assert ws.check("runs/a") == (tmp_path / "runs" / "a").resolve()
    assert ws.check("presets/data/x.jsonl").is_relative_to(tmp_path / "presets")
    assert ws.check("data/uploads/f.csv").is_relative_to(tmp_path / "data" / "uploads")
    for bad in ("/etc/passwd", "../outside", "runs/../../etc", "data/other.jsonl", "~/.ssh/id"):
        with pytest.raises(PathNotAllowed, match="outside the shared workspace"):
            ws.check(bad)


def test_local_workspace_allows_any_path(tmp_path):
    ws = Workspace.create(tmp_path, "runs", shared=False)
    assert ws.check("/etc/hostname") == Workspace.create(tmp_path).root / "/etc/hostname"


def test_uploads_get_safe_unique_names(tmp_path):
    ws = Workspace.create(tmp_path)
    src = tmp_path / "my data (1).jsonl"
    src.write_text("{}\n")
    first, second = ws.store_upload(src), ws.store_upload(src)
    assert first.parent == ws.uploads and first.name == "my_data_1_.jsonl"
    assert second != first and second.exists()


def test_fresh_run_dir_never_reuses_a_run(tmp_path):
    ws = Workspace.create(tmp_path)
    assert ws.fresh_run_dir("runs/a") == "runs/a"
    (tmp_path / "runs" / "a" / "checkpoints").mkdir(parents=True)
    assert ws.fresh_run_dir("runs/a") == "runs/a-2"


# ---- fields: the UI writes through RunConfig.set -----------------------------------------

def _ui(tmp_path, shared=False) -> Ui:
    return Ui(AppOptions(shared=shared, root=str(tmp_path)), Workspace.create(tmp_path, shared=shared))


def test_set_field_converts_and_validates(tmp_path):
    ui, st = _ui(tmp_path), UserState(config=RunConfig())
    set_field(ui, st, "lora.r", 8.0)                       # sliders send floats
    assert st.config.lora.r == 8 and isinstance(st.config.lora.r, int)
    set_field(ui, st, "lora.modules_to_save", "lm_head, embed_tokens")
    assert st.config.lora.modules_to_save == ["lm_head", "embed_tokens"]
    with pytest.raises(FinetuneError, match="lora.r must be >= 1"):
        set_field(ui, st, "lora.r", 0)
    assert st.config.lora.r == 8


def test_shared_app_refuses_remote_code_and_outside_paths(tmp_path):
    ui, st = _ui(tmp_path, shared=True), UserState(config=RunConfig())
    with pytest.raises(FinetuneError, match="trust_remote_code is off"):
        set_field(ui, st, "model.trust_remote_code", True)
    with pytest.raises(PathNotAllowed):
        set_field(ui, st, "data.path", "/etc/passwd.jsonl")
    with pytest.raises(PathNotAllowed):
        set_field(ui, st, "model.name_or_path", "/somewhere/model.gguf")
    set_field(ui, st, "model.name_or_path", "Qwen/Qwen2.5-0.5B")   # Hub ids are fine
    with pytest.raises(PathNotAllowed, match="data.mix"):   # a mixed-in file, as data.path
        set_field(ui, st, "data.mix", "presets/data/a.jsonl@0.2, /etc/shadow@0.1")
    assert st.config.data.mix == []
    st.config.data.mix = ["../../etc/hosts@0.2"]   # e.g. from a preset or a run folder
    with pytest.raises(PathNotAllowed, match="data.mix"):
        ui.workspace.check_config(st.config)


def test_apply_values_skips_unrendered_fields(tmp_path):
    ui, st = _ui(tmp_path), UserState(config=RunConfig())
    apply_values(ui, st, {"train.max_steps": 7.0, "train.seed": None})
    assert st.config.train.max_steps == 7 and st.config.train.seed == 42


def test_model_source_kind():
    assert model_source_kind("smollm2-135m-instruct") == "embedded"
    assert model_source_kind("org/name") == "hub"
    assert model_source_kind("/x/y.gguf") == "gguf"
    assert model_source_kind("./models/x") == "folder"


def test_friendly_never_says_just_error():
    assert friendly(FinetuneError("data.path: not found")) == "data.path: not found"
    text = friendly(ValueError(""))
    assert "ValueError" in text and "Unexpected" in text


# ---- presets ---------------------------------------------------------------------------------

def test_preset_round_trip_is_sparse(tmp_path):
    ws = Workspace.create(tmp_path)
    cfg = RunConfig()
    cfg.set("lora.r", 8)
    cfg.set("train.learning_rate", 1e-3)
    path = save_preset(ws, cfg, "my preset!")
    assert path.name == "my-preset.yaml"
    assert sparse_dict(cfg) == {"lora": {"r": 8}, "train": {"learning_rate": 1e-3}}
    assert load_preset(ws, ws.display(path)).to_dict() == cfg.to_dict()
    assert ("user/my-preset", "presets/user/my-preset.yaml") in list_presets(ws)


# ---- data view ---------------------------------------------------------------------------------

ROWS = [{"instruction": "Q1", "input": "", "output": "A1"},
        {"instruction": "Q2", "output": ""},
        {"instruction": "Q3", "input": "", "output": "A3"}]


def test_check_rows_lists_errors_by_row():
    report = dv.check_rows(ROWS)
    assert report.format == "alpaca"
    assert [(dv.row_number(e.where), e.reason) for e in report.errors] == \
        [(2, "field 'output' is empty")]
    frame = dv.error_table(report)
    assert frame.values.tolist() == [[2, "field 'output' is empty"]]
    chinese = dv.error_table(report, "zh")
    assert chinese.values.tolist() == [[2, "字段 'output' 为空"]]


def test_every_kind_of_bad_row_is_named_in_chinese():
    """Each reason a row is refused reads in Chinese on a Chinese page (the CLI keeps the
    English); the row numbers are the file's."""
    bad = [[1, 2], {"output": "A"}, {"instruction": 3, "output": "A"},
           {"instruction": "Q", "output": "A", "keywords": 5},
           {"messages": "not json"}, {"messages": []},
           {"messages": [{"role": "user", "content": "hi"}]},
           {"messages": ["x"]}, {"messages": [{"role": "bot", "content": "x"}]},
           {"messages": [{"role": "user", "content": " "}]},
           {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
           {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
           {"messages": [{"role": "assistant", "content": "a"}]},
           {"prompt": "Q", "chosen": "A", "rejected": "A"},
           {"prompt": "", "chosen": "A", "rejected": "B"},
           {"prompt": "Q", "chosen": [{"role": "user", "content": "A"}], "rejected": "B"},
           {"prompt": [{"role": "assistant", "content": "Q"}], "chosen": "A", "rejected": "B"},
           {"prompt": "Q", "completion": "A", "label": "perhaps"}]
    for row in bad:
        alone = isinstance(row, dict) and ("messages" in row or "prompt" in row)
        rows = [row] if alone else [ROWS[0], row]
        report = dv.check_rows(rows)
        assert report.errors, row
        english = str(report.errors[0].reason)
        chinese = dv.error_table(report, "zh").values.tolist()[0][1]
        assert english.isascii(), english
        assert chinese != english and any("\u4e00" <= ch <= "\u9fff" for ch in chinese), \
            (row, chinese)


def test_table_edits_map_back_by_row_number():
    frame = dv.rows_to_frame(ROWS)
    assert list(frame.columns) == ["#", "instruction", "input", "output"]
    frame.loc[1, "output"] = "A2"
    filtered = frame.iloc[[1]]                      # a search shows only row 2
    updated = dv.apply_frame(ROWS, filtered)
    assert len(updated) == 3 and updated[1]["output"] == "A2" and updated[0] == ROWS[0]
    extra = frame.copy()
    extra.loc[3] = ["", "Q4", "", "A4"]             # a row added in the table
    assert dv.apply_frame(ROWS, extra)[-1] == {"instruction": "Q4", "input": "", "output": "A4"}


def test_chat_rows_round_trip_as_json():
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    frame = dv.rows_to_frame(rows)
    assert json.loads(frame.loc[0, "messages"]) == rows[0]["messages"]
    assert dv.apply_frame(rows, frame) == rows


def test_save_table_keeps_a_backup_and_never_overwrites_csv(tmp_path):
    original = write_jsonl(tmp_path / "d.jsonl", ROWS)
    saved, backup = dv.save_table(original, ROWS[:1])
    assert saved == original and backup.exists()
    assert json.loads(backup.read_text().splitlines()[2])["instruction"] == "Q3"
    csv = tmp_path / "d2.csv"
    csv.write_text("instruction,output\nq,a\n")
    saved, _ = dv.save_table(csv, ROWS[:1])
    assert saved.suffix == ".jsonl" and csv.read_text() == "instruction,output\nq,a\n"


def test_preview_marks_trained_and_masked_tokens(embedded_tokenizer):
    from finetune_gui.templates import TemplateSpec
    report = dv.check_rows(ROWS)
    example = dv.example_for_row(report, 3)
    labels = {"trained": "T", "masked": "M", "cut": "C"}
    spans = dv.preview_spans(example, TemplateSpec("alpaca"), embedded_tokenizer, 512, labels)
    assert spans[0][1] == "M" and "### Instruction" in spans[0][0]
    assert [s for s in spans if s[1] == "T"][0][0].startswith("A3")
    short = dv.preview_spans(example, TemplateSpec("alpaca"), embedded_tokenizer, 5, labels)
    assert short[-1][1] == "C"
    stats = dv.token_stats(report.examples, TemplateSpec("alpaca"), embedded_tokenizer, 5)
    assert stats.rows == 2 and stats.truncated == 2 and stats.dropped == 2
    hist = dv.histogram(stats.lengths, 5)
    assert hist["rows"].sum() == 2 and set(hist["part"]) == {"cut"}


@pytest.mark.parametrize("max_len", [5, 20, 40, 512])
def test_cached_token_stats_equal_a_fresh_encoding_and_follow_edits(embedded_tokenizer, max_len):
    from finetune_gui.templates import TemplateSpec, encode_example
    spec = TemplateSpec("alpaca")
    rows = [{"instruction": f"Question {i}?", "input": "ctx " * i, "output": "An answer " * i}
            for i in range(1, 8)]

    def fresh(examples):
        cut = [encode_example(e, spec, embedded_tokenizer, max_len) for e in examples]
        return ([len(encode_example(e, spec, embedded_tokenizer).input_ids) for e in examples],
                sum(c.trained_tokens for c in cut), sum(c.truncated for c in cut),
                sum(c.trained_tokens == 0 for c in cut))

    def cached(examples):
        stats = dv.token_stats(examples, spec, embedded_tokenizer, max_len)
        return stats.lengths, stats.trained, stats.truncated, stats.dropped
    examples = dv.check_rows(rows).examples
    assert cached(examples) == fresh(examples)
    assert cached(examples) == fresh(examples)  # served from the cache
    rows[2]["output"] = "A much longer answer than before " * 3
    edited = dv.check_rows(rows).examples
    assert cached(edited) == fresh(edited) != fresh(examples)


# ---- the one training job ----------------------------------------------------------------------

class FakeJob:
    """Stands in for TrainingJob: active until released."""
    def __init__(self, config, resume=False):
        self.config, self.resume = config, resume
        self.release = threading.Event()
        self.stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True
        self.release.set()

    @property
    def state(self):
        status = "stopped" if self.release.is_set() else "running"
        return JobState(status=status, output_dir=self.config.train.output_dir)


def test_registry_refuses_a_second_start_while_one_runs():
    registry = JobRegistry(FakeJob)
    job = registry.start(RunConfig())
    assert registry.busy()
    with pytest.raises(JobBusyError, match="already running"):
        registry.start(RunConfig())
    assert registry.stop() and job.stopped and not registry.busy()
    assert registry.start(RunConfig()) is not job


def _handler(demo, name):
    found = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert found, f"no handler {name}"
    return found[0]


def test_start_button_reports_a_busy_server_as_a_message(tmp_path, codes_data):
    from finetune_gui.ui.app import build_app
    registry = JobRegistry(FakeJob)
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")), registry)
    st = UserState(config=RunConfig())
    st.config.train.output_dir = str(tmp_path / "runs" / "a")
    on_start = _handler(demo, "on_start")
    nones = [None] * len(demo.ui.fields)
    outputs = on_start(st, *nones)
    assert registry.busy() and len(outputs) == 10  # one per Train tab output
    other = UserState(config=RunConfig())
    other.config.train.output_dir = str(tmp_path / "runs" / "b")
    with pytest.raises(gr.Error) as exc:
        on_start(other, *nones)
    assert "already running" in exc.value.message
    registry.stop()


def test_start_refuses_unsaved_data_and_an_existing_run(tmp_path):
    from finetune_gui.ui.app import build_app
    demo = build_app(AppOptions(root=str(tmp_path)), JobRegistry(FakeJob))
    on_start = _handler(demo, "on_start")
    nones = [None] * len(demo.ui.fields)
    st = UserState(config=RunConfig(), data_dirty=True)
    with pytest.raises(gr.Error, match="") as exc:
        on_start(st, *nones)
    assert "unsaved" in exc.value.message
    st.data_dirty = False
    st.config.train.output_dir = str(tmp_path / "runs" / "old")
    (tmp_path / "runs" / "old" / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    with pytest.raises(gr.Error) as exc:
        on_start(st, *nones)
    assert "Resume" in exc.value.message


def test_poll_reattaches_to_the_running_job(tmp_path):
    from finetune_gui.ui.app import build_app
    registry = JobRegistry(FakeJob)
    demo = build_app(AppOptions(root=str(tmp_path)), registry)
    poll = _handler(demo, "poll")
    registry.start(RunConfig())
    page = UserState(config=RunConfig())                # a freshly loaded page
    progress, stats, *_ = poll(page)
    assert "data-status=\"running\"" in progress and "training" in stats
    registry.stop()
