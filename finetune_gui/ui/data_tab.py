"""Data tab: load or upload rows, edit them, check them, and see them as the model does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..errors import DataError, FinetuneError
from ..messages import Message
from ..templates import TemplateSpec
from . import data_view as dv
from . import recent
from .common import Ui, friendly, guarded
from .fields import apply_values
from .locale import colors_by_name, say, t
from .state import UserState

KINDS = ("trained", "masked", "cut")
COLORS = {"trained": "#22c55e", "masked": "#94a3b8", "cut": "#ef4444"}


def kind_labels(lang: str) -> dict[str, str]:
    return {k: t(f"data.kind.{k}", lang) for k in KINDS}


def color_map(lang: str) -> dict[str, str]:
    return {t(f"data.kind.{k}", lang): COLORS[k] for k in KINDS}


def build(ui: Ui, state: gr.State) -> SimpleNamespace:
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                ui.field("data.path", "text", elem_id="data-path", scale=3)
                recent_data = recent.build(ui, "data-recent")
        with gr.Column(scale=2):
            upload = gr.File(label=ui.t("data.upload"), file_types=[
                ".jsonl", ".json", ".csv", ".parquet", ".txt", ".md"], height=130,
                elem_id="data-upload")
            ui.text(upload, label="data.upload")
        load = gr.Button(ui.t("data.load"), variant="primary", scale=1, elem_id="data-load")
        ui.text(load, value="data.load")
    with gr.Row():
        ui.field("data.format")
        ui.field("data.template")
        ui.field("data.system_prompt", "text")
        ui.field("data.eval_path", "text")
    with gr.Row():
        ui.field("data.mix", "text")
        ui.field("data.chunk_overlap", "number")
    custom = ui.field("data.custom_template", "text", lines=3, visible=False)
    summary = gr.Markdown(ui.t("data.none"), elem_id="data-summary")
    table = gr.Dataframe(value=pd.DataFrame(columns=[dv.NUMBER, *dv.ALPACA_COLUMNS]),
                         interactive=True, wrap=True, max_height=340, show_search="search",
                         static_columns=[0], label=ui.t("data.table"), elem_id="data-table")
    ui.text(table, label="data.table")
    with gr.Group():
        with gr.Row():
            number = gr.Number(label=ui.t("data.row"), value=1, precision=0, minimum=1,
                               scale=1, elem_id="data-row")
            ui.text(number, label="data.row")
            instruction = gr.Textbox(label="instruction", lines=2, scale=3, elem_id="row-instruction")
            extra = gr.Textbox(label="input", lines=2, scale=2, elem_id="row-input")
            output = gr.Textbox(label="output", lines=2, scale=3, elem_id="row-output")
        raw = gr.Code(label=ui.t("data.row_json"), language="json", visible=False,
                      elem_id="row-json")
        ui.text(raw, label="data.row_json")
        with gr.Row():
            buttons = {}
            for name, variant in (("apply", "primary"), ("add", "secondary"),
                                  ("delete", "stop"), ("save", "primary")):
                buttons[name] = gr.Button(ui.t(f"data.{name}"), variant=variant, size="sm",
                                          elem_id=f"data-{name}" if name == "save" else f"row-{name}")
                ui.text(buttons[name], value=f"data.{name}")
    errors = gr.Dataframe(label=ui.t("data.errors"), interactive=False, max_height=200,
                          elem_id="data-errors")
    ui.text(errors, label="data.errors")
    preview_title = gr.Markdown(f"### {ui.t('data.preview')}")
    ui.text(preview_title, value=lambda lang: f"### {t('data.preview', lang)}")
    with gr.Row():
        with gr.Column(scale=3):
            preview = gr.HighlightedText(show_legend=True, color_map=color_map(ui.lang),
                                         label=ui.t("data.preview_label"), elem_id="data-preview")
            ui.text(preview, label="data.preview_label", color_map=color_map)
            rejected = gr.HighlightedText(show_legend=False, color_map=color_map(ui.lang),
                                          label=ui.t("data.rejected_label"), visible=False,
                                          elem_id="data-preview-rejected")
            ui.text(rejected, label="data.rejected_label", color_map=color_map)
            stats = gr.Markdown(elem_id="data-stats")
        with gr.Column(scale=2):
            hist = gr.BarPlot(x="tokens", y="rows", color="part", label=ui.t("data.hist"),
                              **hist_titles(ui.lang),
                              color_map=colors_by_name({"data.kind.kept": "#3b82f6",
                                                        "data.kind.cut": "#ef4444"}),
                              height=260, elem_id="data-hist")
            ui.text(hist, label="data.hist")

    editor = [number, instruction, extra, output, raw]
    views = [summary, table, errors, *editor, preview, rejected, stats, hist]

    def render(st: UserState, *, with_table: bool = True) -> list:
        """Every view of the rows, recomputed from the session's rows and config."""
        lang = st.lang
        if not st.rows:
            empty = [t("data.none", lang), pd.DataFrame(), pd.DataFrame()]
            return empty + [gr.skip()] * len(editor) + [[], gr.update(visible=False), "",
                                                        gr.skip()]
        st.selected_row = min(max(1, st.selected_row), len(st.rows))
        row = st.rows[st.selected_row - 1]
        try:
            report = dv.check_rows(st.rows, st.config.data.format)
        except FinetuneError as exc:
            report, fatal = None, friendly(exc, lang)
        else:
            fatal = ""
        st.data_format = report.format if report else st.data_format
        alpaca = st.data_format in ("alpaca", "")
        editor_values = [
            gr.update(value=st.selected_row, maximum=len(st.rows)),
            gr.update(value=_text(row.get("instruction")), visible=alpaca),
            gr.update(value=_text(row.get("input")), visible=alpaca),
            gr.update(value=_text(row.get("output")), visible=alpaca),
            gr.update(value=json.dumps(row, ensure_ascii=False, indent=1), visible=not alpaca),
        ]
        head = summary_text(st, report, fatal)
        table_value = dv.rows_to_frame(st.rows) if with_table else gr.skip()
        if report is None:
            return [head, table_value, pd.DataFrame(), *editor_values, [],
                    gr.update(visible=False), fatal, gr.skip()]
        return [head, table_value, dv.error_table(report, st.lang), *editor_values,
                *preview_and_stats(st, report)]

    @guarded
    def on_load(st: UserState, typed: str | None):
        apply_values(ui, st, {"data.path": typed})
        path = st.config.data.path
        ui.workspace.check_data(path, "data.path")
        st.rows = dv.load_rows(path)
        st.selected_row, st.data_dirty = 1, False
        recent.used(ui, st, "data.path")
        return render(st)

    @guarded
    def on_upload(st: UserState, file):
        if not file:
            return [gr.skip()] * (len(views) + 1)
        stored = ui.workspace.store_upload(file)
        st.config.set("data.path", ui.workspace.display(stored))
        recent.used(ui, st, "data.path")
        st.rows, st.selected_row, st.data_dirty = [], 1, False
        try:
            st.rows = dv.load_rows(stored)
        except DataError as exc:   # e.g. too big to edit here: kept, and used as data.path
            gr.Warning(friendly(exc, st.lang))
            return [gr.update(value=st.config.data.path)] + [gr.skip()] * len(views)
        return [gr.update(value=st.config.data.path), *render(st)]

    @guarded
    def on_select(st: UserState, evt: gr.SelectData):
        values = evt.row_value or []
        if values and str(values[0]).isdigit():
            st.selected_row = int(values[0])
        return render(st, with_table=False)

    @guarded
    def on_number(st: UserState, n):
        if n:
            st.selected_row = int(n)
        return render(st, with_table=False)

    @guarded
    def on_apply(st: UserState, n, instr, inp, out, raw_text):
        _need_rows(st)
        st.selected_row = min(max(1, int(n or 1)), len(st.rows))
        if st.data_format in ("alpaca", ""):
            row = dict(st.rows[st.selected_row - 1])
            row.update(instruction=instr, input=inp, output=out)
        else:
            try:
                row = json.loads(raw_text or "")
            except json.JSONDecodeError as exc:
                raise DataError(Message("ui.row_json", n=st.selected_row, why=exc.msg,
                                        line=exc.lineno, column=exc.colno)) from None
            if not isinstance(row, dict):
                raise DataError(Message("ui.row_object", n=st.selected_row))
        st.rows[st.selected_row - 1] = row
        st.data_dirty = True
        return render(st)

    @guarded
    def on_add(st: UserState):
        st.rows.append(dv.new_row(st.rows, st.data_format))
        st.selected_row, st.data_dirty = len(st.rows), True
        return render(st)

    @guarded
    def on_delete(st: UserState, n):
        _need_rows(st)
        index = min(max(1, int(n or 1)), len(st.rows))
        del st.rows[index - 1]
        st.selected_row, st.data_dirty = max(1, index - 1), True
        return render(st)

    @guarded
    def on_table(st: UserState, frame: pd.DataFrame):
        if not st.rows or frame is None or NUMBER_MISSING(frame):
            return [gr.skip()] * len(views)
        before = len(st.rows)
        updated = dv.apply_frame(st.rows, frame)
        if updated != st.rows:
            st.rows, st.data_dirty = updated, True
        return render(st, with_table=len(updated) != before)

    @guarded
    def on_save(st: UserState):
        _need_rows(st)
        target = ui.workspace.check(st.config.data.path, "data.path")
        saved, backup = dv.save_table(target, st.rows)
        st.config.set("data.path", ui.workspace.display(saved))
        recent.used(ui, st, "data.path")
        st.data_dirty = False
        note = t("data.saved", st.lang, path=ui.workspace.display(saved))
        if backup:
            note += " " + t("data.backup", st.lang, path=ui.workspace.display(backup))
        gr.Info(note)
        return [gr.update(value=st.config.data.path), *render(st, with_table=False)]

    path_box = ui.fields["data.path"]
    show_recent = (lambda st: recent.choices(st, "data.path"), [state], [recent_data])
    load.click(on_load, [state, path_box], views).then(*show_recent, queue=False)
    upload.upload(on_upload, [state, upload], [path_box, *views]).then(*show_recent,
                                                                       queue=False)
    recent.wire(ui, state, recent_data, "data.path", [path_box])
    table.select(on_select, [state], views, queue=False)
    number.submit(on_number, [state, number], views)
    buttons["apply"].click(on_apply, [state, *editor], views)
    buttons["add"].click(on_add, [state], views)
    buttons["delete"].click(on_delete, [state, number], views)
    buttons["save"].click(on_save, [state], [path_box, *views]).then(*show_recent, queue=False)
    table.input(on_table, [state, table], views)

    @guarded
    def on_custom_live(st: UserState, text: str):
        """Live custom template: preview every keystroke, keep it only once it is valid."""
        spec = TemplateSpec("custom", text, st.config.data.system_prompt)
        try:
            spec.check()
        except FinetuneError as exc:
            return [gr.skip()] * (len(views) - 2) + [f"⚠️ {exc}", gr.skip()]
        st.config.set("data.custom_template", text)
        ui.remember(st)
        return render(st, with_table=False)

    custom.input(on_custom_live, [state, custom], views, show_progress="hidden",
                 trigger_mode="always_last")

    def refresh(st: UserState, with_table: bool = False):
        try:
            return [gr.update(visible=st.config.data.template == "custom"),
                    *render(st, with_table=with_table)]
        except Exception as exc:  # a bad template must show as text, not break the tab
            return [gr.skip()] * (len(views) - 1) + [f"⚠️ {friendly(exc, st.lang)}", gr.skip()]

    return SimpleNamespace(views=views, refresh=refresh, refresh_outputs=[custom, *views],
                           recent=recent_data,
                           table=table, preview=preview, load=load, render=render)


def NUMBER_MISSING(frame: pd.DataFrame) -> bool:
    return dv.NUMBER not in frame.columns


def _need_rows(st: UserState) -> None:
    if not st.rows:
        raise DataError(Message("ui.no_rows"))


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value))


def summary_text(st: UserState, report, fatal: str) -> str:
    lang = st.lang
    parts = [t("data.summary", lang, rows=len(st.rows), fmt=st.data_format or "?")]
    if fatal:
        parts.append(f"❌ {fatal}")
    elif report.errors:
        parts.append("❌ " + t("data.has_errors", lang, n=len(report.errors)))
    else:
        parts.append("✅ " + t("data.no_errors", lang))
    if report is not None and report.warnings:
        parts.append("⚠️ " + t("data.warnings", lang, n=len(report.warnings)))
    if st.data_dirty:
        parts.append("✏️ " + t("data.unsaved", lang))
    return " · ".join(parts)


def preview_and_stats(st: UserState, report):
    """HighlightedText values (the row; a preference row's rejected answer beside it),
    statistics Markdown and histogram for the current rows."""
    lang = st.lang
    try:
        spec = TemplateSpec.from_data_config(st.config.data)
        tokenizer = st.tokenizer_for_config()
        spec.check(tokenizer)
    except FinetuneError as exc:
        return [], gr.update(visible=False), f"⚠️ {exc}", gr.skip()
    max_len, overlap = st.config.train.max_seq_len, st.config.data.chunk_overlap
    example = dv.example_for_row(report, st.selected_row)
    lines, rejected_spans = [], None
    if example is None:
        bad = [say(e.reason, lang) for e in report.errors
               if dv.row_number(e.where) == st.selected_row]
        spans = [(t("data.row_invalid", lang, n=st.selected_row, reason=bad[0] if bad else "?"),
                  kind_labels(lang)["cut"])]
    else:
        spans = dv.preview_spans(example, spec, tokenizer, max_len, kind_labels(lang))
        one = dv.token_stats([example], spec, tokenizer, max_len, overlap)
        if example.text is not None:
            lines.append(t("data.document_tokens", lang, n=st.selected_row,
                           total=one.trained + 1, chunks=one.chunks, max_len=max_len))
        else:
            lines.append(t("data.row_tokens", lang, n=st.selected_row, total=one.lengths[0],
                           trained=one.trained))
        if example.rejected is not None:
            other = dv.rejected_side(example)
            rejected_spans = dv.preview_spans(other, spec, tokenizer, max_len, kind_labels(lang))
            two = dv.token_stats([other], spec, tokenizer, max_len)
            lines.append(t("data.rejected_tokens", lang, total=two.lengths[0],
                           trained=two.trained))
    stats = dv.token_stats(report.examples, spec, tokenizer, max_len, overlap)
    if stats.documents:
        lines.append(t("data.all_documents", lang, docs=stats.documents, chunks=stats.chunks,
                       max_len=max_len, trained=f"{stats.trained:,}"))
    else:
        lines.append(t("data.all_tokens", lang, rows=stats.rows, mean=f"{stats.mean:.0f}",
                       longest=stats.longest, trained=f"{stats.trained:,}"))
        lines.append(t("data.truncated", lang, n=stats.truncated, max_len=max_len,
                       dropped=stats.dropped))
    if stats.limited:
        lines.append(t("data.limited", lang, n=dv.STATS_ROW_LIMIT))
    frame = dv.histogram(stats.lengths, max_len)
    frame["part"] = [t(f"data.kind.{part}", lang) for part in frame["part"]]
    hist = gr.update(value=frame, sort=list(frame["tokens"]), **hist_titles(lang))
    shown = gr.update(value=rejected_spans, visible=True) if rejected_spans is not None \
        else gr.update(visible=False)
    return spans, shown, "\n\n".join(lines), hist


def hist_titles(lang: str) -> dict:
    """The length histogram's axes and legend in the page's language."""
    return {"x_title": t("data.hist_tokens", lang), "y_title": t("data.hist_rows", lang),
            "color_title": t("data.hist_part", lang)}
