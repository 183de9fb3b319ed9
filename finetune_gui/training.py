"""Training: a recipe (setup / train / save / cleanup) run by a job in a background thread.

``TrainingJob`` owns one run. It exposes a ``JobState`` snapshot that the CLI and UI poll;
``stop()`` sets an event that a Trainer callback turns into "save a checkpoint and stop".
Only one job trains at a time in a process (the hardware is shared); a second ``start``
is refused with ``JobBusyError``.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainerCallback, TrainingArguments

from . import cpu_kernels, models, runs
from .config import RunConfig
from .data import load_examples
from .errors import FinetuneError
from .batching import PadCollator, prepare_cpu_bf16, resolve_precision, tokenize_examples
from .faults import (check_sequence_length, is_disk_full, is_out_of_memory,
                     out_of_memory_message, weights_finite)
from .fast_lora import enable_fused_lora
from .hardware import BACKGROUND_NICENESS, lower_thread_priority, process_memory
from .lora import attach_lora, is_quantized, trainable_counts, use_fast_dropout
from .templates import TemplateSpec
from .trainer import ResponseOnlyTrainer

_ACTIVE = threading.Lock()


def is_main_process() -> bool:
    """Under ``accelerate launch``/torchrun only global rank 0 writes the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


class JobBusyError(FinetuneError):
    """Another training job is already running in this process."""


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

    @property
    def active(self) -> bool:
        return self.status in ("loading", "running", "stopping")


class TrainingJob:
    def __init__(self, config: RunConfig, *, resume: bool = False):
        self.config = config.copy()
        self.resume = resume
        self.paths = runs.RunPaths(Path(self.config.train.output_dir))
        self._state = JobState(output_dir=str(self.paths.root))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    # ---- public API ----------------------------------------------------------------------
    @property
    def state(self) -> JobState:
        with self._lock:
            return copy.deepcopy(self._state)

    def start(self) -> None:
        """Train in a background thread; raises ``JobBusyError`` if a job is running."""
        if not _ACTIVE.acquire(blocking=False):
            raise JobBusyError("a training job is already running: stop it or wait for it")
        self._update(status="loading", phase="starting")
        self._thread = threading.Thread(target=self._run_in_background, name="training-job",
                                        daemon=True)
        self._thread.start()

    def run(self) -> JobState:
        """Train in this thread (the CLI's way); returns the final state."""
        if not _ACTIVE.acquire(blocking=False):
            raise JobBusyError("a training job is already running: stop it or wait for it")
        self._update(status="loading", phase="starting")
        self._run_locked()
        return self.state

    def stop(self) -> None:
        """Ask the job to save a checkpoint at the end of the current step and stop."""
        self._stop.set()
        with self._lock:
            if self._state.active:
                self._state.status = "stopping"

    def wait(self, timeout: float | None = None) -> JobState:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    # ---- internals -----------------------------------------------------------------------
    def _update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _log(self, text: str) -> None:
        with self._lock:
            self._state.log.append(f"[{time.strftime('%H:%M:%S')}] {text}")
            del self._state.log[:-500]

    def _run_in_background(self) -> None:
        if lower_thread_priority():  # before torch starts this thread's worker pool
            self._log(f"background job: CPU priority lowered (nice +{BACKGROUND_NICENESS}) "
                      "so the app stays responsive")
        self._run_locked()

    def _run_locked(self) -> None:
        try:
            self._t0 = time.time()
            trainer = self._setup()
            self._train(trainer)
            self._save(trainer)
        except FinetuneError as exc:
            self._fail(str(exc))
        except (torch.OutOfMemoryError, MemoryError) as exc:
            self._fail(out_of_memory_message(exc))
        except Exception as exc:  # the thread must never die silently: report anything
            if is_out_of_memory(exc):
                self._fail(out_of_memory_message(exc))
            elif is_disk_full(exc):
                self._fail(self._disk_full_message(), exc)
            elif isinstance(exc, RuntimeError):
                self._fail(f"training failed: {str(exc).splitlines()[0][:300]}", exc)
            else:
                self._fail(f"training failed: {type(exc).__name__}: {str(exc)[:300]}", exc)
        finally:
            self._cleanup()
            _ACTIVE.release()

    def _fail(self, message: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            self._log("".join(traceback.format_exception(exc))[-2000:])
        self._log(message)
        self._update(status="failed", message=message, phase="")
        self._write_state()

    def _write_state(self) -> None:
        s = self.state
        if not self.paths.root.exists() or not is_main_process():
            return
        try:
            runs.write_state(self.paths, status=s.status, step=s.step, total_steps=s.total_steps,
                             message=s.message, updated=time.time())
        except OSError as exc:  # e.g. the disk is full: the job's own state still says why
            self._log(f"could not write {runs.STATE_FILE}: {exc}"[:300])

    def _disk_full_message(self) -> str:
        last = self.paths.latest_checkpoint()
        kept = (f"the last complete checkpoint ({last.name}) is intact: free some space, then "
                "resume" if last else "no checkpoint was completed")
        return (f"disk full while writing to {self.paths.root}: {kept} (or choose a "
                "train.output_dir on a disk with more room)")

    def _setup(self):
        """Load data and model, attach LoRA, build the Trainer."""
        cfg = self.config
        spec = TemplateSpec.from_data_config(cfg.data)
        self._update(phase="reading data")
        split = load_examples(cfg.data, seed=cfg.train.seed)
        if not split.train:
            raise FinetuneError(f"{cfg.data.path}: no usable rows to train on")
        for warning in split.report.warnings[:20]:
            self._log(f"warning: {warning}")
        resume_from = None
        if self.resume:
            resume_from = self.paths.latest_checkpoint()
            if resume_from is None:
                raise FinetuneError(f"{self.paths.root}: no checkpoint to resume from")
        elif self.paths.latest_checkpoint() is not None:
            raise FinetuneError(f"{self.paths.root} already holds a run with checkpoints: "
                                "resume it, or choose another train.output_dir")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            cfg.save(self.paths.config)
        self._resume_from = resume_from

        self._update(phase="loading model")
        self._log(f"loading {cfg.model.name_or_path} ({cfg.model.quantization})")
        model, tokenizer = models.load_model(cfg.model, for_training=True)
        check_sequence_length(cfg.train.max_seq_len, model.config)
        spec.check(tokenizer)
        self._update(phase="tokenising")
        train_ds, truncated, dropped = tokenize_examples(
            split.train, spec, tokenizer, cfg.train.max_seq_len)
        if len(train_ds) == 0:
            raise FinetuneError(f"every example is longer than train.max_seq_len="
                                f"{cfg.train.max_seq_len} before its answer starts: raise it")
        eval_ds = None
        if split.validation:
            eval_ds, _, _ = tokenize_examples(split.validation, spec, tokenizer,
                                              cfg.train.max_seq_len)
        if truncated:
            self._log(f"{truncated} examples were longer than max_seq_len and were cut")
        if dropped:
            self._log(f"{dropped} examples dropped: their answer starts after max_seq_len")

        device = "cuda" if next(model.parameters()).is_cuda else "cpu"
        if device == "cpu" and resolve_precision(cfg, device) == "bf16" and not is_quantized(model):
            prepare_cpu_bf16(model)
        model = attach_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing)
        use_fast_dropout(model)
        if cfg.train.fused_lora:
            self._log(f"fused LoRA training step on {enable_fused_lora(model)} layers")
        self._cpu_kernels = device == "cpu" and cfg.train.cpu_kernels
        if self._cpu_kernels:
            self._log(self._enable_cpu_kernels(model))
        trainable, total = trainable_counts(model)
        self._log(f"trainable parameters: {trainable:,} of {total:,}")
        self._update(trainable_params=trainable, total_params=total, examples=len(train_ds),
                     truncated=truncated, dropped=dropped)
        self._tokenizer = tokenizer
        return self._build_trainer(model, tokenizer, train_ds, eval_ds, device)

    def _enable_cpu_kernels(self, model) -> str:
        if not cpu_kernels.is_built():
            self._log("building the fused CPU kernels (once per machine, about 30 s)")
        counts = cpu_kernels.enable_cpu_kernels(model)
        if not counts:
            self._cpu_kernels = False
            return f"fused CPU kernels unavailable: {cpu_kernels.why_unavailable()}"
        return (f"fused CPU kernels: loss, {counts['rms_norm']} RMSNorm, "
                f"{counts['swiglu']} SwiGLU and {counts['attention']} attention modules, "
                f"dropout masks of {counts['lora_dropout']} LoRA layers")

    def _build_trainer(self, model, tokenizer, train_ds, eval_ds, device: str):
        cfg = self.config.train
        precision = resolve_precision(self.config, device)
        if is_quantized(model) and precision == "fp16":
            precision = "fp32" if device == "cpu" else precision
        eval_strategy = "no" if eval_ds is None else ("steps" if cfg.eval_steps else "epoch")
        args = TrainingArguments(
            output_dir=str(self.paths.checkpoints), num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, optim=self.config.resolved_optimizer(device),
            bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
            logging_steps=cfg.logging_steps, eval_strategy=eval_strategy,
            eval_steps=cfg.eval_steps or None, save_strategy="steps", save_steps=cfg.save_steps,
            save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
            report_to=[], disable_tqdm=True, remove_unused_columns=False,
            include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            gradient_checkpointing=False,  # set up by attach_lora, non-reentrant
            label_names=["labels"], save_only_model=False, prediction_loss_only=True,
            # Log a NaN/inf loss as it is (the default averages it away), so the guard sees it.
            logging_nan_inf_filter=False)
        optim = getattr(args.optim, 'value', args.optim)
        self._log(f"device {device}, precision {precision}, optimizer {optim}")
        trainer = ResponseOnlyTrainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
            data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer,
            callbacks=[_JobCallback(self), *self._tracking_callbacks()],
            cpu_kernels=self._cpu_kernels)
        trainer.remove_callback(PrinterCallback)  # the job reports progress itself
        return trainer

    def _train(self, trainer) -> None:
        if self._resume_from is not None:
            step = int(self._resume_from.name.split("-")[1])
            kept = (runs.truncate_metrics(self.paths, step) if is_main_process() else
                    [r for r in runs.read_metrics(self.paths) if r.get("step", 0) <= step])
            self._update(loss=[(r["step"], r["loss"]) for r in kept if "loss" in r],
                         eval_loss=[(r["step"], r["eval_loss"]) for r in kept if "eval_loss" in r],
                         step=step)
            self._log(f"resuming from {self._resume_from.name}")
        elif self.paths.metrics.exists() and is_main_process():
            self.paths.metrics.unlink()
        self._update(status="running", phase="training")
        self._write_state()
        started = time.time()
        trainer.train(resume_from_checkpoint=str(self._resume_from) if self._resume_from else None)
        self._update(train_seconds=time.time() - started)

    def _save(self, trainer) -> None:
        state = self.state
        if state.status == "failed":
            return
        sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled  # ranks must agree
        if not sharded and not weights_finite(trainer.model):
            raise FinetuneError(f"the LoRA weights became NaN/inf by step {state.step}: the "
                                "adapter was not saved, last good checkpoint kept. Lower "
                                "train.learning_rate or use precision fp32")
        self._update(phase="saving adapter")
        if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            # Sharded weights: every rank joins the gather, the Trainer writes from rank 0.
            if trainer.is_fsdp_enabled:
                trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
            trainer.save_model(str(self.paths.adapter))
        elif is_main_process():
            trainer.model.save_pretrained(self.paths.adapter)
        if is_main_process():
            self._tokenizer.save_pretrained(self.paths.adapter)
            self.config.save(self.paths.adapter / runs.RUN_CONFIG)
            self._save_loss_plot()
        stopped = self._stop.is_set() and state.step < state.total_steps
        status = "stopped" if stopped else "finished"
        message = (f"stopped at step {state.step}/{state.total_steps}; resume to continue"
                   if stopped else f"finished {state.step} steps in {state.elapsed_seconds:.0f}s")
        self._log(message + f"; adapter saved to {self.paths.adapter}")
        self._update(status=status, phase="", message=message)
        self._write_state()

    # experiment tracking (finetune_gui.export.tracking) -------------------------------------
    def _tracking_callbacks(self) -> list:
        """TensorBoard events in <run>/tensorboard (W&B when FINETUNE_GUI_REPORT_TO asks)."""
        from .export.tracking import tracking_callbacks
        return tracking_callbacks(self.paths.root)

    def _save_loss_plot(self) -> None:
        try:
            from .export.tracking import save_loss_plot
            path = save_loss_plot(self.paths.root)
        except Exception as exc:  # a plot must never fail a run that trained fine
            self._log(f"could not draw the loss curve: {type(exc).__name__}: {exc}"[:300])
            return
        if path is not None:
            self._log(f"loss curve saved to {path}")

    def _cleanup(self) -> None:
        self._tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # called by the callback -------------------------------------------------------------
    def _on_log(self, state, logs: dict) -> None:
        now = time.time()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                  "time": round(now - self._t0, 2)}
        with self._lock:
            s = self._state
            s.step, s.total_steps, s.epoch = state.global_step, state.max_steps, state.epoch or 0.0
            s.elapsed_seconds = now - self._t0
            if "loss" in logs:
                s.loss.append((state.global_step, float(logs["loss"])))
                record["loss"] = float(logs["loss"])
            if "eval_loss" in logs:
                s.eval_loss.append((state.global_step, float(logs["eval_loss"])))
                record["eval_loss"] = float(logs["eval_loss"])
            if "learning_rate" in logs:
                s.learning_rate = record["learning_rate"] = float(logs["learning_rate"])
            if state.num_input_tokens_seen:
                s.tokens_seen = int(state.num_input_tokens_seen)
                record["tokens_seen"] = s.tokens_seen
            s.memory = process_memory()
            record.update(s.memory)
        if ("loss" in record or "eval_loss" in record) and is_main_process():
            runs.append_metrics(self.paths, record)

    def _on_step(self, state) -> None:
        now = time.time()
        with self._lock:
            s = self._state
            s.step, s.total_steps = state.global_step, state.max_steps
            s.epoch = state.epoch or 0.0
            s.elapsed_seconds = now - self._t0
            if not hasattr(self, "_rate_start"):
                self._rate_start = (now, state.global_step, state.num_input_tokens_seen)
            t0, step0, tok0 = self._rate_start
            if now > t0 and state.global_step > step0:
                s.tokens_per_second = (state.num_input_tokens_seen - tok0) / (now - t0)
                per_step = (now - t0) / (state.global_step - step0)
                s.eta_seconds = per_step * max(0, state.max_steps - state.global_step)


class _JobCallback(TrainerCallback):
    """Feeds the job's state and turns a stop request into save-and-stop."""

    def __init__(self, job: TrainingJob):
        self.job = job

    def on_train_begin(self, args, state, control, **kwargs):
        self.job._update(total_steps=state.max_steps, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.job._on_step(state)
        if self.job._stop.is_set():
            control.should_save = True
            control.should_training_stop = True
        model = kwargs.get("model")
        if control.should_save and model is not None and not weights_finite(model):
            # A loss that went NaN between two logged steps: never checkpoint such weights.
            raise FinetuneError(
                f"the LoRA weights became NaN/inf by step {state.global_step}: training "
                "stopped, last good checkpoint kept. Lower train.learning_rate or use "
                "precision fp32")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FinetuneError(
                f"loss became {loss} at step {state.global_step}: training stopped, last "
                "good checkpoint kept. Lower train.learning_rate or use precision fp32")
        self.job._on_log(state, logs)
