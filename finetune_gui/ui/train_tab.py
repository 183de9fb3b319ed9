"""Train tab: hyperparameters, Start / Stop / Resume, and a live view of the server's job.

The job belongs to the server (``JobRegistry``), not to this page: a ``gr.Timer`` polls its
state, so a reloaded or second page shows the same progress, and closing the page leaves
the job running.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..errors import FinetuneError
from ..runs import RunPaths
from ..job_progress import JobState
from . import advice_box, recent
from .common import Ui, guarded
from .fields import apply_values
from .jobs import JobRegistry
from .locale import phase, say, t
from .notices import ask_on, progress_bar, watch
from .plan_view import plan_text
from .settings_store import RECENT_KEYS
from .state import UserState

MIB = 2 ** 20


def build(ui: Ui, state: gr.State, registry: JobRegistry) -> SimpleNamespace:
    advice = advice_box.build(ui, "train-advice")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                ui.field("train.method")
                ui.field("train.beta", "number")
                ui.field("train.sft_weight", "number")
                ui.field("train.init_adapter", "text")
            with gr.Row():
                ui.field("train.epochs", "number")
                ui.field("train.max_steps", "number")
                ui.field("train.learning_rate", "number")
            with gr.Row():
                ui.field("train.batch_size", "slider", maximum=64)
                ui.field("train.grad_accum", "slider", maximum=64)
                ui.field("train.max_seq_len", "number")
            with gr.Row():
                ui.field("train.lr_scheduler")
                ui.field("train.warmup_ratio", "slider")
                ui.field("data.val_split", "slider")
            with gr.Row():
                ui.field("train.eval_steps", "number")
                ui.field("train.early_stopping_patience", "number")
                ui.field("data.replay_ratio", "slider", step=0.05)
            with gr.Row():
                ui.field("train.save_steps", "number")
                ui.field("train.seed", "number")
                ui.field("train.precision")
            with gr.Row():
                ui.field("train.neftune_noise_alpha", "number")
                ui.field("train.gradient_checkpointing")
                ui.field("train.fused_lora")
                ui.field("train.cpu_kernels")
            with gr.Row():
                ui.field("train.shared_prefix")
                ui.field("train.frozen_bottom")
            with gr.Row():
                ui.field("train.speedups")
                ui.field("train.packing")
                ui.field("train.processes", "number")
            ui.field("train.output_dir", "text", elem_id="train-output")
            plan_box = gr.Markdown(elem_id="train-plan")
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button(ui.t("train.start"), variant="primary", elem_id="train-start")
                stop = gr.Button(ui.t("train.stop"), variant="stop", interactive=False,
                                 elem_id="train-stop")
                resume = gr.Button(ui.t("train.resume"), elem_id="train-resume")
            for button, key in ((start, "train.start"), (stop, "train.stop"),
                                (resume, "train.resume")):
                ui.text(button, value=key)
            progress = gr.HTML(progress_html(None, ui.lang), elem_id="train-progress")
            stats = gr.Markdown(elem_id="train-stats")
            plot = curve_plot(ui, "loss", "train.plot", height=280, elem_id="train-plot")
            with gr.Row(visible=False) as preference_row:
                rewards = curve_plot(ui, "rewards", "train.preference_plot", height=220,
                                     elem_id="train-rewards")
                logps = curve_plot(ui, "logps", "train.logp_plot", height=220,
                                   elem_id="train-logps")
            logs = gr.Textbox(label=ui.t("train.log"), lines=10, max_lines=10, autoscroll=True,
                              interactive=False, elem_id="train-log")
            ui.text(logs, label="train.log")
    timer = gr.Timer(ui.options.poll_seconds)

    keys = list(ui.fields)

    def _start(st: UserState, resume_run: bool, values):
        apply_values(ui, st, dict(zip(keys, values)))
        ui.workspace.check_config(st.config)  # whatever set it: a field, a preset, an API call
        if st.data_dirty:
            raise FinetuneError(t("train.unsaved_data", st.lang))
        out = ui.workspace.check(st.config.train.output_dir, "train.output_dir")
        has_checkpoint = RunPaths(out).latest_checkpoint() is not None
        if not resume_run and has_checkpoint:
            raise FinetuneError(t("train.exists", st.lang, path=st.config.train.output_dir))
        if resume_run and not has_checkpoint:
            raise FinetuneError(t("train.no_checkpoint", st.lang,
                                  path=st.config.train.output_dir))
        registry.start(st.config, resume=resume_run, visitor=st.visitor)
        for key in RECENT_KEYS:
            recent.used(ui, st, key)
        gr.Info(t("train.started", st.lang, path=st.config.train.output_dir))
        return controls(st)

    @guarded
    def on_start(st: UserState, *values):
        return _start(st, False, values)

    @guarded
    def on_resume(st: UserState, *values):
        return _start(st, True, values)

    def on_stop(st: UserState):
        try:
            if registry.stop(st.visitor):
                gr.Info(t("train.stopping", st.lang))
        except FinetuneError:
            gr.Warning(t("train.not_yours", st.lang))
        return controls(st)

    def controls(st: UserState):
        """A button's answer: progress and buttons only, and the charts and log drawn afresh
        by the timer. A button's answer can arrive after a tick's, so charts in it could
        overwrite newer ones that the tick's bookkeeping then counts as drawn."""
        update = poll(st)
        st.drawn_points = st.drawn_log = -1
        return [*update[:2], *[gr.skip()] * 5, *update[7:]]

    def poll(st: UserState):
        """Progress, stats, plot, log and button states; unchanged parts are skipped."""
        s = registry.state()
        lang = st.lang
        active = bool(s and s.active)
        mine = registry.owned_by(st.visitor)
        buttons = [gr.update(interactive=not active), gr.update(interactive=active and mine),
                   gr.update(interactive=not active)]
        if s is None:
            return [gr.skip()] * 7 + buttons
        if s.status in ("finished", "stopped"):
            registry.note_finished(s.output_dir)
        if s.status != st.drawn_status:
            if s.status == "failed" and st.drawn_status:
                gr.Warning(say(s.message, st.lang))
            st.drawn_status = s.status
        points = len(s.loss) + len(s.eval_loss) + sum(map(len, s.preference.values()))
        plot_value = reward_value = logp_value = shown = gr.skip()
        if points != st.drawn_points:
            plot_value, st.drawn_points = curve_update(loss_points(s), "loss"), points
            reward_value = curve_update(s.preference, "rewards")
            logp_value = curve_update(s.preference, "logps")
            shown = gr.update(visible=bool(s.preference))
        log_value = gr.skip()
        if len(s.log) != st.drawn_log:
            log_value, st.drawn_log = "\n".join(s.log[-200:]), len(s.log)
        stats = stats_markdown(s, lang)
        if not mine:
            stats = f"🔒 {t('train.not_yours', lang)}\n\n{stats}"
        return [progress_html(s, lang), stats, plot_value, reward_value, logp_value, shown,
                log_value, *buttons]

    outputs = [progress, stats, plot, rewards, logps, preference_row, logs, start, stop, resume]
    def wire_buttons():
        """Called once every tab is built: Start/Resume send every field's value."""
        keys[:] = list(ui.fields)
        fields = list(ui.fields.values())
        start.click(on_start, [state, *fields], outputs, concurrency_id="train-control")
        resume.click(on_resume, [state, *fields], outputs, concurrency_id="train-control")
    stop.click(on_stop, [state], outputs, queue=False)
    watch(progress)
    ask_on(start)
    ask_on(resume)
    timer.tick(poll, [state], outputs, queue=False, show_progress="hidden")

    def attach(st: UserState):
        """On page load: forget what this page drew so the job is drawn afresh."""
        st.drawn_points = st.drawn_log = -1
        st.drawn_status = ""
        return poll(st)

    def plan_refresh(st: UserState):
        return plan_text(st.config, st.lang)

    return SimpleNamespace(outputs=outputs, attach=attach, timer=timer, wire_buttons=wire_buttons,
                           advice=advice, plan=plan_box, plan_refresh=plan_refresh)


# A chart fixes each series' colour from the series names it held when it was drawn first:
# a series that appears later (eval after the first evaluation) or under a translated name
# was drawn without a colour, i.e. not at all. So the names never change, every frame holds
# both series (an empty one as a NaN row), and the chart's label says which colour is which.
FIRST, SECOND = "#3b82f6", "#f97316"
CURVES = {"loss": ("train", "eval"), "rewards": ("reward_accuracy", "reward_margin"),
          "logps": ("logp_chosen", "logp_rejected")}


def curve_plot(ui: Ui, chart: str, label: str, **kw) -> gr.LinePlot:
    """A two-series line chart (``CURVES[chart]``) whose label, not a legend, names them."""
    y = "loss" if chart == "loss" else "value"
    first, second = CURVES[chart]
    plot = gr.LinePlot(curve_frame({}, chart), x="step", y=y, color="series",
                       color_map={first: FIRST, second: SECOND}, colors_in_legend=[],
                       label=ui.t(label), x_title=ui.t("train.axis.step"),
                       y_title=ui.t(f"train.axis.{y}"), **kw)
    return ui.text(plot, label=label, x_title="train.axis.step", y_title=f"train.axis.{y}")


def curve_frame(points: dict[str, list], chart: str) -> pd.DataFrame:
    names = CURVES[chart]
    rows = [(float(step), float(value), name) for name in names
            for step, value in points.get(name, [])]
    rows += [(math.nan, math.nan, name) for name in names]
    return pd.DataFrame(rows, columns=["step", "loss" if chart == "loss" else "value", "series"])


def curve_update(points: dict[str, list], chart: str):
    return gr.update(value=curve_frame(points, chart))


def loss_points(s: JobState) -> dict[str, list]:
    return {"train": s.loss, "eval": s.eval_loss}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_html(s: JobState | None, lang: str) -> str:
    if s is None:
        return progress_bar("train", "idle", 0.0, t("train.idle", lang))
    pct = 100.0 * s.step / s.total_steps if s.total_steps else 0.0
    if s.status == "finished":
        pct = 100.0
    shown = phase(s.phase, lang) or t(f"train.status.{s.status}", lang)
    label = t("train.progress", lang, step=s.step, total=s.total_steps or "?",
              pct=f"{pct:.0f}", eta=duration(s.eta_seconds), phase=shown)
    return progress_bar("train", s.status, pct, label)


def stats_markdown(s: JobState, lang: str) -> str:
    lines = [f"**{t('train.status', lang)}:** {t(f'train.status.{s.status}', lang)}"]
    if s.status == "finished":   # the job's own message is English: the same, in the page's
        lines[0] += " — " + t("train.finished", lang, steps=s.step,
                              elapsed=duration(s.elapsed_seconds))
        if s.total_steps and s.step < s.total_steps:
            lines[0] += "; " + t("train.early", lang)
    elif s.status == "stopped":
        lines[0] += " — " + t("train.stopped", lang, step=s.step, total=s.total_steps or "?")
    elif s.message:
        lines[0] += f" — {say(s.message, lang)}"
    last = f"{s.loss[-1][1]:.4f}" if s.loss else "–"
    last_eval = f"{s.eval_loss[-1][1]:.4f}" if s.eval_loss else "–"
    lines.append(t("train.numbers", lang, loss=last, eval=last_eval, points=len(s.loss),
                   tps=f"{s.tokens_per_second:,.0f}", elapsed=duration(s.elapsed_seconds)))
    mem = s.memory or {}
    if mem:
        text = t("train.ram", lang, mib=f"{mem.get('rss_bytes', 0) / MIB:,.0f}")
        if "vram_bytes" in mem:
            text += " · " + t("train.vram", lang, mib=f"{mem['vram_bytes'] / MIB:,.0f}",
                              peak=f"{mem.get('vram_peak_bytes', 0) / MIB:,.0f}")
        lines.append(text)
    if s.best_step is not None:
        lines.append(t("train.best", lang, step=s.best_step, loss=f"{s.best_eval_loss:.4f}"))
    if s.trainable_params:
        lines.append(t("train.params", lang, n=f"{s.trainable_params:,}",
                       total=f"{s.total_params:,}", examples=s.examples))
    lines.append(t("train.folder", lang, path=s.output_dir))
    return "\n\n".join(lines)
