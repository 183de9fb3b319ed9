"""The ``Trainer`` of a run: cross-entropy on answer tokens (plus replay's soft targets),
and the ``TrainingArguments`` an execution plan implies.

The head projection runs either inside the model (the reference path) or, with the
``answer_head`` speed-up, on the trained positions only (``finetune_gui.speedups``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from .config import RunConfig
from .plan import ExecutionPlan
from .speedups.answer_head import hidden_states_out, plain_head
from .speedups.cpu_kernels import head_cross_entropy
from .speedups.shared_prefix import MIN_PREFIX, common_prefix_length, forward_with_shared_prefix
from .templates import IGNORE_INDEX


class ResponseOnlyTrainer(Trainer):
    """Cross-entropy on answer tokens, normalised over the whole accumulated batch."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, answer_head: bool = True, cpu_kernels: bool = False,
                 shared_prefix: bool = False, frozen_bottom=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._cpu_kernels = cpu_kernels  # the fused loss of finetune_gui.speedups.cpu_kernels
        # two forward calls per step: not under DDP, whose reducer expects one
        self._shared_prefix = shared_prefix and self.accelerator.num_processes == 1
        self._bottom = frozen_bottom  # a speedups.frozen_bottom.FrozenBottom, or None
        self.model_accepts_loss_kwargs = True  # so the Trainer counts num_items_in_batch
        self._causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") \
            else self.model
        self._head = plain_head(self._causal_lm) if answer_head else None
        self._flops_per_token = None

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's 6 x tokens x parameters estimate, with the parameter count cached
        (the stock method walks every module at every step)."""
        if self._flops_per_token is None:
            self._flops_per_token = 6 * self.model.num_parameters(exclude_embeddings=True)
        return self._flops_per_token * inputs["input_ids"].numel()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        keep = labels != IGNORE_INDEX
        soft = _soft_positions(inputs)
        hard = keep if soft is None else keep & ~soft
        model_inputs = {k: v for k, v in inputs.items() if k not in _NOT_MODEL_INPUTS}
        if "position_ids" in inputs:  # packed (PackingCollator): positions mark the
            model_inputs.pop("attention_mask", None)  # boundaries; a mask would hide them
        if self._head is not None:
            with hidden_states_out(self._causal_lm) as head:
                hidden = self._outputs(model, model_inputs)[:, :-1]
            # accelerate hands outputs back in fp32; project in the head's own dtype and
            # under the run's autocast, as the model's forward would have
            trained = hidden[hard].to(head.weight.dtype)
            with self.accelerator.autocast():
                loss = head_cross_entropy(trained, head, labels[hard]) \
                    if self._cpu_kernels else None
                if loss is None:
                    loss = F.cross_entropy(head(trained).float(), labels[hard], reduction="sum")
                if soft is not None:
                    loss = loss + soft_cross_entropy(head(hidden[soft].to(head.weight.dtype)),
                                                     inputs, soft)
        else:
            logits = self._outputs(model, model_inputs)[:, :-1]
            loss = F.cross_entropy(logits[hard].float(), labels[hard], reduction="sum")
            if soft is not None:
                loss = loss + soft_cross_entropy(logits[soft], inputs, soft)
        if num_items_in_batch is None:  # evaluation: a plain mean over this batch
            loss = loss / keep.sum().clamp(min=1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss


    def _outputs(self, model, model_inputs: dict) -> torch.Tensor:
        """The model's logits (hidden states under the answer head) for every position."""
        ids, mask = model_inputs["input_ids"], model_inputs.get("attention_mask")
        bottom = self._bottom
        with bottom.batch(ids, mask) if bottom else contextlib.nullcontext():
            if self._shared_prefix and "position_ids" not in model_inputs:
                prefix = common_prefix_length(ids, mask)
                if prefix >= MIN_PREFIX:
                    return forward_with_shared_prefix(model, model_inputs, prefix,
                                                      window=bottom.window if bottom else None)
            return model(**model_inputs).logits


_NOT_MODEL_INPUTS = ("labels", "soft_ids", "soft_logp")


def _soft_positions(inputs) -> torch.Tensor | None:
    """Positions (aligned with the shifted labels) trained towards replay soft targets."""
    soft_ids = inputs.get("soft_ids")
    if soft_ids is None:
        return None
    soft = soft_ids[:, 1:, 0] >= 0
    return soft if bool(soft.any()) else None


def soft_cross_entropy(logits: torch.Tensor, inputs, soft: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the model's next-token distribution against the base's
    top-k distribution (renormalised) at the replay positions: lowest, up to a constant,
    when the tuned model predicts exactly as the base did (a KL term, not a copy of the
    base's greedy answer)."""
    ids = inputs["soft_ids"][:, 1:][soft]
    target = inputs["soft_logp"][:, 1:][soft].float().softmax(dim=-1)
    log_q = torch.log_softmax(logits.float(), dim=-1).gather(1, ids)
    return -(target * log_q).sum()


def training_arguments(config: RunConfig, checkpoints: Path, plan: ExecutionPlan, *,
                       has_eval: bool, args_class=TrainingArguments, **extra
                       ) -> TrainingArguments:
    """The Trainer's settings for a run. With early stopping (and held-out rows) the
    Trainer also keeps the best adapter: that needs a checkpoint at every evaluation (it
    reloads the best one at the end), so saving then follows the evaluations.

    ``args_class`` may be a subclass (TRL's configs) and ``extra`` its own settings, which
    win over ours."""
    cfg = config.train
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    keep_best = bool(cfg.early_stopping_patience and has_eval)
    settings = dict(
        output_dir=str(checkpoints), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, optim=plan.optimizer,
        bf16=plan.precision == "bf16", fp16=plan.precision == "fp16", use_cpu=plan.device == "cpu",
        # every LoRA layer gets a gradient: DDP need not search the graph for unused ones
        ddp_find_unused_parameters=False,
        logging_steps=cfg.logging_steps, eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps or None,
        save_strategy=eval_strategy if keep_best else "steps",
        save_steps=(cfg.eval_steps or None) if keep_best else cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        load_best_model_at_end=keep_best, metric_for_best_model="eval_loss",
        greater_is_better=False, neftune_noise_alpha=cfg.neftune_noise_alpha or None,
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        gradient_checkpointing=False,  # set up by attach_lora, non-reentrant
        label_names=["labels"], save_only_model=False, prediction_loss_only=True,
        # Log a NaN/inf loss as it is (the default averages it away), so the guard sees it.
        logging_nan_inf_filter=False)
    args = args_class(**{**settings, **extra})
    if plan.device == "cuda":
        _one_gpu_per_process(args)
    return args


def _one_gpu_per_process(args: TrainingArguments) -> None:
    """A single process on a multi-GPU box would fall into ``nn.DataParallel`` (slow, and
    not what LoRA wants); more GPUs are used through ``accelerate launch`` processes.
    ``_n_gpu`` is the Trainer's own field for that count (transformers 4.x-5.x)."""
    _ = args.device  # resolve the devices first: it sets _n_gpu
    if hasattr(args, "_n_gpu") and args._n_gpu > 1:
        args._n_gpu = 1


def best_checkpoint(trainer) -> tuple[int, float] | None:
    """(step, eval loss) of the adapter the Trainer reloaded as the best, if it did."""
    best = trainer.state.best_model_checkpoint
    if not trainer.args.load_best_model_at_end or not best or trainer.state.best_metric is None:
        return None
    return int(Path(best).name.split("-")[-1]), float(trainer.state.best_metric)
