"""Each visitor's settings as they stand, kept across page reloads and app restarts.

A visitor is a login user, or a browser (the random token it keeps; see ``app.visitor_of``).
Their settings are written as they change, one sparse YAML file per visitor in the runs
folder (``.settings/``, never the repository), named by a keyed hash of the identity so
that a file name reveals no token and no user name. A file is read back with the checks a
preset gets (size cap, safe YAML, every key and value through ``RunConfig.set``); the
caller then applies the shared app's path and code rules, as for a preset. A page that has
not loaded yet (a ``session:`` visitor) has nothing to keep.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import MAX_CONFIG_BYTES, RunConfig, atomic_write_text, parse_yaml
from ..errors import ConfigError
from .presets import sparse_dict
from ..messages import Message

log = logging.getLogger("finetune_gui.settings")

FOLDER = ".settings"
KEPT_VISITORS = ("user:", "browser:")
RECENT_KEYS = ("model.name_or_path", "data.path")   # offered again in a "Recent" picker
RECENT_KEEP = 8


@dataclass
class SavedSettings:
    config: RunConfig
    preset: str      # the preset they started from ('reset to preset' goes back to it)
    lang: str
    recent: dict[str, list[str]]   # RECENT_KEYS -> values used, latest first


class SettingsStore:
    def __init__(self, runs_dir: Path, secret: str):
        self.folder = Path(runs_dir) / FOLDER
        self._key = secret.encode("utf-8")

    def path_for(self, visitor: str) -> Path | None:
        if not visitor.startswith(KEPT_VISITORS):
            return None
        digest = hmac.new(self._key, visitor.encode("utf-8"), hashlib.sha256).hexdigest()
        return self.folder / f"{digest[:40]}.yaml"

    @staticmethod
    def text_of(st) -> str:
        """What is kept of a session (a ``UserState``)."""
        return yaml.safe_dump({"preset": st.preset, "lang": st.lang, "recent": st.recent,
                               "settings": sparse_dict(st.config)},
                              sort_keys=False, allow_unicode=True)

    def save(self, visitor: str, text: str) -> bool:
        """Write a visitor's settings (``text_of``); False when there is nowhere to keep
        them (a page not loaded yet, a read-only or full disk: logged, the edit stands)."""
        path = self.path_for(visitor)
        if path is None or len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
            return False
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            log.warning("settings not saved (%s): %s", path, exc.strerror or exc)
            return False
        return True

    def load(self, visitor: str) -> SavedSettings | None:
        """A visitor's saved settings; None when there are none. Raises ``ConfigError``
        naming what is wrong when the file cannot be used (damaged, edited by hand)."""
        path = self.path_for(visitor)
        if path is None or not path.is_file():
            return None
        where = "saved settings"
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(Message("cfg.file_large", path=where, kb=MAX_CONFIG_BYTES // 1000))
            data = parse_yaml(path.read_text(encoding="utf-8"), where)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(Message("settings.unreadable", source=where, why=exc)) from None
        if not isinstance(data, dict):
            raise ConfigError(Message("cfg.not_sections", source=where, kind=type(data).__name__))
        preset, lang = data.get("preset", ""), data.get("lang", "")
        if not isinstance(preset, str) or not isinstance(lang, str):
            raise ConfigError(Message("settings.preset_lang", source=where))
        return SavedSettings(RunConfig.from_dict(data.get("settings"), source=where),
                             preset[:300], lang[:10], _recent(data.get("recent"), where))

    def remember(self, st) -> None:
        """Save a session's settings (a ``UserState``) if they changed since last saved."""
        text = self.text_of(st)
        if text != st.saved_settings and self.save(st.visitor, text):
            st.saved_settings = text


def _recent(value, where: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            key in RECENT_KEYS and isinstance(items, list) and
            all(isinstance(item, str) and 0 < len(item) <= 1000 for item in items)
            for key, items in value.items()):
        raise ConfigError(Message("settings.recent", source=where, keys=", ".join(RECENT_KEYS)))
    return {key: items[:RECENT_KEEP] for key, items in value.items()}


def note_recent(st, key: str, value: str) -> None:
    """``value`` (a model or data file just used) goes first in the session's recent list."""
    if not value:
        return
    items = [item for item in st.recent.get(key, []) if item != value]
    st.recent[key] = [value, *items][:RECENT_KEEP]
