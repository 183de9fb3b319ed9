"""Experiment tracking: TensorBoard/W&B callbacks, a loss-curve PNG per run, and run comparison.

TensorBoard event files go to ``<run>/tensorboard/`` whenever tensorboard is installed.
Weights & Biases is added when the ``wandb`` package is installed and asked for with
``FINETUNE_GUI_REPORT_TO=wandb`` (or ``tensorboard,wandb``; ``none`` turns tracking off).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from . import runs
from .config import RunConfig
from .errors import FinetuneError
from .messages import Message

REPORT_ENV = "FINETUNE_GUI_REPORT_TO"
TENSORBOARD_DIR = "tensorboard"
LOSS_PNG = "loss.png"
# Keys that differ between any two runs by construction; left out of the config diff.
DIFF_IGNORED = ("train.output_dir",)


def report_targets() -> list[str]:
    """Trackers to use: tensorboard by default, wandb only when asked for and installed."""
    wanted = os.environ.get(REPORT_ENV, "tensorboard")
    names = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    if "none" in names:
        return []
    found = []
    for name in names:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
        if module and importlib.util.find_spec(module) is not None and name not in found:
            found.append(name)
    return found


def tracking_callbacks(run_dir: str | Path) -> list:
    """Trainer callbacks that write TensorBoard events into ``<run>/tensorboard`` (and W&B)."""
    callbacks = []
    targets = report_targets()
    if "tensorboard" in targets:
        from transformers.integrations import TensorBoardCallback
        try:
            tb = TensorBoardCallback()
        except RuntimeError:  # neither torch.utils.tensorboard nor tensorboardX importable
            tb = None
        if tb is not None:
            tb.logging_dir = str(Path(run_dir) / TENSORBOARD_DIR)
            callbacks.append(tb)
    if "wandb" in targets:
        from transformers.integrations import WandbCallback
        callbacks.append(WandbCallback())
    return callbacks


# ---- curves and plots ----------------------------------------------------------------------------

def _run_root(path: str | Path) -> Path:
    p = Path(path)
    if p.name == runs.ADAPTER and (p.parent / runs.RUN_CONFIG).is_file():
        p = p.parent
    if not (p / runs.RUN_CONFIG).is_file():
        raise FinetuneError(Message("run.not_a_run", path=p, config=runs.RUN_CONFIG))
    return p


def run_curves(run_dir: str | Path) -> dict:
    """``{"loss": [(step, value)], "eval_loss": [...]}`` from a run's metrics.jsonl."""
    records = runs.read_metrics(runs.RunPaths(Path(run_dir)))
    return {key: [(int(r["step"]), float(r[key])) for r in records if key in r]
            for key in ("loss", "eval_loss")}


def loss_figure(curves: dict[str, dict], title: str = "Loss",
                words: tuple[str, str, str] = ("step", "loss", "eval")):
    """A matplotlib Figure with each run's loss (solid) and eval loss (dashed) overlaid;
    ``words`` (x axis, y axis and train series, eval series) let the UI name them in its
    language."""
    step_word, loss_word, eval_word = words
    from matplotlib.figure import Figure  # no pyplot: safe outside the main thread
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for i, (label, curve) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if curve.get("loss"):
            steps, values = zip(*curve["loss"])
            ax.plot(steps, values, color=color, label=f"{label} {loss_word}")
        if curve.get("eval_loss"):
            steps, values = zip(*curve["eval_loss"])
            ax.plot(steps, values, color=color, linestyle="--", marker="o", markersize=3,
                    label=f"{label} {eval_word}")
    ax.set_xlabel(step_word)
    ax.set_ylabel(loss_word)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_loss_plot(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Write ``<run>/loss.png``; returns its path, or None when no loss was logged."""
    root = Path(run_dir)
    curve = run_curves(root)
    if not curve["loss"] and not curve["eval_loss"]:
        return None
    target = Path(path) if path else root / LOSS_PNG
    fig = loss_figure({root.name: curve}, title=f"Loss · {root.name}")
    tmp = target.with_name(f".{target.name}.partial.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, target)
    return target


# ---- comparing runs ---------------------------------------------------------------------------

def _labels(roots: list[Path]) -> list[str]:
    names = [r.name for r in roots]
    if len(set(names)) == len(names):
        return names
    return [str(r) for r in roots]


def compare_runs(run_dirs: list[str | Path]) -> dict:
    """Settings that differ between runs, and their loss curves, for a side-by-side view.

    Returns ``{"runs": [label], "paths": [str], "status": {label: str},
    "config_diff": {"section.key": [value per run]}, "curves": {label: {"loss": [(step, v)],
    "eval_loss": [...]}}}``. ``train.output_dir`` is left out of the diff.
    """
    roots = [_run_root(p) for p in run_dirs]
    labels = _labels(roots)
    flats = [RunConfig.load(r / runs.RUN_CONFIG).flat() for r in roots]
    diff = {}
    for key in flats[0] if flats else []:
        if key in DIFF_IGNORED:
            continue
        values = [f[key] for f in flats]
        if any(v != values[0] for v in values[1:]):
            diff[key] = values
    return {
        "runs": labels,
        "paths": [str(r) for r in roots],
        "status": {label: runs.read_state(runs.RunPaths(r)).get("status", "unknown")
                   for label, r in zip(labels, roots)},
        "config_diff": diff,
        "curves": {label: run_curves(r) for label, r in zip(labels, roots)},
    }


def compare_figure(run_dirs: list[str | Path]):
    """The overlaid loss curves of several runs as a matplotlib Figure."""
    result = compare_runs(run_dirs)
    return loss_figure(result["curves"], title="Loss by run")
