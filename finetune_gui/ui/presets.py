"""Presets: sparse YAML files over the defaults, shipped in presets/ or saved by the user."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import yaml

from ..config import SECTIONS, RunConfig, atomic_write_text
from .workspace import Workspace, safe_name


def list_presets(ws: Workspace) -> list[tuple[str, str]]:
    """(label, path) of the shipped presets, then the user's own (presets/user/)."""
    found = []
    for folder, tag in ((ws.presets, ""), (ws.user_presets, "user/")):
        for path in sorted(folder.glob("*.yaml")):
            found.append((f"{tag}{path.stem}", ws.display(path)))
    return found


def sparse_dict(config: RunConfig) -> dict:
    """Only the settings that differ from the defaults, by section."""
    base = RunConfig()
    out: dict = {}
    for section in SECTIONS:
        mine, theirs = getattr(config, section), getattr(base, section)
        changed = {f.name: getattr(mine, f.name) for f in dataclasses.fields(mine)
                   if getattr(mine, f.name) != getattr(theirs, f.name)}
        if changed:
            out[section] = changed
    return out


def preset_path(ws: Workspace, name: str) -> Path:
    """Where a preset saved under ``name`` goes: presets/user/<safe name>.yaml."""
    return ws.user_presets / f"{safe_name(name)}.yaml"


def save_preset(ws: Workspace, config: RunConfig, name: str, *, replace: bool = False) -> Path:
    """Write ``presets/user/<name>.yaml`` atomically; returns its path. An existing file is
    replaced only with ``replace``, and then kept first as ``<name>.yaml.bak``."""
    path = preset_path(ws, name)
    if path.exists():
        if not replace:
            raise FileExistsError(path)
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    text = "# Saved from the finetune_gui app; settings not listed keep their defaults.\n"
    text += yaml.safe_dump(sparse_dict(config), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    return path


def load_preset(ws: Workspace, path: str) -> RunConfig:
    return RunConfig.load(ws.check(path, "preset"))
