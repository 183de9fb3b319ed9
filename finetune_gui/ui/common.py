"""Shared UI plumbing: app options, the component registry, config-bound fields, errors.

``Ui`` belongs to one built app (not to a user): it remembers which component shows which
locale text (so a language switch can relabel everything) and which component edits which
config key (so loading a preset can refresh every field).
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..config import RunConfig, field_info
from ..errors import FinetuneError
from ..messages import reason_of
from . import locale
from .settings_store import SettingsStore
from .workspace import Workspace

log = logging.getLogger("finetune_gui.ui")


@dataclass
class AppOptions:
    lang: str = "en"
    shared: bool = False              # others can reach it (--share, --auth, a LAN host): jailed
    host: str = "127.0.0.1"           # --host: where the Export tab's API server listens too
    model: str | None = None          # --model: the base model the app starts with
    runs_dir: str = "runs"
    root: str = "."
    preset: str = "presets/quickstart.yaml"
    poll_seconds: float = 1.0


@dataclass
class Text:
    """A component whose ``attrs`` (label, info, value, ...) come from locale keys."""
    component: Any
    attrs: dict[str, str | Callable[[str], Any]]


@dataclass
class Ui:
    options: AppOptions
    workspace: Workspace
    texts: list[Text] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    settings: SettingsStore | None = None   # each visitor's settings, kept as they change

    @property
    def lang(self) -> str:
        return self.options.lang

    def remember(self, st) -> None:
        """Keep a session's settings (``UserState``) for its next page load or app start."""
        if self.settings is not None:
            self.settings.remember(st)

    def t(self, key: str, **kw) -> str:
        return locale.t(key, self.lang, **kw)

    def text(self, component, **attrs):
        """Register ``component`` for relabelling; returns it."""
        self.texts.append(Text(component, attrs))
        return component

    def translations(self, lang: str) -> list:
        """One ``gr.update`` per registered component, in registration order."""
        out = []
        for item in self.texts:
            values = {}
            for attr, key in item.attrs.items():
                values[attr] = key(lang) if callable(key) else locale.t(key, lang)
            out.append(gr.update(**values))
        return out

    # ---- config-bound fields ---------------------------------------------------------
    def field(self, dotted: str, kind: str | None = None, **kw):
        """A component that edits ``dotted`` (e.g. 'lora.r'), labelled and explained."""
        info = field_info(dotted)
        meta = info.metadata
        default = getattr(RunConfig(), dotted.split(".")[0]).__dict__[dotted.split(".")[1]]
        kind = kind or _kind_for(default, meta)
        elem_id = kw.pop("elem_id", dotted.replace(".", "-").replace("_", "-"))
        lo, hi = kw.get("minimum", meta["min"]), kw.get("maximum", meta["max"])
        info_for = functools.partial(field_text, dotted, lo=lo, hi=hi)
        common = dict(label=self.t(f"field.{dotted}"), info=info_for(self.lang),
                      elem_id=elem_id, **kw)
        if kind == "checkbox":
            comp = gr.Checkbox(value=default, **common)
        elif kind == "dropdown":
            comp = gr.Dropdown(choices=list(meta["choices"]), value=default, **common)
        elif kind == "slider":
            step = kw.pop("step", None) or (1 if isinstance(default, int) else 0.01)
            common.pop("step", None)
            comp = gr.Slider(minimum=common.pop("minimum", meta["min"] or 0),
                             maximum=common.pop("maximum", meta["max"]), step=step,
                             value=default, **common)
        elif kind == "number":
            comp = gr.Number(value=default, precision=0 if isinstance(default, int) else None,
                             minimum=meta["min"], maximum=meta["max"], **common)
        else:
            common.setdefault("max_length", meta["max_chars"])  # the config refuses more too
            comp = gr.Textbox(value="" if default is None else str(default), **common)
        self.fields[dotted] = comp
        self.text(comp, label=f"field.{dotted}", info=info_for)
        return comp


def _kind_for(default: Any, meta: dict) -> str:
    if isinstance(default, bool):
        return "checkbox"
    if meta.get("choices"):
        return "dropdown"
    if isinstance(default, (int, float)):
        return "slider" if meta.get("max") is not None and meta["max"] <= 4096 else "number"
    return "text"


_META = object()


def field_text(dotted: str, lang: str, lo: Any = _META, hi: Any = _META) -> str:
    """The info line under a field: what it does, plus its range (the slider's, if narrower)."""
    meta = field_info(dotted).metadata
    text = locale.t(f"help.{dotted}", lang)
    lo = meta.get("min") if lo is _META else lo
    hi = meta.get("max") if hi is _META else hi
    if lo is not None and hi is not None:
        text += " " + locale.t("range", lang, lo=_num(lo), hi=_num(hi))
    elif lo is not None:
        text += " " + locale.t("range_min", lang, lo=_num(lo))
    return text


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


# ---- errors ---------------------------------------------------------------------------

def friendly(exc: BaseException, lang: str = "en") -> str:
    """A message a person can act on; never a bare 'Error'. Paths in it are shown relative
    to the app's folder (and the home folder as ~): a visitor learns no server layout."""
    if isinstance(exc, FinetuneError):
        return relative_paths(locale.say(reason_of(exc), lang))   # a Message in the page's language
    log.error("unexpected error in the UI:\n%s", "".join(traceback.format_exception(exc)))
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return locale.t("err.unexpected", lang, kind=type(exc).__name__,
                    detail=relative_paths(first) or "-")


def relative_paths(text: str) -> str:
    """``text`` with the app's working folder and the home folder left out of paths."""
    for folder, shown in ((os.getcwd(), ""), (os.path.expanduser("~"), "~" + os.sep)):
        if len(folder) > 1:
            text = text.replace(folder.rstrip(os.sep) + os.sep, shown)
    return text


def raise_friendly(exc: BaseException, lang: str = "en"):
    """Re-raise any error as a ``gr.Error`` with a readable title and message."""
    if isinstance(exc, gr.Error):
        raise exc
    raise gr.Error(friendly(exc, lang), title=locale.t("err.title", lang),
                   print_exception=False) from None


def guarded(func):
    """Handler decorator: core errors become readable UI messages, never a crash."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # every failure must reach the user as text
            raise_friendly(exc, _lang_of(args))
    return wrapper


def guarded_stream(func):
    """Like ``guarded`` for generator handlers (streaming chat, progress)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            yield from func(*args, **kwargs)
        except Exception as exc:
            raise_friendly(exc, _lang_of(args))
    return wrapper


def _lang_of(args) -> str:
    for a in args:
        lang = getattr(a, "lang", None)
        if isinstance(lang, str):
            return lang
    return "en"


def busy(button, fn, inputs, outputs, **kw):
    """Run ``fn`` with ``button`` disabled meanwhile; returns the event for chaining."""
    event = button.click(lambda: gr.update(interactive=False), None, button, queue=False)
    event = event.then(fn, inputs, outputs, **kw)
    after = event.then(lambda: gr.update(interactive=True), None, button, queue=False)
    return event, after


def markdown_lines(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)
