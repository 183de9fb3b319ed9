"""Model tab: choose the base model and its quantization, load it, see its card and the hardware."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr

from .. import hardware, models
from ..plan import resolve_plan
from ..config import EMBEDDED_MODEL
from . import recent
from .common import Ui, guarded, markdown_lines
from .locale import say, t
from .lora_count import structure_of
from ..models import source_kind
from .state import UserState

SOURCES = ("embedded", "hub", "folder", "gguf")


def source_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"model.source.{s}", lang), s) for s in SOURCES]


def build(ui: Ui, state: gr.State) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=3):
            source = gr.Radio(choices=source_choices(ui.lang), value="embedded",
                              label=ui.t("model.source"), info=ui.t("model.source_info"),
                              elem_id="model-source")
            ui.text(source, label="model.source", info="model.source_info",
                    choices=source_choices)
            with gr.Row():
                path = ui.field("model.name_or_path", "text", elem_id="model-path", scale=3)
                recent_models = recent.build(ui, "model-recent")
            upload = gr.File(label=ui.t("model.upload"), file_types=[".gguf"],
                             visible=False, elem_id="model-upload")
            ui.text(upload, label="model.upload")
            with gr.Row():
                ui.field("model.quantization")
                ui.field("model.compute_dtype")
                ui.field("model.device")
            with gr.Row():
                ui.field("model.trust_remote_code", interactive=not ui.options.shared)
                ui.field("model.allow_pickle", interactive=not ui.options.shared)
            load = gr.Button(ui.t("model.load"), variant="primary", elem_id="model-load")
            ui.text(load, value="model.load")
            card = gr.Markdown(ui.t("model.not_loaded"), elem_id="model-card")
        with gr.Column(scale=2):
            hw_title = gr.Markdown(f"### {ui.t('model.hardware')}")
            ui.text(hw_title, value=lambda lang: f"### {_t('model.hardware', lang)}")
            hw = gr.Markdown(elem_id="hardware")
            hw_refresh = gr.Button(ui.t("model.refresh"), size="sm", elem_id="hardware-refresh")
            ui.text(hw_refresh, value="model.refresh")

    @guarded
    def on_source(st: UserState, kind: str):
        if kind == "embedded":
            st.config.set("model.name_or_path", EMBEDDED_MODEL)
            st.drop_model()
            ui.remember(st)
            return gr.update(value=EMBEDDED_MODEL, interactive=False), gr.update(visible=False)
        current = st.config.model.name_or_path
        value = "" if current == EMBEDDED_MODEL else current
        return (gr.update(value=value, interactive=True, placeholder=ui.t(f"model.ph.{kind}")),
                gr.update(visible=kind == "gguf"))

    @guarded
    def on_upload(st: UserState, file):
        if not file:
            return gr.skip()
        stored = ui.workspace.store_upload(file, "models")
        st.config.set("model.name_or_path", str(stored))
        st.drop_model()
        ui.remember(st)
        return gr.update(value=str(stored))

    @guarded
    def on_load(st: UserState, progress=gr.Progress()):
        ui.workspace.switch_off_code(st.config)
        ui.workspace.check_model(st.config)    # a folder from a preset or an old session too
        cfg = st.config.model
        st.drop_model()
        st.engine = None
        progress(0.05, desc=ui_t(st, "model.progress.resolve"))
        models.resolve_source(cfg.name_or_path)     # converts a .gguf once (slow the 1st time)
        progress(0.3, desc=ui_t(st, "model.progress.load"))
        t0 = time.time()
        model, tokenizer = models.load_model(cfg, for_training=False,
                                             plan=resolve_plan(st.config))
        seconds = time.time() - t0
        progress(0.9, desc=ui_t(st, "model.progress.describe"))
        st.card = models.describe(model, cfg.quantization)
        st.model, st.tokenizer, st.tokenizer_for = model, tokenizer, cfg.name_or_path
        st.structure = structure_of(model)
        recent.used(ui, st, "model.name_or_path")
        return card_markdown(st, seconds)

    def on_hardware(st: UserState):
        return hardware_markdown(st.lang)

    source.input(on_source, [state, source], [path, upload], queue=False)
    upload.upload(on_upload, [state, upload], [path])
    load_event = load.click(lambda: gr.update(interactive=False), None, load, queue=False) \
        .then(on_load, [state], [card], concurrency_limit=2, concurrency_id="model-load")
    load_event.then(lambda: gr.update(interactive=True), None, load, queue=False)
    load_event.then(on_hardware, [state], [hw], queue=False)
    load_event.then(lambda st: recent.choices(st, "model.name_or_path"), [state],
                    [recent_models], queue=False)
    recent.wire(ui, state, recent_models, "model.name_or_path", [source, path, upload],
                lambda st: list(source_update(st)))
    hw_refresh.click(on_hardware, [state], [hw], queue=False)
    return SimpleNamespace(source=source, path=path, upload=upload, card=card, hardware=hw, load=load,
                           loaded=load_event, on_hardware=on_hardware, recent=recent_models)


def _t(key: str, lang: str, **kw) -> str:
    return t(key, lang, **kw)


def ui_t(st: UserState, key: str, **kw) -> str:
    return _t(key, st.lang, **kw)


def card_markdown(st: UserState, seconds: float | None = None) -> str:
    if st.card is None:
        return _t("model.not_loaded", st.lang)
    head = f"### ✅ {_t('model.loaded', st.lang, name=st.config.model.name_or_path)}"
    if seconds is not None:
        head += f" ({seconds:.1f} s)"
    return head + "\n\n" + markdown_lines([say(line, st.lang) for line in st.card.summary_lines()])


def hardware_markdown(lang: str) -> str:
    info = hardware.detect()
    used = hardware.process_memory()
    lines = [say(line, lang) for line in info.summary_lines()]
    lines.append(_t("model.app_memory", lang, mib=f"{used['rss_bytes'] / 2**20:,.0f}"))
    return markdown_lines(lines)


def source_update(st: UserState):
    """Source selector and path box for the session's current model (page load, preset)."""
    kind = source_kind(st.config.model.name_or_path)
    return (gr.update(value=kind),
            gr.update(value=st.config.model.name_or_path, interactive=kind != "embedded"),
            gr.update(visible=kind == "gguf"))
