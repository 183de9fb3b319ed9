"""Each visitor's settings kept between page loads and app restarts (ui/settings_store.py),
without a browser: what is saved, where, and what a damaged or hostile file does."""

from __future__ import annotations

import pytest

from finetune_gui.ui.common import AppOptions, Ui
from finetune_gui.ui.fields import set_field
from finetune_gui.ui.settings_store import RECENT_KEEP, SettingsStore, note_recent
from finetune_gui.ui.state import UserState, initial_config, restore_settings
from finetune_gui.ui.workspace import Workspace


def _app(root, shared=False):
    """What build_app makes for one app: its Ui with a store in the runs folder."""
    ws = Workspace.create(root, "runs", shared=shared)
    options = AppOptions(shared=shared, root=str(root))
    return Ui(options, ws, settings=SettingsStore(ws.runs_dir, "app-secret-0123456789"))


def _page(ui, visitor):
    """A page that has loaded: its visitor known, the saved settings put back."""
    config, preset = initial_config(ui.options, ui.workspace)
    st = UserState(config=config, preset=preset, visitor=visitor)
    return st, restore_settings(ui, st)


def test_edits_survive_a_reload_and_a_restart_and_stay_per_visitor(tmp_path):
    ui = _app(tmp_path)
    ann, note = _page(ui, "browser:ann-token-abcdefghijklmnop")
    assert note == "" and ann.config.lora.r != 48
    set_field(ui, ann, "lora.r", 48)
    set_field(ui, ann, "data.system_prompt", "Answer like a pirate.")
    ann.lang = "zh"
    ui.remember(ann)

    reloaded, note = _page(ui, ann.visitor)
    assert note == ""
    assert reloaded.config.lora.r == 48 and reloaded.lang == "zh"
    assert reloaded.config.data.system_prompt == "Answer like a pirate."

    restarted, _ = _page(_app(tmp_path), ann.visitor)   # a new app over the same runs folder
    assert restarted.config.lora.r == 48

    bob, _ = _page(ui, "browser:bob-token-abcdefghijklmnop")
    assert bob.config.lora.r != 48 and bob.lang == "en", "Ann's settings leaked to Bob"
    set_field(ui, bob, "lora.alpha", 7)
    assert _page(ui, ann.visitor)[0].config.lora.alpha != 7, "Bob's settings leaked to Ann"
    unloaded = UserState(config=bob.config, visitor="session:not-loaded-yet")
    ui.remember(unloaded)   # a page not loaded yet has no identity to keep settings under
    files = sorted(ui.settings.folder.iterdir())
    assert len(files) == 2   # Ann's and Bob's
    assert all("ann" not in f.name and "bob" not in f.name for f in files), \
        "file names must not reveal the visitor"


def test_only_changes_are_written(tmp_path):
    ui = _app(tmp_path)
    st, _ = _page(ui, "user:ann")
    path = ui.settings.path_for(st.visitor)
    assert not path.exists()   # a page load with nothing saved writes nothing
    set_field(ui, st, "lora.r", 8 if st.config.lora.r != 8 else 4)
    assert path.exists()
    path.unlink()
    ui.remember(st)   # nothing changed since: nothing written
    assert not path.exists()


@pytest.mark.parametrize("content,reason", [
    ("settings: [", "invalid YAML"),
    ("settings:\n  lora:\n    r: -3\n", "lora.r"),
    ("settings:\n  nosuch:\n    x: 1\n", "unknown section"),
    ("- a list\n", "expected a mapping of sections, got list"),
    ("preset: [1]\n", "must be text"),
    ('a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{n}: &{n} [{','.join(['*' + p] * 10)}]\n" for p, n in zip("abcd", "bcde")),
     "too deeply aliased"),
])
def test_a_damaged_file_is_named_and_the_page_starts_from_the_preset(tmp_path, content, reason):
    ui = _app(tmp_path)
    visitor = "browser:carol-token-abcdefghijk"
    path = ui.settings.path_for(visitor)
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    st, note = _page(ui, visitor)
    assert note.startswith("⚠️") and "not restored" in note and reason in note
    assert st.config.lora.r == initial_config(ui.options, ui.workspace)[0].lora.r


def test_a_huge_file_is_refused_unread(tmp_path):
    ui = _app(tmp_path)
    visitor = "user:dave"
    path = ui.settings.path_for(visitor)
    path.parent.mkdir(parents=True)
    path.write_text("#" * 2_000_000, encoding="utf-8")
    _, note = _page(ui, visitor)
    assert "larger than" in note


def test_a_shared_app_rechecks_saved_paths_and_code_switches(tmp_path):
    local = _app(tmp_path)
    st, _ = _page(local, "user:erin")
    set_field(local, st, "data.path", "/etc/passwd")          # fine on one's own machine
    shared = _app(tmp_path, shared=True)
    st2, note = _page(shared, "user:erin")
    assert "not restored" in note and "data.path" in note
    assert st2.config.data.path != "/etc/passwd"

    st3, _ = _page(local, "user:frank")
    set_field(local, st3, "model.trust_remote_code", True)
    st4, note = _page(shared, "user:frank")
    assert st4.config.model.trust_remote_code is False and "trust_remote_code" in note


def test_a_run_made_since_moves_the_next_one_to_a_fresh_folder(tmp_path):
    ui = _app(tmp_path)
    st, _ = _page(ui, "user:gina")
    set_field(ui, st, "train.output_dir", "runs/mine")
    (tmp_path / "runs" / "mine" / "checkpoints").mkdir(parents=True)
    again, _ = _page(ui, "user:gina")
    assert again.config.train.output_dir == "runs/mine-2"


def test_an_unwritable_runs_folder_keeps_the_edit(tmp_path):
    ui = _app(tmp_path)
    st, _ = _page(ui, "user:hal")
    ui.settings.folder.parent.mkdir(parents=True, exist_ok=True)
    ui.settings.folder.write_text("a file where the folder should be")
    set_field(ui, st, "lora.r", 24)   # the save fails (logged); the edit stands
    assert st.config.lora.r == 24


def test_recent_models_and_data_come_back_latest_first_and_bounded(tmp_path):
    ui = _app(tmp_path)
    st, _ = _page(ui, "user:ivy")
    for i in range(RECENT_KEEP + 3):
        note_recent(st, "data.path", f"data/uploads/f{i}.jsonl")
    note_recent(st, "data.path", "data/uploads/f5.jsonl")     # used again: first, once
    note_recent(st, "model.name_or_path", "HuggingFaceTB/SmolLM2-360M")
    ui.remember(st)
    again, note = _page(ui, "user:ivy")
    assert note == ""
    data = again.recent["data.path"]
    assert data[0] == "data/uploads/f5.jsonl" and data.count("data/uploads/f5.jsonl") == 1
    assert len(data) == RECENT_KEEP and data[1] == f"data/uploads/f{RECENT_KEEP + 2}.jsonl"
    assert again.recent["model.name_or_path"] == ["HuggingFaceTB/SmolLM2-360M"]


def test_a_shared_app_offers_only_recent_paths_it_would_take(tmp_path):
    local = _app(tmp_path)
    st, _ = _page(local, "user:jo")
    note_recent(st, "data.path", "/etc/passwd")
    note_recent(st, "data.path", "data/uploads/mine.jsonl")
    note_recent(st, "model.name_or_path", str(tmp_path / "outside-model"))
    ui_shared = _app(tmp_path, shared=True)
    local.remember(st)
    again, _ = _page(ui_shared, "user:jo")
    assert again.recent["data.path"] == ["data/uploads/mine.jsonl"]
    assert again.recent["model.name_or_path"] == []


def test_a_malformed_recent_list_is_named(tmp_path):
    ui = _app(tmp_path)
    path = ui.settings.path_for("user:kim")
    path.parent.mkdir(parents=True)
    path.write_text("recent:\n  train.output_dir: [x]\n", encoding="utf-8")
    _, note = _page(ui, "user:kim")
    assert "not restored" in note and "'recent'" in note


def test_no_page_load_event_replaces_the_session_state(tmp_path):
    """The app's own page load fills the session in (the visitor, the saved settings). A
    second load event writing the state (what Gradio makes of a factory given as a
    ``gr.State`` value) raced it and, when it answered last, replaced the filled-in state
    with a blank one: nothing the visitor did afterwards was kept (CI saw it)."""
    import gradio as gr

    from finetune_gui.ui.app import build_app

    demo = build_app(AppOptions(root=str(tmp_path), runs_dir=str(tmp_path / "runs")))
    demo.default_config.attach_load_events()   # what launch() does
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert len(states) == 1
    on_load = [fn for fn in demo.fns.values() if any(name == "load" for _, name in fn.targets)]
    assert len(on_load) == 1 and states[0] in on_load[0].inputs
    assert not any(states[0] in fn.outputs for fn in on_load)


def test_each_session_copy_of_the_blank_state_is_a_session_of_its_own(tmp_path):
    import copy

    from finetune_gui.ui.state import blank_state

    ui = _app(tmp_path)
    blank = blank_state(ui.options, ui.workspace)
    first, second = copy.deepcopy(blank), copy.deepcopy(blank)
    assert first.visitor.startswith("session:") and first.visitor != second.visitor
    first.config.lora.r = 48
    first.recent["data.path"] = ["data/a.jsonl"]
    assert second.config.lora.r == blank.config.lora.r != 48 and second.recent == {}
