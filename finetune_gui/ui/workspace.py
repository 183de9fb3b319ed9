"""Which folders a browser user may read and write when the app is shared.

Locally the person at the keyboard owns the machine, so any path goes. When others can
reach the app (``--share``, ``--auth``, or a ``--host`` other than loopback) they type paths
into the UI, load presets and pick runs; every such value must stay inside the workspace
folders (``presets/``, the runs folder and ``data/uploads/``) or name a Hub model or
dataset that is no local path, and no model may run code (remote code, pickle).
``check_config`` is the one place that decides, and it is called where a value is used
(Start, Resume, Load, Evaluate, Chat, Export), not only where typed.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig, parse_mix
from ..errors import ConfigError, FinetuneError
from ..messages import Message
from ..hub_data import is_hub_id
from ..models import source_kind
from ..runs import find_run

UPLOADS = Path("data") / "uploads"
MAX_NAME_BYTES = 255   # one folder or file name, on every common file system
# Config keys whose values are paths the browser user chooses.
PATH_KEYS = ("data.path", "data.val_path", "data.eval_path", "train.output_dir",
             "train.init_adapter")
DATA_KEYS = ("data.path", "data.val_path", "data.eval_path")  # these may name Hub datasets


class PathNotAllowed(FinetuneError):
    """A path outside the workspace was given while the app is shared."""


@dataclass
class Workspace:
    root: Path
    runs_dir: Path
    shared: bool = False
    extra: list[Path] = field(default_factory=list)  # e.g. the --model folder given at launch

    @classmethod
    def create(cls, root: str | Path = ".", runs_dir: str | Path = "runs", *,
               shared: bool = False, extra: list[str | Path] | None = None) -> "Workspace":
        base = Path(root).resolve()
        runs = Path(runs_dir)
        runs = (runs if runs.is_absolute() else base / runs).resolve()
        return cls(base, runs, shared, [Path(p).expanduser().resolve() for p in extra or []])

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def user_presets(self) -> Path:
        return self.presets / "user"

    @property
    def uploads(self) -> Path:
        return self.root / UPLOADS

    def allowed_roots(self) -> list[Path]:
        return [self.presets, self.runs_dir, self.uploads, *self.extra]

    def check(self, path: str | Path, what: str = "path") -> Path:
        """The path, resolved; outside the workspace it is refused when shared."""
        text = str(path).strip()
        if not text:
            raise FinetuneError(Message("ws.empty", what=what))
        shown = f"{what} '{text[:80]}{'…' if len(text) > 80 else ''}'"
        try:
            p = Path(text).expanduser()
            p = (p if p.is_absolute() else self.root / p).resolve()
        except (OSError, RuntimeError, ValueError) as exc:   # a symlink loop, a NUL byte
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise FinetuneError(Message("ws.unusable", shown=shown, why=why)) from None
        if any(len(part.encode("utf-8", "replace")) > MAX_NAME_BYTES for part in p.parts):
            raise FinetuneError(Message("ws.name_long", shown=shown, most=MAX_NAME_BYTES))
        if self.shared and not any(p == r or r in p.parents for r in self.allowed_roots()):
            names = ", ".join(self.display(r) for r in self.allowed_roots())
            raise PathNotAllowed(Message("ws.outside", what=what, path=text, roots=names))
        return p

    def check_data(self, value: str, what: str = "data.path") -> str:
        """A data source as the reader takes it: a Hub dataset id (which names no file
        here, so ``datasets`` downloads it as a Hub model is downloaded), or a path that
        ``check`` allows."""
        if is_hub_id(value, roots=(self.root,)):
            return str(value).strip()
        return str(self.check(value, what))

    def check_model(self, config: RunConfig) -> None:
        """When shared: the model comes from the workspace (or the Hub cache, or the embedded
        one) and runs no code from its files."""
        if not self.shared:
            return
        model = config.model
        if source_kind(model.name_or_path) in ("folder", "gguf"):
            self.check(model.name_or_path, "model.name_or_path")
        if model.trust_remote_code:
            raise ConfigError(Message("ws.no_remote_code"))
        if model.allow_pickle:
            raise ConfigError(Message("ws.no_pickle"))

    def switch_off_code(self, config: RunConfig) -> list[str]:
        """When shared, a loaded preset's remote-code and pickle switches are turned off
        (the rest of it stays usable); returns what was changed."""
        notes = []
        if self.shared:
            for key in ("trust_remote_code", "allow_pickle"):
                if getattr(config.model, key):
                    setattr(config.model, key, False)
                    notes.append(f"model.{key} was switched off (the app is shared)")
        return notes

    def check_config(self, config: RunConfig) -> None:
        """When shared: every path of ``config`` inside the workspace, and ``check_model``.
        Raises with the field's name; changes nothing."""
        if not self.shared:
            return
        for key in PATH_KEYS:
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            if value and key in DATA_KEYS:
                self.check_data(value, key)
            elif value:
                self.check(value, key)
        for path, _ in parse_mix(config.data.mix):
            self.check_data(path, "data.mix")
        self.check_model(config)

    def check_run(self, choice: str | Path, what: str = "run") -> Path:
        """A run folder inside the workspace whose model passes ``check_model``: a run
        trained locally on an outside model folder is refused when shared."""
        root = self.check(choice, what)
        paths, config = find_run(root)
        self.check_model(config)
        return paths.root

    def display(self, path: str | Path) -> str:
        """A path relative to the workspace root where possible (shorter, no home folder)."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.root))
        except ValueError:
            return str(p)

    def store_upload(self, temp_file: str | Path, subfolder: str = "") -> Path:
        """Copy a browser upload into data/uploads/ under a safe, unique name."""
        src = Path(temp_file)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name).lstrip(".") or "upload"
        folder = self.uploads / subfolder if subfolder else self.uploads
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / name
        if dest.exists():
            dest = folder / f"{dest.stem}-{time.strftime('%Y%m%d-%H%M%S')}{dest.suffix}"
        shutil.copyfile(src, dest)
        return dest

    def fresh_run_dir(self, preferred: str) -> str:
        """``preferred`` if it holds no run yet, else the first free ``<name>-N`` beside it."""
        p = Path(preferred)
        p = p if p.is_absolute() else self.root / p
        if not (p / "checkpoints").exists() and not (p / "adapter").exists():
            return preferred
        for n in range(2, 10_000):
            candidate = p.with_name(f"{p.name}-{n}")
            if not candidate.exists():
                return self.display(candidate)
        return preferred


def safe_name(text: str, default: str = "preset") -> str:
    """A file name from user text: letters, digits, - and _ only."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip()).strip("-")[:60]
    return name or default
