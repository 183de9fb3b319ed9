"""The run folder: where a run's config, metrics, checkpoints and adapter live.

Layout::

    <output_dir>/run.yaml        the config the run used (run.N.yaml: before a resume changed it)
    <output_dir>/state.json      status, step, total, message (rewritten atomically)
    <output_dir>/metrics.jsonl   one JSON object per logged step
    <output_dir>/plan.json       the execution plan training followed (device, dtypes, speed-ups)
    <output_dir>/checkpoints/    resumable Trainer checkpoints
    <output_dir>/adapter/        the final adapter (PEFT files + tokenizer + run.yaml)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, atomic_write_text
from .errors import FinetuneError
from .messages import Message

RUN_CONFIG = "run.yaml"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
PLAN_FILE = "plan.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint.

        The Trainer writes ``trainer_state.json`` last and not atomically, so a checkpoint
        counts only once that file is there and parses: a process killed (or a disk that
        filled up) in the middle of a save leaves a folder that is never picked.
        """
        found = []
        for path in self.checkpoints.glob("checkpoint-*"):
            match = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if match and _complete(path):
                found.append((int(match.group(1)), path))
        return max(found)[1] if found else None


def _complete(checkpoint: Path) -> bool:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict)


def write_state(paths: RunPaths, **fields) -> None:
    atomic_write_text(paths.state, json.dumps(fields, indent=1))


def write_plan(paths: RunPaths, plan: dict) -> None:
    atomic_write_text(paths.root / PLAN_FILE, json.dumps(plan, indent=1))


def remove_write_leftovers(paths: RunPaths) -> list[str]:
    """Remove the temporary files of atomic writes that a killed process left behind.

    Called when a run resumes: a run has one writer, so the process that made these is gone.
    Only names ``atomic_write_text`` makes for this folder's own files are touched.
    """
    own = "|".join(re.escape(name) for name in (STATE_FILE, RUN_CONFIG, PLAN_FILE, METRICS_FILE))
    removed = []
    for path in paths.root.glob(".*"):
        if path.is_file() and re.fullmatch(rf"\.({own})\.[a-z0-9_]{{8}}", path.name):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def read_state(paths: RunPaths) -> dict:
    try:
        return json.loads(paths.state.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def append_metrics(paths: RunPaths, record: dict) -> None:
    with open(paths.metrics, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def read_metrics(paths: RunPaths) -> list[dict]:
    """Metric records; a half-written last line (a crash mid-write) is skipped."""
    if not paths.metrics.exists():
        return []
    records = []
    for line in paths.metrics.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(paths: RunPaths, after_step: int) -> list[dict]:
    """Drop records past ``after_step`` (work lost since the checkpoint) so curves stay continuous."""
    kept = [r for r in read_metrics(paths) if r.get("step", 0) <= after_step]
    atomic_write_text(paths.metrics, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def keep_config_history(paths: RunPaths, config: RunConfig) -> list[str]:
    """Before a resumed run saves ``config``: when it differs from the saved run.yaml, the
    old file is kept as run.N.yaml and the changes are returned ('train.learning_rate:
    0.001 → 0.5'), so a resume never rewrites what the earlier steps were trained with."""
    if not paths.config.is_file():
        return []
    try:
        before = RunConfig.load(paths.config).flat()
    except FinetuneError:
        before = {}
    after = config.flat()
    changes = [f"{key}: {_short(before.get(key))} → {_short(value)}"
               for key, value in after.items() if before.get(key) != value]
    if changes:
        n = 1
        while (paths.root / f"run.{n}.yaml").exists():
            n += 1
        paths.config.replace(paths.root / f"run.{n}.yaml")
    return changes


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def find_run(path: str | Path) -> tuple[RunPaths, RunConfig]:
    """Accept a run folder or its adapter folder; return the paths and the run's config."""
    p = Path(path)
    for root in (p, p.parent):
        for cfg_file in (root / RUN_CONFIG, root / ADAPTER / RUN_CONFIG):
            if cfg_file.is_file() and (root / ADAPTER).is_dir():
                return RunPaths(root), RunConfig.load(cfg_file)
    if not p.exists():
        raise FinetuneError(Message("run.not_found", path=p))
    raise FinetuneError(Message("run.not_finished", path=p))


def list_runs(parent: str | Path = "runs") -> list[Path]:
    """Run folders under ``parent`` that hold an adapter, newest first."""
    base = Path(parent)
    if not base.is_dir():
        return []
    runs = [p for p in base.iterdir() if (p / ADAPTER / "adapter_config.json").exists()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)
