"""A "Recent" picker beside a path field: the models and data files this visitor used
last, latest first (kept with their settings, ``settings_store``). Picking one writes the
field through ``set_field``, so it is checked like a typed value."""

from __future__ import annotations

import gradio as gr

from .common import Ui, guarded
from .fields import set_field, to_ui
from .settings_store import note_recent
from .state import UserState


def build(ui: Ui, elem_id: str) -> gr.Dropdown:
    picker = gr.Dropdown(label=ui.t("recent.pick"), choices=[], value=None, scale=1,
                         elem_id=elem_id)
    ui.text(picker, label="recent.pick")
    return picker


def choices(st: UserState, key: str):
    return gr.update(choices=st.recent.get(key, []), value=None)


def used(ui: Ui, st: UserState, key: str) -> None:
    """The field's current value was just used (a model loaded, data read): keep it first."""
    note_recent(st, key, to_ui(st.config, key))
    ui.remember(st)


def wire(ui: Ui, state: gr.State, picker: gr.Dropdown, key: str, outputs: list,
         shown=None) -> None:
    """Picking writes ``key``; ``shown(st)`` gives the updates of ``outputs`` (by default
    the field itself)."""
    shown = shown or (lambda st: [gr.update(value=to_ui(st.config, key))])

    @guarded
    def on_pick(st: UserState, value: str | None):
        if not value:
            return [gr.skip()] * (len(outputs) + 1)
        set_field(ui, st, key, value)
        return [*shown(st), gr.update(value=None)]

    on_pick.__name__ = f"pick_recent_{key.replace('.', '_')}"
    picker.input(on_pick, [state, picker], [*outputs, picker], queue=False)
