"""The answer-only loss of reference answers: the same number as training's eval loss."""

from __future__ import annotations

import math

import torch.nn.functional as F

from ..batching import forward_in_batches
from ..templates import IGNORE_INDEX, encode_example


def answer_loss(engine, examples, *, use_adapter: bool, max_len: int,
                batch_size: int = 8, should_stop=lambda: False) -> float | None:
    """Mean cross-entropy per answer token over ``examples`` (prompt and padding masked, as
    in training); None when no example has an answer or the caller stopped."""
    encoded = [encode_example(e, engine.spec, engine.tokenizer, max_len) for e in examples
               if e.turns[-1].output.strip()]
    encoded = [e for e in encoded if e.trained_tokens]
    if not encoded:
        return None
    total, count = 0.0, 0
    with engine.using(use_adapter) as model:
        for _, batch, logits in forward_in_batches(model, encoded,
                                                   engine.tokenizer.pad_token_id or 0,
                                                   batch_size):
            if should_stop():
                return None
            labels = batch["labels"][:, 1:].to(logits.device)
            keep = labels != IGNORE_INDEX
            total += float(F.cross_entropy(logits[:, :-1][keep].float(), labels[keep],
                                           reduction="sum"))
            count += int(keep.sum())
    return total / count if count else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))
