"""LoRA tab: rank, alpha, dropout, target layers, rsLoRA/DoRA, with a live parameter count."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..errors import FinetuneError
from . import advice_box
from .common import Ui, friendly
from .lora_count import count_report, estimator, structure_from_config
from .locale import say, t
from .plan_view import memory_table, plan_table
from .state import UserState

GIB = 1024 ** 3


def build(ui: Ui, state: gr.State) -> SimpleNamespace:
    advice = advice_box.build(ui, "lora-advice")
    with gr.Row():
        with gr.Column(scale=3):
            ui.field("lora.r", "slider", minimum=1, maximum=256, elem_id="lora-r")
            with gr.Row():
                ui.field("lora.alpha", "slider", minimum=1, maximum=512, step=1)
                ui.field("lora.dropout", "slider", step=0.01)
            targets = gr.CheckboxGroup(label=ui.t("field.lora.target_modules"),
                                       info=ui.t("help.lora.target_modules"),
                                       elem_id="lora-targets")
            ui.text(targets, label="field.lora.target_modules", info="help.lora.target_modules")
            ui.field("lora.last_layers", "number")
            with gr.Row():
                ui.field("lora.use_rslora")
                ui.field("lora.use_dora")
                ui.field("lora.bias")
            ui.field("lora.modules_to_save", "text")
        with gr.Column(scale=2):
            count = gr.Markdown(ui.t("lora.no_model"), elem_id="lora-count")

    def target_update(st: UserState):
        """Checkboxes: the model's linear layers, ticked as the config says."""
        names = target_names(st)
        if not names:
            return gr.update(choices=[], value=[])
        chosen = st.config.lora.target_modules
        value = list(names) if chosen == "all-linear" else [n for n in chosen if n in names]
        return gr.update(choices=names, value=value)

    def count_text(st: UserState) -> str:
        lang = st.lang
        structure = st.structure
        if structure is None and estimator() is None:
            try:
                structure = structure_from_config(st.config.model)
            except FinetuneError:
                structure = None
        config = st.config.copy()
        try:  # the estimate reads the data's lengths: only from where this visitor may read
            config.data.path = str(ui.workspace.check(config.data.path, "data.path"))
        except FinetuneError:
            config.data.path = ""
        try:
            report = count_report(config, structure)
        except FinetuneError as exc:
            return f"⚠️ {friendly(exc, lang)}"
        pct = 100 * report.trainable / report.total if report.total else 0
        lines = [f"### {t('lora.count_title', lang)}",
                 t("lora.trainable", lang, n=f"{report.trainable:,}", pct=f"{pct:.3f}",
                   total=f"{report.total:,}")]
        if report.peak_bytes is not None:
            lines.append(t("lora.peak", lang, gib=f"{report.peak_bytes / GIB:.2f}",
                           device=report.device or "?"))
            if report.fits is not None:
                lines.append("✅ " + t("lora.fits", lang) if report.fits
                             else "❌ " + t("lora.no_fit", lang))
            lines.append(memory_table(report, lang))
            if report.from_data:
                lines.append(t("lora.data_shape", lang, tokens=report.seq_len,
                               answer=report.answer_tokens or report.seq_len))
            elif report.seq_len:
                lines.append(t("lora.worst_case", lang, tokens=report.seq_len))
        if report.plan_rows:
            lines.append(plan_table(report.plan_rows, lang))
        else:
            base = st.card.footprint_bytes if st.card is not None else None
            lora_bytes = report.trainable * 16   # fp32 weight + grad + 2 AdamW moments
            if base is not None:
                lines.append(t("lora.lower_bound", lang,
                               gib=f"{(base + lora_bytes) / GIB:.2f}",
                               base=f"{base / GIB:.2f}", lora=f"{lora_bytes / 2**20:.1f}"))
            else:
                lines.append(t("lora.load_for_memory", lang))
        if report.note and report.note != "lower_bound":
            lines.append(f"_{say(report.note, lang)}_")
        return "\n\n".join(lines)

    def on_targets(st: UserState, chosen: list[str]):
        names = target_names(st)
        if not chosen:
            gr.Warning(t("lora.need_target", st.lang))
            return target_update(st), count_text(st)
        value = "all-linear" if names and set(chosen) == set(names) else list(chosen)
        st.config.set("lora.target_modules", value, source="UI")
        ui.remember(st)
        return gr.skip(), count_text(st)

    targets.input(on_targets, [state, targets], [targets, count], queue=False,
                  show_progress="hidden")

    def refresh(st: UserState):
        return target_update(st), count_text(st)

    return SimpleNamespace(targets=targets, count=count, refresh=refresh, advice=advice,
                           refresh_outputs=[targets, count], count_text=count_text)


def target_names(st: UserState) -> list[str]:
    """LoRA-targetable layer names: from the loaded model, else from its config alone."""
    if st.structure is not None:
        return list(st.structure.names)
    try:
        from ..estimate.arch import linear_names_from_config
    except ImportError:
        linear_names_from_config = None
    try:
        if linear_names_from_config is not None:
            return linear_names_from_config(st.config.model.name_or_path)
        return structure_from_config(st.config.model).names
    except Exception:  # unknown architecture / offline Hub id: load the model instead
        return []

