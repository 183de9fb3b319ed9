"""Evaluate tab: ask a finished run held-out questions, see the scores base vs tuned, the
rows worst first, and what the tuning made it forget. The work is ``finetune_gui.evaluation``;
it runs in a worker thread so that the page shows progress with an ETA and can Stop it."""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import runs
from ..errors import FinetuneError
from ..messages import Message
from ..evaluation import EvalOptions, evaluate_run, rows_source, saved_results
from ..evaluation.report import (LOWER_IS_BETTER, format_value, keyword_counts,
                                 rows_worst_first, summary_table, worse_than_base)
from ..evaluation.runner import result_name
from .chat_tab import BASE, run_choices
from .common import Ui, friendly, guarded
from .jobs import JobRegistry
from .locale import phase, t
from .notices import ask_on, progress_bar, watch
from .state import UserState
from .train_tab import duration

POLL_SECONDS = 0.5
TABLE_COLUMNS = ("row", "question", "reference", "tuned", "base", "hit", "rouge_l")


def build(ui: Ui, state: gr.State, registry: JobRegistry) -> SimpleNamespace:
    def finished_runs(lang: str):
        return [c for c in run_choices(ui, registry, lang) if c[1] != BASE]

    with gr.Row():
        run = gr.Dropdown(label=ui.t("chat.run"), choices=finished_runs(ui.lang), scale=3,
                          elem_id="eval-run")
        ui.text(run, label="chat.run")
        refresh = gr.Button(ui.t("chat.refresh"), size="sm", scale=1, elem_id="eval-refresh")
        ui.text(refresh, value="chat.refresh")
    with gr.Row():
        data = gr.Textbox(label=ui.t("eval.data"), info=ui.t("eval.data_info"), scale=4,
                          elem_id="eval-data")
        ui.text(data, label="eval.data", info="eval.data_info")
        limit = gr.Number(label=ui.t("eval.limit"), value=0, precision=0, minimum=0, scale=1,
                          elem_id="eval-limit")
        max_new = gr.Number(label=ui.t("eval.max_new"), value=0, precision=0, minimum=0,
                            maximum=4096, scale=1, elem_id="eval-max-new")
        ui.text(limit, label="eval.limit")
        ui.text(max_new, label="eval.max_new")
    with gr.Row():
        base = gr.Checkbox(label=ui.t("eval.base"), info=ui.t("eval.base_info"), value=True,
                           elem_id="eval-base")
        general = gr.Checkbox(label=ui.t("eval.general"), info=ui.t("eval.general_info"),
                              value=True, elem_id="eval-general")
        ui.text(base, label="eval.base", info="eval.base_info")
        ui.text(general, label="eval.general", info="eval.general_info")
        start = gr.Button(ui.t("eval.start"), variant="primary", elem_id="eval-start")
        stop = gr.Button(ui.t("eval.stop"), variant="stop", elem_id="eval-stop")
        ui.text(start, value="eval.start")
        ui.text(stop, value="eval.stop")
    progress = gr.HTML(progress_html(None, ui.lang), elem_id="eval-progress")
    summary = gr.Markdown(ui.t("eval.pick"), elem_id="eval-summary")
    only_worse = gr.Checkbox(label=ui.t("eval.only_worse"), value=False, elem_id="eval-worse")
    ui.text(only_worse, label="eval.only_worse")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="eval-table",
                         column_widths=["7%", "19%", "19%", "19%", "19%", "8%", "9%"])

    def check_run(choice: str) -> Path:
        if not choice:
            raise FinetuneError(t("eval.pick", "en"))
        return ui.workspace.check_run(choice)

    def engine_for(st: UserState, choice: str, root: Path):
        from ..chat import ChatEngine
        if st.engine is not None and st.engine_source == choice and st.engine.has_adapter:
            return st.engine
        st.engine = None
        engine = ChatEngine.from_run(root)
        st.engine, st.engine_source = engine, choice
        return engine

    @guarded
    def on_run(st: UserState, choice: str):
        """A picked run: its default questions and its last saved evaluation of them."""
        if not choice:
            return "", t("eval.pick", st.lang), gr.skip()
        root = check_run(choice)
        config = runs.find_run(root)[1]
        try:
            source = rows_source(root, config)
        except FinetuneError:
            return "", t("eval.no_rows", st.lang), table_frame([], st.lang)
        shown = ui.workspace.display(source)
        saved = saved_results(root).get(result_name(source))
        st.eval_result = saved
        if not saved:
            return shown, t("eval.ready", st.lang, data=shown), table_frame([], st.lang)
        return shown, summary_markdown(saved, st.lang, ui.workspace.display), \
            table_frame(rows_worst_first(saved), st.lang)

    def on_evaluate(st: UserState, choice: str, data_path: str, with_base: bool,
                    with_general: bool, limit_rows, max_tokens):
        try:
            root = check_run(choice)
            # The file asked, whether typed or named by the run's config, stays inside
            # the workspace when the app is shared.
            source = rows_source(root, runs.find_run(root)[1], (data_path or "").strip())
            data_path = str(ui.workspace.check(source, "evaluation data"))
            options = EvalOptions(data=data_path, base=bool(with_base),
                                  general=bool(with_general), limit=_whole(limit_rows),
                                  max_new_tokens=_whole(max_tokens))
        except Exception as exc:  # shown in the summary box, the page stays usable
            yield gr.skip(), f"⚠️ {friendly(exc, st.lang)}", gr.skip()
            return
        stop_event = threading.Event()
        st.eval_stop = stop_event
        box: dict = {"progress": None}

        def work():
            try:
                engine = engine_for(st, choice, root)
                box["result"] = evaluate_run(root, options, engine=engine,
                                             progress=lambda p: box.update(progress=p),
                                             should_stop=stop_event.is_set)
            except Exception as exc:  # reported to the page below
                box["error"] = exc

        worker = threading.Thread(target=work, name="evaluate", daemon=True)
        started = time.time()
        worker.start()
        try:
            while worker.is_alive():
                worker.join(POLL_SECONDS)
                yield progress_html(box["progress"], st.lang, time.time() - started), \
                    gr.skip(), gr.skip()
        finally:
            stop_event.set()   # the page went away: stop between batches
        if "error" in box:
            yield progress_html(None, st.lang), f"⚠️ {friendly(box['error'], st.lang)}", \
                gr.skip()
            return
        result = st.eval_result = box["result"]
        yield (progress_html(box["progress"], st.lang, time.time() - started, done=True),
               summary_markdown(result, st.lang, ui.workspace.display),
               table_frame(rows_worst_first(result), st.lang))

    def on_stop(st: UserState):
        event = getattr(st, "eval_stop", None)
        if event is not None:
            event.set()
            gr.Info(t("eval.stopping", st.lang))

    def on_filter(st: UserState, worse: bool):
        result = st.eval_result
        if not result:
            return gr.skip()
        return table_frame(rows_worst_first(result, only_worse=bool(worse)), st.lang)

    def on_refresh(st: UserState):
        return gr.update(choices=finished_runs(st.lang))

    def on_show(st: UserState, choice: str):
        """Opening the tab: the runs, and while none is picked the prompt in the page's
        language (it was built in the language the app started in)."""
        idle = not choice and st.eval_result is None
        return (on_refresh(st), progress_html(None, st.lang) if idle else gr.skip(),
                t("eval.pick", st.lang) if idle else gr.skip())

    run.input(on_run, [state, run], [data, summary, table], queue=False)
    refresh.click(on_refresh, [state], [run], queue=False)
    start.click(on_evaluate, [state, run, data, base, general, limit, max_new],
                [progress, summary, table], concurrency_id="evaluate", concurrency_limit=1)
    stop.click(on_stop, [state], None, queue=False)
    watch(progress)
    ask_on(start)
    only_worse.input(on_filter, [state, only_worse], [table], queue=False)
    return SimpleNamespace(run=run, show=on_show, show_outputs=[run, progress, summary])


def _whole(value) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        raise FinetuneError(Message("ui.whole_numbers")) from None


def progress_html(p, lang: str, elapsed: float | None = None, done: bool = False) -> str:
    if p is None:
        label = t("eval.loading", lang) if elapsed is not None and not done else \
            t("eval.idle", lang)
        pct, status = 0.0, "idle" if elapsed is None else "running"
    else:
        pct = 100.0 * p.done / p.total if p.total else 0.0
        status = "finished" if done else "running"
        label = t("eval.progress", lang, done=p.done, total=p.total, pct=f"{pct:.0f}",
                  phase=phase(p.phase, lang), eta=duration(p.eta),
                  elapsed=duration(elapsed or p.elapsed))
        if done:
            label = t("eval.done", lang, seconds=f"{elapsed or p.elapsed:.1f}")
    return progress_bar("evaluate", status, pct, label)


def summary_markdown(result: dict, lang: str, display=str) -> str:
    has_base = "base" in result["summary"]
    n = result["summary"]["tuned"].get("n", 0)
    lines = [t("eval.summary_title", lang, n=n, data=display(result["data"]),
               created=result.get("created", ""))]
    if result.get("stopped"):
        lines.append("⚠️ " + t("eval.was_stopped", lang))
    header = f"| {t('eval.metric', lang)} | {t('eval.tuned', lang)} |"
    rule = "|---|---:|"
    if has_base:
        header += f" {t('eval.base_col', lang)} | {t('eval.change', lang)} |"
        rule += "---:|---:|"
    lines += ["", header, rule]
    for e in summary_table(result):
        row = f"| {t('eval.label.' + e['metric'], lang)} | {format_value(e['metric'], e['tuned'])} |"
        if has_base:
            if e["delta"] is None:
                change = "–"
            else:
                mark = "" if e["better"] is None else (" ✅" if e["better"] else " 🔻")
                change = (f"{e['delta']:+.3f}" if e["metric"] in LOWER_IS_BETTER
                          else t("eval.points", lang, n=f"{e['delta'] * 100:+.1f}")) + mark
            row += f" {format_value(e['metric'], e['base'])} | {change} |"
        lines.append(row)
    counts = [keyword_counts(result, side) for side in ("tuned", "base")]
    if counts[0]:
        text = t("eval.keyword_counts", lang, hits=counts[0][0], n=counts[0][1])
        if counts[1]:
            text += " · " + t("eval.keyword_counts_base", lang, hits=counts[1][0])
        lines += ["", text]
    general = result.get("general")
    if general:
        lines += ["", general_markdown(general, lang)]
    if has_base:
        worse = sum(worse_than_base(r) for r in result["rows"])
        lines += ["", t("eval.worse_count", lang, n=worse)]
    return "\n".join(lines)


def general_markdown(general: dict, lang: str) -> str:
    if general["kept"] is None:
        return t("eval.general_none", lang)
    kept = general["kept"]
    icon = "✅" if kept >= 0.95 else ("⚠️" if kept >= 0.8 else "❌")
    text = f"{icon} " + t("eval.general_kept", lang, pct=f"{kept:.0%}", kept=general["kept_right"],
                          n=general["base_right"])
    if general.get("lost"):
        text += "\n\n" + t("eval.general_lost", lang) + "\n" + "\n".join(
            f"- {html.escape(x['prompt'])} — {html.escape(x['base_answer'][:80])} → "
            f"**{html.escape(x['answer'][:80])}**" for x in general["lost"][:8])
    return text


def table_frame(rows: list[dict], lang: str) -> pd.DataFrame:
    names = [t(f"eval.col.{c}", lang) for c in TABLE_COLUMNS]
    out = []
    for r in rows:
        hit = r["metrics"].get("keyword_hit")
        base_hit = r.get("base_metrics", {}).get("keyword_hit")
        marks = "" if hit is None else ("✓" if hit else "✗")
        if base_hit is not None:
            marks += " / " + ("✓" if base_hit else "✗")
        rouge = r["metrics"].get("rouge_l")
        rouge_text = "" if rouge is None else f"{rouge:.2f}"
        if rouge is not None and "base_metrics" in r:
            rouge_text += f" / {r['base_metrics'].get('rouge_l', 0):.2f}"
        out.append([r["where"], r["prompt"], r["reference"] or ", ".join(r["keywords"]),
                    r["answer"], r.get("base_answer", ""), marks, rouge_text])
    return pd.DataFrame(out, columns=names)
