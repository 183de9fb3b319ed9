"""Export tab: where a run's adapter is, and a merged full model saved into a folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import models, runs
from ..errors import FinetuneError
from .chat_tab import BASE, run_choices
from .common import Ui, guarded
from .jobs import JobRegistry
from .locale import t
from .state import UserState


def merge_and_save(run_dir: str | Path, dest: str | Path, progress=None) -> Path:
    """Base + adapter folded into plain weights, saved with the tokenizer into ``dest``.

    The base is loaded unquantised (merging into 4/8-bit weights loses precision); the
    folder is written beside ``dest`` first and renamed, so a failure leaves nothing half-done.
    """
    from peft import PeftModel
    paths, config = runs.find_run(run_dir)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FinetuneError(f"{dest}: folder exists and is not empty; choose a new name")
    config.model.quantization = "none"
    step = progress or (lambda *a, **k: None)
    step(0.1, desc="loading base model")
    model, tokenizer = models.load_model(config.model, for_training=False)
    step(0.4, desc="loading adapter")
    model = PeftModel.from_pretrained(model, str(paths.adapter))
    step(0.6, desc="merging")
    merged = model.merge_and_unload()
    step(0.8, desc="saving")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config.save(tmp / "finetune_gui_run.yaml")
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return dest


def folder_listing(path: Path) -> str:
    if not path.is_dir():
        return ""
    lines = []
    for f in sorted(path.iterdir()):
        if f.is_file():
            lines.append(f"- `{f.name}` — {human_size(f.stat().st_size)}")
    return "\n".join(lines)


def human_size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def build(ui: Ui, state: gr.State, registry: JobRegistry) -> SimpleNamespace:
    with gr.Row():
        run = gr.Dropdown(label=ui.t("chat.run"), scale=3, elem_id="export-run",
                          choices=[c for c in run_choices(ui, registry, ui.lang) if c[1] != BASE])
        ui.text(run, label="chat.run")
        refresh = gr.Button(ui.t("chat.refresh"), size="sm", scale=1, elem_id="export-refresh")
        ui.text(refresh, value="chat.refresh")
    adapter = gr.Markdown(ui.t("export.pick"), elem_id="export-adapter")
    with gr.Row():
        dest = gr.Textbox(label=ui.t("export.dest"), info=ui.t("export.dest_info"), scale=4,
                          elem_id="export-dest")
        ui.text(dest, label="export.dest", info="export.dest_info")
        merge = gr.Button(ui.t("export.merge"), variant="primary", scale=1, elem_id="export-merge")
        ui.text(merge, value="export.merge")
    result = gr.Markdown(elem_id="export-status")

    @guarded
    def on_run(st: UserState, choice: str):
        if not choice:
            return t("export.pick", st.lang), gr.skip()
        root = ui.workspace.check(choice, "run")
        paths, _ = runs.find_run(root)
        text = t("export.adapter", st.lang, path=ui.workspace.display(paths.adapter))
        text += "\n\n" + folder_listing(paths.adapter)
        return text, ui.workspace.display(paths.root / "merged")

    @guarded
    def on_merge(st: UserState, choice: str, target: str, progress=gr.Progress()):
        if not choice:
            raise FinetuneError(t("export.pick", st.lang))
        root = ui.workspace.check(choice, "run")
        out = ui.workspace.check(target or (Path(choice) / "merged"), "export folder")
        saved = merge_and_save(root, out, progress)
        return t("export.done", st.lang, path=ui.workspace.display(saved)) + "\n\n" + \
            folder_listing(saved)

    def on_refresh(st: UserState):
        return gr.update(choices=[c for c in run_choices(ui, registry, st.lang) if c[1] != BASE])

    run.input(on_run, [state, run], [adapter, dest], queue=False)
    refresh.click(on_refresh, [state], [run], queue=False)
    merge.click(lambda: gr.update(interactive=False), None, merge, queue=False) \
        .then(on_merge, [state, run, dest], [result], concurrency_id="export") \
        .then(lambda: gr.update(interactive=True), None, merge, queue=False)
    return SimpleNamespace(run=run, refresh=on_refresh)
