"""Jobs have owners (finding 4 of the shared-app review): on a shared app a second visitor
watches the first one's job read-only, cannot stop or resume it, and never gets the first
visitor's settings on page load; a resume that changes settings keeps the old ones; saving
over a preset asks first and keeps a backup; saving keeps a file's mode."""

from __future__ import annotations

import json
import os
import stat
import types
from pathlib import Path

import gradio as gr
import pytest

from conftest import ui_handler
from finetune_gui.config import RunConfig
from finetune_gui.ui.app import build_app
from finetune_gui.ui.common import AppOptions
from finetune_gui.ui.jobs import OWNER_FILE, JobRegistry, NotYourJob, owner_key
from finetune_gui.ui.state import UserState
from tests.test_ui_handlers import FakeJob


def _page(demo, username=None, browser_id=None) -> UserState:
    """A page load as Gradio runs it: a new session state, then on_page_load."""
    st = UserState(config=RunConfig())
    request = types.SimpleNamespace(username=username)
    *_, kept = ui_handler(demo, "app", "on_page_load")(st, browser_id, request)
    assert isinstance(kept, str) and len(kept) >= 20
    return st


@pytest.fixture
def shared(tmp_path):
    registry = JobRegistry(FakeJob)
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs"),
                                shared=True), registry)
    return demo, registry, tmp_path


def test_a_second_visitor_watches_but_cannot_stop_or_take_the_settings(shared):
    demo, registry, root = shared
    ann = _page(demo, username="ann")
    ann.config.data.system_prompt = "ann's secret system prompt"
    ann.config.train.output_dir = str(root / "runs" / "ann")
    nones = [None] * len(demo.ui.fields)
    ui_handler(demo, "train_tab", "on_start")(ann, *nones)
    assert registry.busy()

    bob = _page(demo, username="bob")
    assert bob.config.data.system_prompt == "", "a new page never gets another's settings"
    progress, stats, *_, start, stop, resume = ui_handler(demo, "train_tab", "poll")(bob)
    assert 'data-status="running"' in progress, "bob sees the job"
    assert stats.startswith("🔒 This training job was started by another visitor")
    assert stop["interactive"] is False
    ui_handler(demo, "train_tab", "on_stop")(bob)
    assert registry.busy() and not registry.current.stopped, "bob's Stop did nothing"
    with pytest.raises(NotYourJob):
        registry.stop("user:bob")

    again = _page(demo, username="ann")              # ann reloads her page
    assert again.config.data.system_prompt == "ann's secret system prompt"
    *_, stop, _ = ui_handler(demo, "train_tab", "poll")(again)
    assert stop["interactive"] is True
    ui_handler(demo, "train_tab", "on_stop")(again)
    assert registry.current.stopped and not registry.busy()

    owner = (root / "runs" / "ann" / OWNER_FILE).read_text().strip()
    assert owner == owner_key("user:ann") and "ann" not in owner
    with pytest.raises(gr.Error) as info:                 # bob resumes ann's run folder
        bob.config.train.output_dir = str(root / "runs" / "ann")
        (root / "runs" / "ann" / "checkpoints" / "checkpoint-2").mkdir(parents=True)
        (root / "runs" / "ann" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
         ).write_text("{}")
        ui_handler(demo, "train_tab", "on_resume")(bob, *nones)
    assert "started by another visitor: only they can resume it" in info.value.message


def test_without_a_login_the_browser_is_the_visitor_across_reloads(shared):
    demo, registry, _ = shared
    first = UserState(config=RunConfig())
    *_, token = ui_handler(demo, "app", "on_page_load")(first, None, None)
    reloaded = _page(demo, browser_id=token)
    other = _page(demo)
    assert first.visitor == reloaded.visitor == f"browser:{token}"
    assert other.visitor != first.visitor


def test_locally_every_page_is_the_same_person(tmp_path):
    registry = JobRegistry(FakeJob)
    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")), registry)
    one = _page(demo)
    one.config.train.output_dir = str(tmp_path / "runs" / "one")
    ui_handler(demo, "train_tab", "on_start")(one, *[None] * len(demo.ui.fields))
    two = _page(demo)
    assert two.config.train.output_dir == one.config.train.output_dir, "reload shows the job"
    ui_handler(demo, "train_tab", "on_stop")(two)
    assert registry.current.stopped


def test_resume_with_changed_settings_keeps_the_old_ones(tiny_config):
    from finetune_gui.runs import RunPaths, read_metrics
    from finetune_gui.training import TrainingJob
    tiny_config.train.max_steps = 6
    tiny_config.train.save_steps = 6
    tiny_config.train.logging_steps = 1
    assert TrainingJob(tiny_config).run().status == "finished"
    paths = RunPaths(Path(tiny_config.train.output_dir))
    before = read_metrics(paths)
    changed = tiny_config.copy()
    changed.train.max_steps = 9
    changed.train.learning_rate = 5e-3
    state = TrainingJob(changed, resume=True).run()
    assert state.status == "finished", state.message
    old = RunConfig.load(paths.root / "run.1.yaml")
    assert old.train.learning_rate == tiny_config.train.learning_rate
    assert RunConfig.load(paths.config).train.learning_rate == 5e-3
    records = read_metrics(paths)
    notes = [r for r in records if "note" in r]
    assert len(notes) == 1 and notes[0]["step"] == 6
    assert "train.learning_rate: 0.01 → 0.005" in notes[0]["note"]
    assert "train.max_steps: 6 → 9" in notes[0]["note"]
    resumed = [r for r in records if r["step"] > 6 and "loss" in r]
    assert resumed and min(r["time"] for r in resumed) >= max(r["time"] for r in before), \
        "the clock continues"


def test_saving_over_a_preset_asks_first_and_keeps_a_backup(shared):
    demo, _, root = shared
    save = ui_handler(demo, "app", "on_preset_save")
    st = _page(demo, username="ann")
    st.config.lora.r = 4
    save(st, "mine")
    path = root / "presets" / "user" / "mine.yaml"
    os.chmod(path, 0o644)
    first = path.read_text()
    st.config.lora.r = 32
    _, message = save(st, "mine")
    assert message.startswith("⚠️ presets/user/mine.yaml already exists: press Save again")
    assert path.read_text() == first, "nothing replaced yet"
    _, message = save(st, "mine")
    assert message.startswith("✅")
    assert "r: 32" in path.read_text() and (path.parent / "mine.yaml.bak").read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the file keeps its mode"


def test_saved_data_keeps_its_file_mode(tmp_path):
    from finetune_gui.data import save_rows
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    os.chmod(path, 0o644)
    save_rows(path, [{"instruction": "c", "output": "d"}])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    fresh = tmp_path / "new.jsonl"
    save_rows(fresh, [{"instruction": "c", "output": "d"}])
    assert stat.S_IMODE(fresh.stat().st_mode) & 0o044, "readable as files usually are"


def test_closing_the_app_saves_a_running_job_whoever_owns_it(tiny_config):
    """The window's close (``JobRegistry.shutdown``) stops another visitor's job too, and
    returns once its checkpoint is on disk; with nothing running it does nothing."""
    from finetune_gui.runs import RunPaths
    registry = JobRegistry(owners=True)
    assert registry.shutdown() is None
    tiny_config.train.max_steps, tiny_config.train.save_steps = 400, 1000
    job = registry.start(tiny_config, visitor="browser:someone-else")
    while job.state.step < 3 and job.state.status in ("loading", "running"):
        job.wait(0.05)
    state = registry.shutdown()
    assert state.status == "stopped", state.message
    assert 3 <= state.step < 400 and not registry.busy()
    latest = RunPaths(Path(tiny_config.train.output_dir)).latest_checkpoint()
    assert latest is not None and latest.name == f"checkpoint-{state.step}"
