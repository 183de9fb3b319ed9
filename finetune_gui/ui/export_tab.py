"""Export tab: the adapter folder, a merged model, a GGUF file for llama.cpp/Ollama, and a
side-by-side comparison of runs. All the work is done by ``finetune_gui.export``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import export, runs, tracking
from ..errors import FinetuneError
from ..evaluation import saved_results
from ..evaluation.report import compare_evaluations
from .api_service import ApiService, ApiStatus
from .chat_tab import BASE, run_choices
from .common import Ui, guarded
from .jobs import JobRegistry
from .locale import t
from .notices import ask_on, watch_event
from .state import UserState


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


def _gradio_progress(progress):
    """The export package reports ``(fraction, text)``; Gradio's bar wants ``desc=``."""
    return lambda fraction, text: progress(fraction, desc=text)


def api_text(status: ApiStatus, lang: str) -> str:
    if not status.running:
        return t("export.api_stopped", lang)
    key = f"`{status.key}`" if status.key else t("export.api_key_hidden", lang)
    return t("export.api_running", lang, source=status.source, url=status.url,
             models=", ".join(f"`{m}`" for m in status.models), api_key=key)


def build(ui: Ui, state: gr.State, registry: JobRegistry, api: ApiService) -> SimpleNamespace:
    def finished_runs(lang: str):
        return [c for c in run_choices(ui, registry, lang) if c[1] != BASE]

    with gr.Row():
        run = gr.Dropdown(label=ui.t("chat.run"), scale=3, elem_id="export-run",
                          choices=finished_runs(ui.lang))
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
    with gr.Row():
        gguf_path = gr.Textbox(label=ui.t("export.gguf_path"), info=ui.t("export.gguf_info"),
                               scale=3, elem_id="export-gguf-path")
        ui.text(gguf_path, label="export.gguf_path", info="export.gguf_info")
        gguf_type = gr.Dropdown(list(export.GGUF_TYPES), value="f16", scale=1,
                                label=ui.t("export.gguf_type"), elem_id="export-gguf-type")
        ui.text(gguf_type, label="export.gguf_type")
        gguf = gr.Button(ui.t("export.gguf"), scale=1, elem_id="export-gguf")
        ui.text(gguf, value="export.gguf")
    result = gr.Markdown(elem_id="export-status")
    with gr.Accordion(ui.t("export.api"), open=False, elem_id="api-box") as api_box:
        ui.text(api_box, label="export.api")
        with gr.Row():
            api_port = gr.Number(value=8000, precision=0, minimum=1024, maximum=65535, scale=1,
                                 label=ui.t("export.api_port"), info=ui.t("export.api_info"),
                                 elem_id="api-port")
            ui.text(api_port, label="export.api_port", info="export.api_info")
            api_start = gr.Button(ui.t("export.api_start"), variant="primary", scale=1,
                                  elem_id="api-start")
            api_stop = gr.Button(ui.t("export.api_stop"), scale=1, elem_id="api-stop")
            ui.text(api_start, value="export.api_start")
            ui.text(api_stop, value="export.api_stop")
        api_status = gr.Markdown(elem_id="api-status")
        api_code = gr.Code(language="python", interactive=False, elem_id="api-snippet",
                           label=ui.t("export.api_snippet"))
        ui.text(api_code, label="export.api_snippet")
    with gr.Accordion(ui.t("export.compare"), open=False) as compare_box:
        ui.text(compare_box, label="export.compare")
        with gr.Row():
            compare_runs = gr.Dropdown(multiselect=True, choices=finished_runs(ui.lang), scale=4,
                                       label=ui.t("export.compare"),
                                       info=ui.t("export.compare_info"), elem_id="compare-runs")
            ui.text(compare_runs, label="export.compare", info="export.compare_info")
            compare = gr.Button(ui.t("export.compare_button"), scale=1, elem_id="compare-button")
            ui.text(compare, value="export.compare_button")
        curves = gr.Plot(elem_id="compare-plot")
        diff = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-diff")
        evals = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-evals",
                             label=ui.t("export.compare_evals"))
        ui.text(evals, label="export.compare_evals")

    @guarded
    def on_run(st: UserState, choice: str):
        if not choice:
            return t("export.pick", st.lang), gr.skip(), gr.skip()
        paths, _ = runs.find_run(ui.workspace.check_run(choice))
        about = export.describe_export(paths.root)
        text = t("export.adapter", st.lang, path=ui.workspace.display(paths.adapter))
        text += "\n\n" + folder_listing(paths.adapter)
        for note in about["notes"]:
            text += f"\n\n⚠️ {note}"
        if not about["gguf_supported"]:
            text += "\n\n" + t("export.gguf_unsupported", st.lang, why=about["gguf_reason"])
        return (text, ui.workspace.display(paths.root / "merged"),
                ui.workspace.display(paths.root / "model.gguf"))

    @guarded
    def on_merge(st: UserState, choice: str, target: str, progress=gr.Progress()):
        if not choice:
            raise FinetuneError(t("export.pick", st.lang))
        root = ui.workspace.check_run(choice)
        out = ui.workspace.check(target or (Path(choice) / "merged"), "export folder")
        saved = export.export_merged(root, out, progress=_gradio_progress(progress))
        notes = "".join(f"\n\n{n}" for n in saved.notes)
        return t("export.done", st.lang, path=ui.workspace.display(saved.path)) + notes + \
            "\n\n" + folder_listing(saved.path)

    @guarded
    def on_gguf(st: UserState, choice: str, target: str, kind: str, progress=gr.Progress()):
        if not choice:
            raise FinetuneError(t("export.pick", st.lang))
        root = ui.workspace.check_run(choice)
        out = ui.workspace.check(target or (Path(choice) / "model.gguf"), "GGUF file")
        saved = export.export_gguf(root, out, kind, progress=_gradio_progress(progress))
        return t("export.gguf_done", st.lang, path=ui.workspace.display(saved.path)) + \
            "\n\n" + folder_listing(saved.path.parent)

    @guarded
    def on_compare(st: UserState, choices: list[str]):
        if not choices or len(choices) < 2:
            raise FinetuneError(t("export.compare_info", st.lang))
        roots = [ui.workspace.check(c, "run") for c in choices]
        compared = tracking.compare_runs(roots)
        table = pd.DataFrame([[key, *map(str, values)]
                              for key, values in compared["config_diff"].items()],
                             columns=[t("export.setting", st.lang), *compared["runs"]])
        scored = compare_evaluations({label: saved_results(root) for label, root
                                      in zip(compared["runs"], roots)})
        scores = pd.DataFrame(scored, columns=[t("export.compare_questions", st.lang),
                                               t("eval.metric", st.lang), *compared["runs"]])
        return tracking.loss_figure(compared["curves"], title=t("export.compare_title", st.lang),
                                    words=(t("train.axis.step", st.lang),
                                           t("train.axis.loss", st.lang),
                                           t("train.series.eval", st.lang))), \
            table, scores

    def api_view(st: UserState):
        status = api.status(st.visitor)
        return api_text(status, st.lang), api.snippet(status)

    @guarded
    def on_api_start(st: UserState, choice: str, port):
        if not choice:
            raise FinetuneError(t("export.pick", st.lang))
        root = ui.workspace.check_run(choice)
        api.start(root, port, st.visitor, ui.workspace.display(root))
        return api_view(st)

    @guarded
    def on_api_stop(st: UserState):
        api.stop(st.visitor)
        return api_view(st)

    def on_refresh(st: UserState):
        choices = finished_runs(st.lang)
        return gr.update(choices=choices), gr.update(choices=choices)

    def on_show(st: UserState, choice: str):
        """Opening the tab: the runs, and while none is picked the prompt in the page's
        language (it was built in the language the app started in)."""
        return (*on_refresh(st), gr.skip() if choice else t("export.pick", st.lang))

    run.input(on_run, [state, run], [adapter, dest, gguf_path], queue=False)
    refresh.click(on_refresh, [state], [run, compare_runs], queue=False)
    for button, handler, inputs in ((merge, on_merge, [state, run, dest]),
                                    (gguf, on_gguf, [state, run, gguf_path, gguf_type])):
        ask_on(button, "export")
        done = button.click(lambda: gr.update(interactive=False), None, button, queue=False) \
            .then(handler, inputs, [result], concurrency_id="export")
        done.then(lambda: gr.update(interactive=True), None, button, queue=False)
        watch_event(done, "export", result)
    compare.click(on_compare, [state, compare_runs], [curves, diff, evals])
    api_box.expand(api_view, [state], [api_status, api_code], queue=False)
    api_start.click(on_api_start, [state, run, api_port], [api_status, api_code],
                    concurrency_id="export")
    api_stop.click(on_api_stop, [state], [api_status, api_code], queue=False)
    return SimpleNamespace(run=run, show=on_show, show_outputs=[run, compare_runs, adapter])
