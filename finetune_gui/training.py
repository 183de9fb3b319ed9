"""Training: a recipe (setup / train / save / cleanup) run by a job in a background thread.

``TrainingJob`` owns one run. It exposes a ``JobState`` snapshot that the CLI and UI poll;
``stop()`` sets an event that a Trainer callback turns into "save a checkpoint and stop".
Only one job trains at a time in a process (the hardware is shared); a second ``start``
is refused with ``JobBusyError``.
"""

from __future__ import annotations

import copy
import gc
import os
import threading
import time
import traceback
from functools import partial
from pathlib import Path

import psutil
import torch
from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

from . import models, runs, speedups
from .config import RunConfig
from .data import write_examples
from .data_stream import load_split
from .errors import FinetuneError
from .messages import Message, reason_of
from .evaluation.runner import HELDOUT_FILE
from .batching import PackingCollator, PadCollator, token_count
from .faults import (check_sequence_length, is_disk_full, is_out_of_memory,
                     out_of_memory_message, weights_finite)
from .hardware import BACKGROUND_NICENESS, lower_thread_priority
from .job_progress import JobState, ProgressCallback
from .lora import adopt_init_adapter, attach_lora, load_adapter_weights, trainable_counts
from .plan import ExecutionPlan, resolve_plan
from .preference import examples_for_method
from .preference_trainer import build_preference_trainer
from .speedups import frozen_bottom
from .templates import TemplateSpec
from .trainer import ResponseOnlyTrainer, best_checkpoint, training_arguments
from .training_data import TrainingData

_ACTIVE = threading.Lock()


def is_main_process() -> bool:
    """Under ``accelerate launch``/torchrun only global rank 0 writes the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


class JobBusyError(FinetuneError):
    """Another training job is already running in this process."""


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
        self._config_changes: list[str] = []   # what a resume changed, noted in the metrics
        self._preference_rows: tuple[list[dict], list[dict]] = ([], [])  # dpo/orpo/kto rows
        self.plan: ExecutionPlan | None = None  # resolved when the run starts

    # ---- public API ----------------------------------------------------------------------
    @property
    def state(self) -> JobState:
        with self._lock:
            return copy.deepcopy(self._state)

    def start(self) -> None:
        """Train in a background thread; raises ``JobBusyError`` if a job is running."""
        if not _ACTIVE.acquire(blocking=False):
            raise JobBusyError(Message("train.busy"))
        self._update(status="loading", phase="starting")
        self._thread = threading.Thread(target=self._run_in_background, name="training-job",
                                        daemon=True)
        self._thread.start()

    def run(self) -> JobState:
        """Train in this thread (the CLI's way); returns the final state."""
        if not _ACTIVE.acquire(blocking=False):
            raise JobBusyError(Message("train.busy"))
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
        self._run_locked(background=True)

    def _run_locked(self, background: bool = False) -> None:
        try:
            self._t0 = time.time()
            self.plan = resolve_plan(self.config)
            self._pin_device(background)
            self._recipe()
        except FinetuneError as exc:
            self._fail(reason_of(exc))
        except (torch.OutOfMemoryError, MemoryError) as exc:
            self._fail(out_of_memory_message(exc))
        except Exception as exc:  # the thread must never die silently: report anything
            if is_out_of_memory(exc):
                self._fail(out_of_memory_message(exc))
            elif is_disk_full(exc):
                self._fail(self._disk_full_message(), exc)
            elif isinstance(exc, RuntimeError):
                self._fail(Message("train.failed", why=str(exc).splitlines()[0][:300]), exc)
            else:
                self._fail(Message("train.failed", why=f"{type(exc).__name__}: {str(exc)[:300]}"),
                           exc)
        finally:
            self._cleanup()
            _ACTIVE.release()

    def _recipe(self) -> None:
        """setup / train / save; the trainer (and the model it holds) is gone on return, so
        cleanup really frees the memory."""
        trainer = self.setup()
        self._train(trainer)
        self._save(trainer)

    def _pin_device(self, background: bool) -> None:
        """Run in this thread: the CUDA device of this process (its LOCAL_RANK under
        ``accelerate launch``) is per thread in torch, so it is set where training runs; a
        CPU job in the app yields the cores to the page and chat."""
        if self.plan.device == "cuda":
            torch.cuda.set_device(self.plan.device_index or 0)
            torch.cuda.reset_peak_memory_stats()
        elif background and lower_thread_priority():  # before torch starts its worker pool
            self._log(f"background job: CPU priority lowered (nice +{BACKGROUND_NICENESS}) "
                      "so the app stays responsive")

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
            extra = {} if s.best_step is None else {"best_step": s.best_step,
                                                    "best_eval_loss": s.best_eval_loss}
            runs.write_state(self.paths, status=s.status, step=s.step, total_steps=s.total_steps,
                             message=s.message, updated=time.time(), **extra)
        except OSError as exc:  # e.g. the disk is full: the job's own state still says why
            self._log(f"could not write {runs.STATE_FILE}: {exc}"[:300])

    def _disk_full_message(self) -> Message:
        last = self.paths.latest_checkpoint()
        if last:
            return Message("train.disk_full_kept", path=self.paths.root, checkpoint=last.name)
        return Message("train.disk_full", path=self.paths.root)

    def setup(self):
        """Load data and model, attach LoRA, build the Trainer (the recipe's first step;
        public so that a test can inspect what would train)."""
        cfg = self.config
        spec = TemplateSpec.from_data_config(cfg.data)
        self._update(phase="reading data")
        method = cfg.train.method
        split = load_split(cfg.data, seed=cfg.train.seed, method=method, progress=lambda
                           done, size: self._update(phase=f"reading data ({done / size:.0%})"))
        if isinstance(split.train, list):  # streamed rows are plain instruction rows
            split.train = examples_for_method(split.train, method, cfg.data.path, self._log)
        if not split.train:
            raise FinetuneError(Message("data.no_usable_rows", path=cfg.data.path))
        init_adapter = adopt_init_adapter(cfg)
        if init_adapter is not None:
            self._log(f"starting from the adapter of {cfg.train.init_adapter} (its LoRA "
                      f"settings: r {cfg.lora.r}, alpha {cfg.lora.alpha:g})")
        for warning in split.report.warnings[:20]:
            self._log(f"warning: {warning}")
        if cfg.train.early_stopping_patience and not split.validation:
            raise FinetuneError(Message("train.patience_no_split"))
        resume_from = None
        if self.resume:
            resume_from = self.paths.latest_checkpoint()
            if resume_from is None:
                raise FinetuneError(Message("train.no_checkpoint", path=self.paths.root))
        elif self.paths.latest_checkpoint() is not None:
            raise FinetuneError(Message("train.run_exists", path=self.paths.root))
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            if resume_from:
                for name in runs.remove_write_leftovers(self.paths):
                    self._log(f"removed {name}, left by a write the last process did not finish")
            self._config_changes = (runs.keep_config_history(self.paths, cfg)
                                    if resume_from else [])
            cfg.save(self.paths.config)
            self._save_split(split.validation)
        self._resume_from = resume_from

        self._update(phase="loading model")
        plan = self.plan = self.plan or resolve_plan(cfg)
        self._log(f"loading {cfg.model.name_or_path} ({cfg.model.quantization})")
        self._log(f"plan: {plan.summary()}")
        for note in plan.notes:
            self._log(f"plan: {note}")
        if is_main_process():
            runs.write_plan(self.paths, plan.to_dict())
        if plan.device == "cuda":
            moved, kept = models.release_gpu_models()
            if moved or kept:
                self._log(f"moved {moved} model(s) shown on the Model/Chat tabs to the CPU to "
                          f"free the GPU" + (f"; {kept} quantised one(s) could not move" if kept
                                             else ""))
        model, tokenizer = models.load_model(cfg.model, for_training=True, plan=plan)
        check_sequence_length(cfg.train.max_seq_len, model.config)
        spec.check(tokenizer)
        self._update(phase="tokenising")
        data = TrainingData(cfg, log=self._log, phase=lambda name: self._update(phase=name),
                            run_root=self.paths.root, writes=is_main_process())
        if method != "sft":
            self._preference_rows = data.preference(split, spec, tokenizer)
            train_ds, eval_ds, truncated, dropped = None, None, 0, 0
        else:
            train_ds, eval_ds, truncated, dropped = data.sft(split, spec, model, tokenizer)

        speedups.before_lora(model, plan, self._log)
        set_seed(cfg.train.seed)  # the LoRA init draws from the global generator: same run, same start
        model = attach_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing)
        if init_adapter is not None:
            load_adapter_weights(model, init_adapter)
        self._speedups = speedups.after_lora(model, plan, self._log)
        trainable, total = trainable_counts(model)
        self._log(f"trainable parameters: {trainable:,} of {total:,}")
        examples = len(train_ds) if train_ds is not None else len(self._preference_rows[0])
        self._update(trainable_params=trainable, total_params=total, examples=examples,
                     truncated=truncated, dropped=dropped)
        self._tokenizer = tokenizer
        return self._build_trainer(model, tokenizer, train_ds, eval_ds, plan)

    def _save_split(self, validation) -> None:
        """The held-out rows, saved so that Evaluate asks exactly the rows not trained on."""
        heldout = self.paths.root / HELDOUT_FILE
        if validation:
            write_examples(heldout, validation)
            self._log(f"{len(validation)} rows held out for evaluation ({HELDOUT_FILE})")
        else:
            heldout.unlink(missing_ok=True)

    def _build_trainer(self, model, tokenizer, train_ds, eval_ds, plan: ExecutionPlan):
        preference = self.config.train.method != "sft"
        has_eval = bool(self._preference_rows[1]) if preference else eval_ds is not None
        make_args = partial(training_arguments, self.config, self.paths.checkpoints, plan,
                            has_eval=has_eval)
        args = make_args()
        progress = ProgressCallback(self._state, self._lock, self._stop, self.paths,
                                    started=self._t0, write_metrics=is_main_process())
        progress.on_record = self._write_state  # state.json follows the steps
        self._progress = progress
        callbacks = [progress, *self._tracking_callbacks()]
        if args.load_best_model_at_end:
            patience = self.config.train.early_stopping_patience
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
            self._log(f"early stopping: after {patience} evaluations without a lower eval "
                      "loss; the best adapter is kept")
        if preference:
            self._update(phase="reference log-probabilities")
            trainer = build_preference_trainer(
                self.config.train.method, self.config, model, tokenizer,
                *self._preference_rows, make_args, callbacks,
                from_adapter=bool(self.config.train.init_adapter))
        else:
            trainer = ResponseOnlyTrainer(
                model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                data_collator=(PackingCollator() if self.config.train.packing
                               else PadCollator(tokenizer.pad_token_id)),
                processing_class=tokenizer,
                callbacks=callbacks, answer_head="answer_head" in self._speedups,
                cpu_kernels="cpu_kernels" in self._speedups,
                shared_prefix="shared_prefix" in self._speedups,
                frozen_bottom=self._frozen_bottom(model, plan, train_ds, eval_ds))
        trainer.remove_callback(PrinterCallback)  # the job reports progress itself
        return trainer

    def _frozen_bottom(self, model, plan: ExecutionPlan, *datasets):
        """The per-row store of the frozen lower layers' outputs, if the plan has it and the
        data's records fit in its share of the RAM free now."""
        if not plan.uses("frozen_bottom"):
            return None
        tokens = sum(token_count(ds) for ds in datasets if ds is not None)
        budget = frozen_bottom.store_budget(psutil.virtual_memory().available)
        return frozen_bottom.attach(model.get_base_model(), budget, self._log, tokens=tokens)

    def _train(self, trainer) -> None:
        if self._resume_from is not None:
            step = int(self._resume_from.name.split("-")[1])
            kept = (runs.truncate_metrics(self.paths, step) if is_main_process() else
                    [r for r in runs.read_metrics(self.paths) if r.get("step", 0) <= step])
            self._update(loss=[(r["step"], r["loss"]) for r in kept if "loss" in r],
                         eval_loss=[(r["step"], r["eval_loss"]) for r in kept if "eval_loss" in r],
                         step=step)
            self._progress.time_offset = max((r.get("time", 0.0) for r in kept), default=0.0)
            self._log(f"resuming from {self._resume_from.name}")
            changes = self._config_changes
            if changes and is_main_process():
                note = "resumed with changed settings (earlier ones kept in run.N.yaml): " + \
                    "; ".join(changes)
                runs.append_metrics(self.paths, {"step": step, "note": note})
                self._log(note[:1000])
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
            raise FinetuneError(Message("train.not_finite", step=state.step))
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
        best = best_checkpoint(trainer)
        if best is not None:
            early = not stopped and state.step < state.total_steps
            message += (f"{'; stopped early (eval loss stopped improving)' if early else ''}; "
                        f"kept the adapter of step {best[0]} (best eval loss {best[1]:.4f})")
            self._update(best_step=best[0], best_eval_loss=best[1])
        self._log(message + f"; adapter saved to {self.paths.adapter}")
        self._update(status=status, phase="", message=message)
        self._write_state()

    # experiment tracking (finetune_gui.tracking) -------------------------------------
    def _tracking_callbacks(self) -> list:
        """TensorBoard events in <run>/tensorboard (W&B when FINETUNE_GUI_REPORT_TO asks)."""
        from .tracking import tracking_callbacks
        return tracking_callbacks(self.paths.root)

    def _save_loss_plot(self) -> None:
        try:
            from .tracking import save_loss_plot
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
