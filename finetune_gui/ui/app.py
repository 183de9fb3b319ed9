"""Build the Gradio Blocks app: header (language, presets, CLI), the seven tabs, their wiring."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import gradio as gr

from ..errors import FinetuneError
from ..hardware import gpu_list as detect_gpus
from . import (advice_box, chat_tab, data_tab, evaluate_tab, export_tab, lora_tab, model_tab,
               gradio_text, notices, recent, train_tab)
from .common import AppOptions, Ui, friendly, guarded
from .fields import bind_fields, field_updates, set_field
from .jobs import JobRegistry
from .locale import LANGUAGES, t
from .presets import list_presets, load_preset, preset_path, save_preset
from .settings_store import SettingsStore
from .api_service import ApiService
from .state import UserState, blank_state, restore_settings, start_session
from .workspace import Workspace

TABS = ("model", "data", "lora", "train", "evaluate", "chat", "export")

CSS = """
.ft-progress { height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden; }
.ft-bar { height: 100%; background: var(--color-accent); transition: width 0.5s; }
.ft-progress-label { margin-top: 4px; font-variant-numeric: tabular-nums; }
#status:empty { display: none; }
/* Until the page's first load has put the session's settings into the fields, the wizard
   takes no input: a value typed before that load answers would be overwritten by it. */
body:not(.fg-ready) #tabs { pointer-events: none; opacity: 0.6; }
"""
# Run in the browser once the first load has answered (ok or not): the wizard takes input.
PAGE_READY_JS = "() => { document.body.classList.add('fg-ready'); }"


def build_app(options: AppOptions | None = None, registry: JobRegistry | None = None):
    """The Blocks app and its ``Ui`` registry. One ``registry`` = one training job."""
    options = options or AppOptions()
    workspace = Workspace.create(options.root, options.runs_dir, shared=options.shared,
                                 extra=[options.model] if options.model and
                                 Path(options.model).expanduser().exists() else None)
    ui = Ui(options, workspace,
            settings=SettingsStore(workspace.runs_dir, visitor_secret(workspace)))
    registry = registry or JobRegistry()
    registry.owners = registry.owners or options.shared
    api = ApiService(options.host, owners=options.shared)
    with gr.Blocks(title="finetune_gui", analytics_enabled=False) as demo:
        state = gr.State(blank_state(options, workspace))
        with gr.Row(equal_height=True):
            title = gr.Markdown(f"## {ui.t('app.title')}\n{ui.t('app.subtitle')}")
            ui.text(title, value=lambda lang: f"## {t('app.title', lang)}\n{t('app.subtitle', lang)}")
            lang = gr.Radio(choices=[(name, code) for code, name in LANGUAGES.items()],
                            value=options.lang, show_label=False, container=False,
                            scale=0, min_width=220, elem_id="lang")
        with gr.Row():
            preset = gr.Dropdown(label=ui.t("preset.pick"), choices=list_presets(workspace),
                                 value=options.preset if Path(workspace.root / options.preset)
                                 .exists() else None, scale=3, elem_id="preset")
            ui.text(preset, label="preset.pick")
            preset_load = gr.Button(ui.t("preset.load"), scale=1, elem_id="preset-load")
            preset_reset = gr.Button(ui.t("preset.reset"), scale=1, elem_id="preset-reset")
            preset_name = gr.Textbox(label=ui.t("preset.name"), scale=2, elem_id="preset-name")
            preset_save = gr.Button(ui.t("preset.save"), scale=1, elem_id="preset-save")
            cli_button = gr.Button(ui.t("preset.cli"), scale=1, elem_id="cli-button")
            for comp, key in ((preset_load, "preset.load"), (preset_reset, "preset.reset"),
                              (preset_save, "preset.save"), (cli_button, "preset.cli")):
                ui.text(comp, value=key)
            ui.text(preset_name, label="preset.name")
        cli = gr.Textbox(label=ui.t("preset.cli_label"), visible=False, buttons=["copy"],
                         interactive=False, elem_id="cli-command")
        ui.text(cli, label="preset.cli_label")
        status = gr.Markdown(elem_id="status")
        tabs, parts = {}, {}
        with gr.Tabs(elem_id="tabs"):
            for name in TABS:
                with gr.Tab(ui.t(f"tab.{name}"), id=name, elem_id=f"tab-{name}") as tab:
                    tabs[name] = ui.text(tab, label=f"tab.{name}")
                    if name == "model":
                        parts[name] = model_tab.build(ui, state)
                    elif name == "data":
                        parts[name] = data_tab.build(ui, state)
                    elif name == "lora":
                        parts[name] = lora_tab.build(ui, state)
                    elif name == "train":
                        parts[name] = train_tab.build(ui, state, registry)
                    elif name == "evaluate":
                        parts[name] = evaluate_tab.build(ui, state, registry)
                    elif name == "chat":
                        parts[name] = chat_tab.build(ui, state, registry)
                    else:
                        parts[name] = export_tab.build(ui, state, registry, api)
        events = bind_fields(ui, state, status)
        parts["train"].wire_buttons()
        _wire(ui, demo, state, parts, tabs, events, lang, status,
              (preset, preset_load, preset_reset, preset_name, preset_save, cli_button, cli),
              registry)
    if options.shared:
        # Gradio writes the API description (every handler, label and default) into the
        # login page too, and '/?all_endpoints=true' lists even undocumented handlers; a
        # shared app describes none, so visitors learn nothing before login.
        for fn in demo.fns.values():
            if fn.api_visibility == "public":
                fn.api_visibility = "undocumented"
        demo.get_api_info = _no_api_description
    demo.ui = ui
    demo.registry = registry
    demo.api = api
    return demo


def visitor_of(request: gr.Request | None, browser_id: str | None) -> tuple[str, str]:
    """(the visitor's identity, the browser token to keep): the login user when there is a
    login, else a random token this browser keeps across reloads."""
    token = browser_id if isinstance(browser_id, str) and 20 <= len(browser_id) <= 64 \
        else secrets.token_urlsafe(24)
    user = getattr(request, "username", None) if request is not None else None
    return (f"user:{user}" if user else f"browser:{token}"), token


def visitor_secret(workspace: Workspace) -> str:
    """The key the browser token is stored under, the same across restarts of this app
    (a new key would make every browser a new visitor). Kept in the runs folder."""
    path = workspace.runs_dir / ".visitor-secret"
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 16:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    text = secrets.token_urlsafe(24)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="ascii")
        path.chmod(0o600)
    except OSError:
        pass   # a read-only runs folder: visitors are new after a restart, nothing worse
    return text


def _no_api_description(*_args, **_kwargs) -> dict:
    return {"named_endpoints": {}, "unnamed_endpoints": {}}


def _wire(ui: Ui, demo, state, parts, tabs, events, lang, status, header, registry) -> None:
    model, data, lora, train = parts["model"], parts["data"], parts["lora"], parts["train"]
    preset, preset_load, preset_reset, preset_name, preset_save, cli_button, cli = header
    field_comps = list(ui.fields.values())
    model_view = [model.source, model.path, model.upload]

    # Every LoRA field (and the model) changes the live count.
    for key, evs in events.items():
        if key.startswith("lora."):
            for ev in evs:
                ev.then(lora.refresh, [state], lora.refresh_outputs, queue=False,
                        show_progress="hidden")
        if key.startswith(("train.", "model.")):
            for ev in evs:
                ev.then(train.plan_refresh, [state], [train.plan], queue=False,
                        show_progress="hidden")
        if key.startswith("data.") or key == "train.max_seq_len":
            for ev in evs:
                ev.then(_data_refresh_if_loaded(data), [state], data.refresh_outputs,
                        show_progress="hidden")
    model.loaded.then(lora.refresh, [state], lora.refresh_outputs, queue=False)
    model.loaded.then(_data_refresh_if_loaded(data), [state], data.refresh_outputs)
    tabs["lora"].select(lora.refresh, [state], lora.refresh_outputs, queue=False)
    tabs["train"].select(train.plan_refresh, [state], [train.plan], queue=False)
    _wire_advice(ui, state, [lora.advice, train.advice], [tabs["lora"], tabs["train"]], lora)
    tabs["data"].select(_data_autoload(ui, data), [state], data.refresh_outputs)
    tabs["chat"].select(parts["chat"].show, [state], [parts["chat"].run, parts["chat"].info],
                        queue=False)
    tabs["evaluate"].select(parts["evaluate"].show, [state, parts["evaluate"].run],
                            parts["evaluate"].show_outputs, queue=False)
    tabs["export"].select(parts["export"].show, [state, parts["export"].run],
                          parts["export"].show_outputs, queue=False)

    def sync_all(st: UserState):
        """Push the session's config into every field (page load, preset load)."""
        return [*field_updates(ui, st.config), *model_tab.source_update(st)]

    def on_page_load(st: UserState, browser_id: str | None, request: gr.Request):
        st.visitor, browser_id = visitor_of(request, browser_id)
        start_session(ui, st)
        job = registry.current
        note = ""
        if job is not None and job.state.active and registry.owned_by(st.visitor):
            # The visitor's own job: a reloaded page shows its settings. Another visitor's
            # page starts from the preset (or their own saved settings), never from someone
            # else's.
            st.config = job.config.copy()
        else:
            note = restore_settings(ui, st)
        shown_preset = st.preset if any(st.preset == path for _, path in
                                        list_presets(ui.workspace)) else None
        return [*sync_all(st), model_tab.hardware_markdown(st.lang), *train.attach(st),
                recent.choices(st, "model.name_or_path"), recent.choices(st, "data.path"),
                gr.update(value=shown_preset), note, gr.update(value=st.lang),
                *(ui.translations(st.lang) if st.lang != ui.options.lang   # built in that one
                  else [gr.skip()] * len(ui.texts)), browser_id]

    browser = gr.BrowserState(None, storage_key="finetune_gui_visitor",
                              secret=visitor_secret(ui.workspace))
    demo.load(on_page_load, [state, browser],
              [*field_comps, *model_view, model.hardware, *train.outputs, model.recent,
               data.recent, preset, status, lang,
               *[item.component for item in ui.texts], browser]) \
        .then(None, js=PAGE_READY_JS)

    @guarded
    def on_preset_load(st: UserState, path: str):
        if not path:
            raise FinetuneError(t("preset.none", st.lang))
        config = load_preset(ui.workspace, path)
        notes = ui.workspace.switch_off_code(config)
        ui.workspace.check_config(config)  # a path outside the workspace refuses the preset
        config.train.output_dir = ui.workspace.fresh_run_dir(config.train.output_dir)
        st.config, st.preset = config, path
        st.drop_model()
        st.engine = None
        ui.remember(st)
        message = "✅ " + t("preset.loaded", st.lang, path=path)
        if notes:
            message += "\n\n" + "\n".join(f"⚠️ {n}" for n in notes)
        return [*sync_all(st), message]

    @guarded
    def on_preset_save(st: UserState, name: str):
        if not (name or "").strip():
            raise FinetuneError(t("preset.need_name", st.lang))
        target = ui.workspace.display(preset_path(ui.workspace, name))
        try:
            # A second click on the same name replaces it (the old file kept as .bak).
            path = save_preset(ui.workspace, st.config, name,
                               replace=st.replace_preset == target)
        except FileExistsError:
            st.replace_preset = target
            return gr.skip(), "⚠️ " + t("preset.exists", st.lang, path=target)
        st.replace_preset = ""
        shown = ui.workspace.display(path)
        st.preset = shown
        return (gr.update(choices=list_presets(ui.workspace), value=shown),
                "✅ " + t("preset.saved", st.lang, path=shown))

    @guarded
    def on_cli(st: UserState):
        base = st.preset or ui.options.preset
        base_path = ui.workspace.root / base
        if not base_path.exists():
            base = ui.options.preset
        from ..launch import config_multi_gpu_command
        gpus = max(2, len(detect_gpus()))
        command = (f"# one machine\n{st.config.cli_command(base)}\n\n"
                   f"# {gpus} GPUs with accelerate (DDP; FSDP/DeepSpeed configs in "
                   f"presets/accelerate/)\n"
                   f"{config_multi_gpu_command(st.config, gpus, preset=base)}")
        return gr.update(value=command, visible=True, lines=6)

    preset_load.click(on_preset_load, [state, preset], [*field_comps, *model_view, status]) \
        .then(lora.refresh, [state], lora.refresh_outputs, queue=False) \
        .then(_data_refresh_if_loaded(data), [state], data.refresh_outputs)
    preset_reset.click(lambda st: on_preset_load(st, st.preset or ui.options.preset), [state],
                       [*field_comps, *model_view, status]) \
        .then(lora.refresh, [state], lora.refresh_outputs, queue=False) \
        .then(_data_refresh_if_loaded(data), [state], data.refresh_outputs)
    preset_save.click(on_preset_save, [state, preset_name], [preset, status])
    cli_button.click(on_cli, [state], [cli], queue=False)

    text_comps = [item.component for item in ui.texts]

    def on_lang(st: UserState, code: str):
        st.lang = code if code in LANGUAGES else "en"
        ui.remember(st)
        return ui.translations(st.lang)

    lang.input(on_lang, [state, lang], text_comps, queue=False) \
        .then(lora.refresh, [state], lora.refresh_outputs, queue=False) \
        .then(_data_refresh_if_loaded(data), [state], data.refresh_outputs) \
        .then(lambda st: model_tab.card_markdown(st), [state], [model.card], queue=False) \
        .then(lambda st: model_tab.hardware_markdown(st.lang), [state], [model.hardware],
              queue=False) \
        .then(train.attach, [state], train.outputs, queue=False)


def _wire_advice(ui: Ui, state, boxes, tabs, lora) -> None:
    """Small-data suggestions on the LoRA and Train tabs; Apply writes them into the config."""
    shown = advice_box.outputs(boxes)
    field_comps = list(ui.fields.values())

    def refresh(st: UserState):
        return advice_box.updates(ui, st, boxes)

    @guarded
    def apply(st: UserState):
        _, suggestions = advice_box.suggestions_for(ui, st)
        for key, value in suggestions.items():
            set_field(ui, st, key, value)
        return [*field_updates(ui, st.config), *advice_box.updates(ui, st, boxes)]

    for tab in tabs:
        tab.select(refresh, [state], shown, queue=False)
    for box in boxes:
        box.apply.click(apply, [state], [*field_comps, *shown], queue=False) \
            .then(lora.refresh, [state], lora.refresh_outputs, queue=False)


def _data_refresh_if_loaded(data):
    def refresh(st: UserState):
        if not st.rows:
            return [gr.skip()] * len(data.refresh_outputs)
        return data.refresh(st)
    return refresh


def _data_autoload(ui: Ui, data):
    """First visit to the Data tab: load data.path so there is something to look at."""
    def autoload(st: UserState):
        if not st.rows and st.config.data.path:
            try:
                from .data_view import load_rows
                ui.workspace.check_data(st.config.data.path, "data.path")
                st.rows = load_rows(st.config.data.path)
                st.selected_row, st.data_dirty = 1, False
            except Exception as exc:  # show why, keep the tab usable
                gr.Warning(friendly(exc, st.lang))
                return [gr.skip()] * len(data.refresh_outputs)
        if not st.rows:
            return [gr.skip()] * len(data.refresh_outputs)
        return data.refresh(st, with_table=True)
    return autoload


MAX_UPLOAD_ENV = "FINETUNE_GUI_MAX_UPLOAD"
SHARED_MAX_UPLOAD = "5gb"   # a 4-bit 7B/8B .gguf fits; data files are far smaller


def launch_kwargs(shared: bool = False) -> dict:
    """``launch()`` settings: no extra served folders; uploads capped when shared
    (FINETUNE_GUI_MAX_UPLOAD, e.g. '500mb', sets the cap, also for a local app)."""
    kwargs = {"css": CSS, "head": notices.HEAD + gradio_text.head_script(),
              "theme": gr.themes.Soft(), "ssr_mode": False, "allowed_paths": [],
              "show_error": False}
    limit = os.environ.get(MAX_UPLOAD_ENV) or (SHARED_MAX_UPLOAD if shared else None)
    if limit:
        kwargs["max_file_size"] = limit
    return kwargs
