"""What a training job reports while it runs: its state snapshot and the Trainer callback
that feeds it (progress, ETA, metrics.jsonl, stop requests, NaN guards).

Kept apart from ``training`` so the recipe (setup / train / save) reads on its own.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable
from dataclasses import dataclass, field

from transformers import TrainerCallback

from . import runs
from .errors import FinetuneError
from .faults import weights_finite
from .hardware import process_memory
from .messages import Message
from .preference_trainer import PREFERENCE_METRICS


@dataclass
class JobState:
    status: str = "idle"  # idle, loading, running, stopping, finished, stopped, failed
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    learning_rate: float = 0.0
    tokens_per_second: float = 0.0
    tokens_seen: int = 0
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    train_seconds: float = 0.0  # time inside the training loop (load and save excluded)
    memory: dict = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    message: str = ""
    log: list[str] = field(default_factory=list)
    output_dir: str = ""
    best_step: int | None = None       # with early stopping: the step whose adapter is kept
    best_eval_loss: float | None = None
    # preference methods: reward accuracy, margin, chosen/rejected log-probs per step
    preference: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ("loading", "running", "stopping")


class ProgressCallback(TrainerCallback):
    """Feeds a job's ``JobState`` (under its lock) and metrics.jsonl, and turns a stop
    request into save-and-stop. Non-finite losses or weights stop the run before a bad
    checkpoint is written."""

    def __init__(self, state: JobState, lock: threading.Lock, stop: threading.Event,
                 paths: runs.RunPaths, *, started: float, write_metrics: bool = True):
        self.state, self.lock, self.stop, self.paths = state, lock, stop, paths
        self.started, self.write_metrics = started, write_metrics
        self.time_offset = 0.0   # a resumed run's clock continues from its last record
        self.on_record: Callable[[], None] | None = None  # e.g. rewrite state.json
        self._rate_start: tuple[float, int, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        with self.lock:
            self.state.total_steps, self.state.step = state.max_steps, state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self._record_step(state)
        if _any_rank(self.stop.is_set()):
            self.stop.set()  # this rank too reports "stopped", not "finished"
            control.should_save = True
            control.should_training_stop = True
        model = kwargs.get("model")
        if control.should_save and model is not None and not weights_finite(model):
            # A loss that went NaN between two logged steps: never checkpoint such weights.
            raise FinetuneError(Message("train.weights_not_finite", step=state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FinetuneError(Message("train.loss_not_finite", loss=loss,
                                        step=state.global_step))
        self._record_log(state, logs)

    def _record_log(self, state, logs: dict) -> None:
        now = time.time()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                  "time": round(self.time_offset + now - self.started, 2)}
        with self.lock:
            s = self.state
            s.step, s.total_steps, s.epoch = state.global_step, state.max_steps, state.epoch or 0.0
            s.elapsed_seconds = now - self.started
            if "loss" in logs:
                s.loss.append((state.global_step, float(logs["loss"])))
                record["loss"] = float(logs["loss"])
            if "eval_loss" in logs:
                s.eval_loss.append((state.global_step, float(logs["eval_loss"])))
                record["eval_loss"] = float(logs["eval_loss"])
            for trl_name, name in PREFERENCE_METRICS.items():
                if trl_name in logs and math.isfinite(logs[trl_name]):
                    value = float(logs[trl_name])
                    s.preference.setdefault(name, []).append((state.global_step, value))
                    record[name] = value
                if f"eval_{trl_name}" in logs and math.isfinite(logs[f"eval_{trl_name}"]):
                    record[f"eval_{name}"] = float(logs[f"eval_{trl_name}"])
            if "learning_rate" in logs:
                s.learning_rate = record["learning_rate"] = float(logs["learning_rate"])
            if state.num_input_tokens_seen:
                s.tokens_seen = int(state.num_input_tokens_seen)
                record["tokens_seen"] = s.tokens_seen
            s.memory = process_memory()
            record.update(s.memory)
        if ("loss" in record or "eval_loss" in record) and self.write_metrics:
            runs.append_metrics(self.paths, record)
            if self.on_record is not None:
                self.on_record()

    def _record_step(self, state) -> None:
        now = time.time()
        with self.lock:
            s = self.state
            s.step, s.total_steps = state.global_step, state.max_steps
            s.epoch = state.epoch or 0.0
            s.elapsed_seconds = now - self.started
            if self._rate_start is None:
                self._rate_start = (now, state.global_step, state.num_input_tokens_seen)
            t0, step0, tok0 = self._rate_start
            if now > t0 and state.global_step > step0:
                s.tokens_per_second = (state.num_input_tokens_seen - tok0) / (now - t0)
                per_step = (now - t0) / (state.global_step - step0)
                s.eta_seconds = per_step * max(0, state.max_steps - state.global_step)


def _any_rank(flag: bool) -> bool:
    """``flag`` or'ed over every process of a distributed run, so that a Stop pressed where
    rank 0 runs makes every rank save and stop after the same step (otherwise the others
    wait for ever in the next collective)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())

