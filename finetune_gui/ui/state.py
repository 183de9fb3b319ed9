"""Per-user state: what one browser session is editing and has loaded.

Lives in a ``gr.State`` (one copy per session, freed when the session ends), never in a
module global. The one training job is not here: it is a shared server resource
(see ``jobs.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import FinetuneError
from ..messages import Message
from .common import AppOptions, Ui, friendly
from .locale import LANGUAGES, t
from .workspace import Workspace


def _session_visitor() -> str:
    return "session:" + secrets.token_urlsafe(16)


@dataclass
class UserState:
    config: RunConfig
    lang: str = "en"
    # Who this page is, for job ownership: 'user:NAME' after a login, else 'browser:TOKEN'
    # (a random token kept in the browser); until the page has loaded, this session only.
    visitor: str = field(default_factory=_session_visitor)
    preset: str = ""                  # the preset last loaded (base for 'copy as CLI')
    replace_preset: str = ""          # a preset file the next Save may replace (asked once)
    saved_settings: str = ""          # what settings_store last wrote for this visitor
    recent: dict[str, list[str]] = field(default_factory=dict)  # settings_store.RECENT_KEYS
    # Model tab
    model: Any = None
    tokenizer: Any = None
    tokenizer_for: str = ""           # model.name_or_path the tokenizer belongs to
    card: Any = None                  # models.ModelCard of the loaded model
    structure: Any = None             # lora_count.Structure (linear shapes) of the model
    # Data tab
    rows: list[dict] = field(default_factory=list)
    data_format: str = ""
    data_dirty: bool = False          # edits not yet saved to data.path
    selected_row: int = 1             # 1-based, as people count rows
    # Chat tab
    engine: Any = None
    engine_source: str = ""
    # Evaluate tab
    eval_result: Any = None           # the result on show (for the worse-than-base filter)
    eval_stop: Any = None             # threading.Event of the evaluation running for this page
    # Train tab: how much of the job's plot/log this page has drawn
    drawn_points: int = -1
    drawn_log: int = -1
    drawn_status: str = ""

    def __deepcopy__(self, memo):
        """Gradio gives each session a deep copy of the app's blank state: a copy is a
        session of its own (its own visitor token) until its page has loaded."""
        copied = dataclasses.replace(self, **{
            f.name: copy.deepcopy(getattr(self, f.name), memo)
            for f in dataclasses.fields(self) if f.name != "visitor"})
        copied.visitor = _session_visitor()
        return copied

    def tokenizer_for_config(self):
        """The tokenizer of the configured model (loaded once per model name)."""
        name = self.config.model.name_or_path
        if self.tokenizer is not None and self.tokenizer_for == name:
            return self.tokenizer
        from ..models import load_tokenizer
        self.tokenizer = load_tokenizer(self.config.model)
        self.tokenizer_for = name
        return self.tokenizer

    def drop_model(self) -> None:
        self.model = self.card = self.structure = None

    def require_model(self):
        if self.model is None:
            raise FinetuneError(Message("ui.no_model"))
        return self.model


def initial_config(options: AppOptions, workspace: Workspace) -> tuple[RunConfig, str]:
    """The config a new session starts from: the default preset, the --model override,
    and a run folder that does not hold an earlier run."""
    preset = workspace.root / options.preset
    try:
        config = RunConfig.load(preset)
        preset_name = options.preset
    except FinetuneError:
        config, preset_name = RunConfig(), ""
    if options.model:
        config.model.name_or_path = options.model
    name = Path(config.train.output_dir).name or "run"
    config.train.output_dir = workspace.fresh_run_dir(
        workspace.display(workspace.runs_dir / name))
    return config, preset_name


def blank_state(options: AppOptions, workspace: Workspace) -> UserState:
    """The state every session starts from (Gradio deep-copies it per session). Not a
    factory: Gradio runs a factory as a page-load event of its own, which raced the app's
    page load and could replace the state that load had just filled in (the visitor, the
    restored settings), so that nothing the visitor did afterwards was kept. The page load
    (``start_session``) makes each session's own config."""
    config, preset = initial_config(options, workspace)
    return UserState(config=config, lang=options.lang, preset=preset)


def start_session(ui: Ui, st: UserState) -> None:
    """A page has loaded: its session starts from the default preset (a fresh run folder)."""
    st.config, st.preset = initial_config(ui.options, ui.workspace)


def restore_settings(ui: Ui, st: UserState) -> str:
    """Put the visitor's saved settings (``settings_store``) into ``st``, checked as a
    preset is (the shared app's paths, no model code); returns a note for the page, empty
    when all went well or there was nothing saved."""
    if ui.settings is None:
        return ""
    try:
        saved = ui.settings.load(st.visitor)
        if saved is None:
            return ""
        notes = ui.workspace.switch_off_code(saved.config)
        ui.workspace.check_config(saved.config)
    except FinetuneError as exc:
        return "⚠️ " + t("settings.not_restored", st.lang, reason=friendly(exc, st.lang))
    config = saved.config
    # a run made with these settings since: the next one goes to a fresh folder
    config.train.output_dir = ui.workspace.fresh_run_dir(config.train.output_dir)
    st.config, st.preset = config, saved.preset
    st.lang = saved.lang if saved.lang in LANGUAGES else st.lang
    st.recent = {key: [value for value in values if _allowed(ui, key, value)]
                 for key, values in saved.recent.items()}
    ui.remember(st)
    return "\n".join(f"⚠️ {note}" for note in notes)


def _allowed(ui: Ui, key: str, value: str) -> bool:
    """Whether this app would take ``value`` for ``key`` now (a shared app: inside the
    workspace, no local model folder outside it)."""
    trial = RunConfig()
    try:
        trial.set(key, value)
        ui.workspace.check_config(trial)
    except FinetuneError:
        return False
    return True
