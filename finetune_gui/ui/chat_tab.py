"""Chat tab: pick a run, chat with streaming answers, compare base and tuned side by side."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..chat import MAX_MESSAGE_CHARS, ChatEngine
from ..config import MAX_PROMPT_CHARS
from ..errors import FinetuneError
from ..runs import list_runs
from .common import Ui, guarded, guarded_stream
from .fields import apply_values
from .jobs import JobRegistry
from .locale import t
from .state import UserState

BASE = "__base__"


def run_choices(ui: Ui, registry: JobRegistry, lang: str) -> list[tuple[str, str]]:
    """Finished runs (newest first) plus 'the base model alone'."""
    found = [ui.workspace.display(p) for p in list_runs(ui.workspace.runs_dir)]
    for extra in reversed(registry.finished_dirs):
        shown = ui.workspace.display(extra)
        if shown not in found and (Path(extra) / "adapter" / "adapter_config.json").exists():
            found.insert(0, shown)
    return [(p, p) for p in found] + [(t("chat.base_only", lang), BASE)]


def build(ui: Ui, state: gr.State, registry: JobRegistry) -> SimpleNamespace:
    with gr.Row():
        run = gr.Dropdown(label=ui.t("chat.run"), choices=run_choices(ui, registry, ui.lang),
                          scale=3, elem_id="chat-run")
        ui.text(run, label="chat.run")
        refresh = gr.Button(ui.t("chat.refresh"), size="sm", scale=1, elem_id="chat-refresh")
        load = gr.Button(ui.t("chat.load"), variant="primary", scale=1, elem_id="chat-load")
        merge = gr.Button(ui.t("chat.merge"), scale=1, elem_id="chat-merge")
        for comp, key in ((refresh, "chat.refresh"), (load, "chat.load"), (merge, "chat.merge")):
            ui.text(comp, value=key)
    info = gr.Markdown(ui.t("chat.pick"), elem_id="chat-info")
    with gr.Row():
        tuned = gr.Chatbot(label=ui.t("chat.tuned"), height=380, elem_id="chat-tuned")
        base = gr.Chatbot(label=ui.t("chat.base"), height=380, visible=False, elem_id="chat-base")
        ui.text(tuned, label="chat.tuned")
        ui.text(base, label="chat.base")
    with gr.Row():
        message = gr.Textbox(label=ui.t("chat.message"), placeholder=ui.t("chat.placeholder"),
                             show_label=False, scale=5, max_length=MAX_MESSAGE_CHARS,
                             elem_id="chat-input")
        ui.text(message, label="chat.message", placeholder="chat.placeholder")
        send = gr.Button(ui.t("chat.send"), variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button(ui.t("chat.clear"), scale=1, elem_id="chat-clear")
        ui.text(send, value="chat.send")
        ui.text(clear, value="chat.clear")
    with gr.Accordion(ui.t("chat.settings"), open=False) as settings:
        ui.text(settings, label="chat.settings")
        compare = gr.Checkbox(label=ui.t("chat.compare"), info=ui.t("chat.compare_info"),
                              elem_id="chat-compare")
        ui.text(compare, label="chat.compare", info="chat.compare_info")
        system = gr.Textbox(label=ui.t("chat.system"), info=ui.t("chat.system_info"), lines=2,
                            max_length=MAX_PROMPT_CHARS, elem_id="chat-system")
        ui.text(system, label="chat.system", info="chat.system_info")
        with gr.Row():
            ui.field("generation.max_new_tokens", "slider", maximum=2048)
            ui.field("generation.temperature", "slider")
            ui.field("generation.top_p", "slider")
        with gr.Row():
            ui.field("generation.top_k", "slider", maximum=200)
            ui.field("generation.repetition_penalty", "slider")

    def engine_for(st: UserState, choice: str, progress) -> ChatEngine:
        if st.engine is not None and st.engine_source == choice:
            return st.engine
        if not choice:
            raise FinetuneError(t("chat.pick", st.lang))
        st.engine = None
        progress(0.2, desc=t("chat.loading", st.lang))
        if choice == BASE:
            ui.workspace.check_model(st.config)
            engine = ChatEngine.from_config(st.config.copy())
        else:
            engine = ChatEngine.from_run(ui.workspace.check_run(choice))
        st.engine, st.engine_source = engine, choice
        return engine

    def describe(st: UserState, engine: ChatEngine, seconds: float | None = None) -> str:
        text = t("chat.ready", st.lang, source=ui.workspace.display(engine.source),
                 template=engine.spec.name)
        if engine.merged:
            text += " · " + t("chat.merged", st.lang)
        if seconds is not None:
            text += f" ({seconds:.1f} s)"
        return text

    @guarded
    def on_load(st: UserState, choice: str, progress=gr.Progress()):
        t0 = time.time()
        st.engine = None
        engine = engine_for(st, choice, progress)
        return describe(st, engine, time.time() - t0)

    @guarded
    def on_merge(st: UserState, choice: str, progress=gr.Progress()):
        engine = engine_for(st, choice, progress)
        if not engine.has_adapter:
            raise FinetuneError(t("chat.no_adapter", st.lang))
        progress(0.6, desc=t("chat.merging", st.lang))
        engine.merge()
        return describe(st, engine)

    def params_for(st: UserState):
        return dataclasses.replace(st.config.generation)

    @guarded_stream
    def on_send(st: UserState, choice: str, text: str, history: list, base_history: list,
                system_prompt: str, side_by_side: bool, progress=gr.Progress(), *generation):
        # Gradio puts the Progress tracker at its position; the generation fields follow.
        apply_values(ui, st, dict(zip(gen_keys, generation)))
        text = (text or "").strip()
        if not text:
            raise FinetuneError(t("chat.empty", st.lang))
        engine = engine_for(st, choice, progress)
        params = params_for(st)
        system_prompt = (system_prompt or "").strip()
        prefix = [{"role": "system", "content": system_prompt}] if system_prompt else []
        history = list(history or []) + [{"role": "user", "content": text}]
        base_history = list(base_history or []) + [{"role": "user", "content": text}]
        fitted = engine.fit_prompt(prefix + _plain(history), params.max_new_tokens)
        if fitted.dropped_turns:
            gr.Info(t("chat.dropped", st.lang, n=fitted.dropped_turns))
        answer = ""
        for answer in engine.stream(fitted, params, use_adapter=True):
            yield "", history + [{"role": "assistant", "content": answer}], gr.skip()
        yield "", history + [{"role": "assistant", "content": answer.strip()}], gr.skip()
        if side_by_side and engine.has_adapter:
            asked = prefix + _plain(base_history)
            answer = ""
            for answer in engine.stream(asked, params, use_adapter=False):
                yield "", gr.skip(), base_history + [{"role": "assistant", "content": answer}]
            yield "", gr.skip(), base_history + [{"role": "assistant", "content": answer.strip()}]

    def on_refresh(st: UserState):
        return gr.update(choices=run_choices(ui, registry, st.lang))

    def on_show(st: UserState):
        """Opening the tab: the runs, and the status line in the page's language."""
        status = describe(st, st.engine) if st.engine is not None else t("chat.pick", st.lang)
        return on_refresh(st), status

    def on_compare(on: bool):
        return gr.update(visible=on)

    def on_run_change(st: UserState, choice: str):
        if st.engine is not None and st.engine_source != choice:
            st.engine = None
        return t("chat.press_load", st.lang), [], []

    refresh.click(on_refresh, [state], [run], queue=False)
    run.input(on_run_change, [state, run], [info, tuned, base], queue=False)
    load.click(on_load, [state, run], [info], concurrency_id="chat")
    merge.click(on_merge, [state, run], [info], concurrency_id="chat")
    compare.input(on_compare, [compare], [base], queue=False)
    gen_keys = [k for k in ui.fields if k.startswith("generation.")]
    inputs = [state, run, message, tuned, base, system, compare,
              *[ui.fields[k] for k in gen_keys]]
    sent = send.click(on_send, inputs, [message, tuned, base], concurrency_id="chat",
                      concurrency_limit=2)
    message.submit(on_send, inputs, [message, tuned, base], concurrency_id="chat")
    clear.click(lambda: ([], []), None, [tuned, base], queue=False)
    sent.then(lambda st, c: gr.skip() if st.engine is None else
              describe(st, st.engine), [state, run], [info], queue=False)
    return SimpleNamespace(run=run, show=on_show, info=info)


def _plain(history: list) -> list[dict]:
    """Chatbot messages as plain role/content dicts for the engine."""
    out = []
    for msg in history:
        if isinstance(msg, dict):
            role, content = msg.get("role"), msg.get("content")
        else:
            role, content = getattr(msg, "role", None), getattr(msg, "content", None)
        if isinstance(content, list):   # Gradio 6 may hand back [{'type': 'text', ...}]
            content = "".join(c.get("text", "") if isinstance(c, dict) else str(c)
                              for c in content)
        out.append({"role": role, "content": content if isinstance(content, str) else ""})
    return out
