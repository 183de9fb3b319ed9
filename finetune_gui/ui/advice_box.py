"""The small-data suggestion shown on the LoRA and Train tabs, with an Apply button.

``finetune_gui.advice`` decides what to suggest; this module only shows it (with the reason
for each setting, in the page's language) and counts the rows it is about.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..advice import SMALL_DATA_ROWS, small_data_suggestions
from ..data import check_file
from .common import Ui
from .locale import t
from .state import UserState

MAX_COUNTED_BYTES = 20_000_000   # a bigger file is not small data: do not read it to count


def build(ui: Ui, elem_id: str) -> SimpleNamespace:
    with gr.Group(visible=False, elem_id=elem_id) as box:
        text = gr.Markdown()
        apply = gr.Button(ui.t("advice.apply"), size="sm", variant="secondary",
                          elem_id=f"{elem_id}-apply")
        ui.text(apply, value="advice.apply")
    return SimpleNamespace(box=box, text=text, apply=apply)


def data_rows(ui: Ui, st: UserState) -> int:
    """Rows of the configured data: the Data tab's if loaded, else counted from the file."""
    if st.rows:
        return len(st.rows)
    path = st.config.data.path
    try:
        resolved = ui.workspace.check(path, "data.path")
        if not resolved.is_file() or resolved.stat().st_size > MAX_COUNTED_BYTES:
            return 0
        return len(check_file(Path(resolved), st.config.data.format).examples)
    except Exception:  # unreadable or not allowed: the Data tab says why; no advice here
        return 0


def advice_text(st: UserState, rows: int, suggestions: dict) -> str:
    lang = st.lang
    lines = [t("advice.title", lang, rows=rows, limit=SMALL_DATA_ROWS)]
    for key, value in suggestions.items():
        section, name = key.split(".")
        now = getattr(getattr(st.config, section), name)
        lines.append(f"- **{t(f'field.{key}', lang)}**: {_show(now)} → **{_show(value)}** — "
                     f"{t(f'advice.why.{key}', lang)}")
    lines.append(t("advice.phrasings", lang))
    return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def model_mlp_names(st: UserState) -> list[str] | None:
    """The configured model's feed-forward linear layers, from its config alone (no
    weights loaded)."""
    try:
        from ..estimate.arch import mlp_linear_names
        return mlp_linear_names(st.config.model.name_or_path)
    except Exception:  # a Hub id offline, a bad folder: the Model tab says why
        return None


def suggestions_for(ui: Ui, st: UserState) -> tuple[int, dict]:
    rows = data_rows(ui, st)
    return rows, small_data_suggestions(st.config, rows, model_mlp_names(st))


def updates(ui: Ui, st: UserState, boxes: list[SimpleNamespace]) -> list:
    """Show or hide every box with the current suggestions."""
    rows, suggestions = suggestions_for(ui, st)
    text = advice_text(st, rows, suggestions) if suggestions else ""
    out = []
    for _ in boxes:
        out += [gr.update(visible=bool(suggestions)), gr.update(value=text)]
    return out


def outputs(boxes: list[SimpleNamespace]) -> list:
    return [c for b in boxes for c in (b.box, b.text)]
