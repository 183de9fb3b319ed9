"""Preference tuning (DPO, ORPO, KTO) with TRL's trainers, inside the same job, run folder
and callbacks as supervised tuning.

TRL owns the losses; we give it the run's ``TrainingArguments`` settings, rows rendered in
the run's own template (``preference.trainer_rows``) and our LoRA model. The reference of
DPO and KTO is the policy with its adapter switched off (a fresh adapter starts at B = 0,
so that *is* the starting model); when the run starts from another run's adapter, TRL keeps
a frozen copy of that adapter (a few MB, not a second model) as the reference.
"""

from __future__ import annotations

import random
from importlib.metadata import PackageNotFoundError, version

from .errors import FinetuneError
from .messages import Message

METHODS = ("dpo", "orpo", "kto")
TRL_TESTED = "1.16.0"
# TRL's logged names -> ours (metrics.jsonl, the Train tab's curves)
PREFERENCE_METRICS = {
    "rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin",
    "logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected",
    "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
    "kl": "kl", "log_odds_ratio": "log_odds_ratio",
}


def trl_version() -> str:
    """The installed TRL, or a clear error naming the fix."""
    try:
        return version("trl")
    except PackageNotFoundError:
        raise FinetuneError(Message("pref.no_trl", version=TRL_TESTED)) from None


def build_preference_trainer(method: str, config, model, tokenizer, train_rows: list[dict],
                             eval_rows: list[dict] | None, make_args, callbacks: list,
                             *, from_adapter: bool):
    """A TRL trainer for ``method`` over rows from ``preference.trainer_rows``.

    ``make_args(args_class=..., **extra)`` builds the run's arguments (schedule, precision,
    optimizer, checkpoints, seeds: ``trainer.training_arguments``) as TRL's config class.
    """
    trl_version()
    from datasets import Dataset
    cfg = config.train
    # dropout stays as the run sets it; the Trainer's own gradient checkpointing stays off
    # (attach_lora set it up); TRL's columns are its own
    # (grouping by length reads an input_ids column that TRL's pairs do not have)
    extra = dict(beta=cfg.beta, max_length=cfg.max_seq_len, disable_dropout=False,
                 remove_unused_columns=False, label_names=[], train_sampling_strategy="random")
    # The reference's log-probs never change: over more than one pass through the data, one
    # no-grad pass before training is cheaper than a reference forward at every step
    precompute = _passes(cfg, len(train_rows)) > 1
    if method == "dpo":
        from trl import DPOConfig as args_class, DPOTrainer as trainer_class
        extra["precompute_ref_log_probs"] = precompute
        if cfg.sft_weight:
            extra.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, cfg.sft_weight])
    elif method == "kto":
        from trl import KTOConfig as args_class, KTOTrainer as trainer_class
        extra["precompute_ref_log_probs"] = precompute
        # KTO's KL term pairs each row with its neighbour in a fixed-order batch: TRL reads
        # the rows in order, so they are shuffled once here (seeded: resumable)
        extra["train_sampling_strategy"] = "sequential"
        train_rows = list(train_rows)
        random.Random(cfg.seed).shuffle(train_rows)
    elif method == "orpo":
        # ORPO has no reference model: the odds-ratio term works on the policy alone
        from trl.experimental.orpo import ORPOConfig as args_class, ORPOTrainer as trainer_class
        extra["include_num_input_tokens_seen"] = False  # its batches hold no input_ids
    else:
        raise FinetuneError(f"train.method {method!r}: expected sft or one of {', '.join(METHODS)}")
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    with _without_dataset_progress_bars():
        trainer = trainer_class(model=model, args=make_args(args_class=args_class, **extra),
                                train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tokenizer, callbacks=callbacks)
    if not from_adapter:
        _reference_is_adapter_off(trainer.model)
    return trainer


def _passes(train, rows: int) -> float:
    """How many times the run goes through its rows (max_steps, if set, wins)."""
    if not train.max_steps:
        return train.epochs
    return train.max_steps * train.batch_size * train.grad_accum / max(rows, 1)


def _reference_is_adapter_off(model) -> None:
    """TRL copies an existing adapter as ``ref``; ours is fresh (B = 0), so the base with
    adapters off is the same reference without a second adapter in every reference pass."""
    peft_config = getattr(model, "peft_config", {})
    if "ref" in peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")


class _without_dataset_progress_bars:
    """TRL's dataset ``map`` progress bars would flood the job log."""

    def __enter__(self):
        import datasets
        self._was = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        return self

    def __exit__(self, *exc):
        import datasets
        if self._was:
            datasets.enable_progress_bars()
        return False
