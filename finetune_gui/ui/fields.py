"""Two-way binding between config-field components and the session's RunConfig.

Every field component writes its key through ``RunConfig.set`` (the same checks as YAML
and ``--set``); a refused value is reported and the component snaps back. Loading a
preset (or a page) pushes the config into every field at once.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..config import RunConfig, parse_mix
from .common import Ui, friendly
from .state import UserState
from .workspace import DATA_KEYS, PATH_KEYS

TEXT_EVENTS = ("blur", "submit")


def to_config(dotted: str, value: Any) -> Any:
    """A component's value in the form ``RunConfig.set`` expects."""
    if dotted == "lora.target_modules":
        return value
    if isinstance(value, float) and value.is_integer() and _is_int_field(dotted):
        return int(value)
    if dotted == "lora.modules_to_save" and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def to_ui(config: RunConfig, dotted: str) -> Any:
    section, key = dotted.split(".")
    value = getattr(getattr(config, section), key)
    if dotted in ("lora.modules_to_save", "data.mix"):
        return ", ".join(value)
    return value


def _is_int_field(dotted: str) -> bool:
    section, key = dotted.split(".")
    return isinstance(getattr(getattr(RunConfig(), section), key), int)


def set_field(ui: Ui, st: UserState, dotted: str, value: Any) -> None:
    """Write one field into the session config; raises ``FinetuneError`` if refused
    (by the config's own checks, or by the shared-app policy on the result)."""
    value = to_config(dotted, value)
    if dotted in DATA_KEYS and isinstance(value, str) and value.strip():
        ui.workspace.check_data(value, dotted)
    elif dotted in PATH_KEYS and isinstance(value, str) and value.strip():
        ui.workspace.check(value, dotted)
    if dotted == "data.mix":
        for path, _ in parse_mix(value):
            ui.workspace.check_data(path, dotted)
    if dotted.startswith("model."):
        trial = st.config.copy()
        trial.set(dotted, value, source="UI")
        ui.workspace.check_model(trial)
    st.config.set(dotted, value, source="UI")
    if dotted.startswith("model."):
        st.drop_model()
        st.engine = None
    ui.remember(st)


def bind_fields(ui: Ui, state: gr.State, status: gr.Markdown) -> dict[str, list]:
    """Wire every registered field; returns each key's events for tabs to chain on."""
    events: dict[str, list] = {}
    for dotted, comp in ui.fields.items():
        handler = _make_handler(ui, dotted)
        names = TEXT_EVENTS if isinstance(comp, (gr.Textbox, gr.Number)) else ("input",)
        events[dotted] = [getattr(comp, name)(handler, [state, comp], [comp, status],
                                              show_progress="hidden", queue=False)
                          for name in names]
    return events


def _make_handler(ui: Ui, dotted: str):
    def on_edit(st: UserState, value):
        try:
            set_field(ui, st, dotted, value)
        except Exception as exc:  # refused: say why and show the value still in force
            message = friendly(exc, st.lang)
            gr.Warning(message)
            return gr.update(value=to_ui(st.config, dotted)), f"⚠️ {message}"
        return gr.skip(), ""
    on_edit.__name__ = f"set_{dotted.replace('.', '_')}"
    return on_edit


def field_updates(ui: Ui, config: RunConfig) -> list:
    """``gr.update`` for every field, in ``ui.fields`` order, from ``config``."""
    return [gr.update(value=to_ui(config, key)) for key in ui.fields]


def apply_values(ui: Ui, st: UserState, values: dict[str, Any]) -> None:
    """Write the values a button sent along (what the page shows right now) into the
    config, so a click right after typing never races the field's own blur event.
    Fields the page never rendered arrive as None and are left alone."""
    for dotted, value in values.items():
        if value is None:
            continue
        if to_config(dotted, value) == to_ui(st.config, dotted) or value == to_ui(st.config, dotted):
            continue
        set_field(ui, st, dotted, value)
