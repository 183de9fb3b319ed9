"""The answer-only loss of reference answers: the same number as training's eval loss."""

from __future__ import annotations

import math

import torch.nn.functional as F

from ..batching import PadCollator
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
    collate = PadCollator(engine.tokenizer.pad_token_id or 0)
    total, count = 0.0, 0
    with engine.using(use_adapter) as model:
        for start in range(0, len(encoded), batch_size):
            if should_stop():
                return None
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels}
                             for e in encoded[start:start + batch_size]])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            keep = labels != IGNORE_INDEX
            total += float(F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count if count else None


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))
