"""Shared prefix: compute the tokens every row of a batch starts with once, not once per row.

Instruction and chat rows through one template all begin the same way — the template's
system prompt and the user turn's header (about 25 of the embedded model's 60-token fact
rows). Causal attention makes those positions' hidden states identical in every row, so
the batch's common prefix is run once as a batch of one, its keys and values are repeated
for the rows, and only the rest of each row goes through the model. Gradients flow through
the repeated keys and values (and the repeated outputs), so the adapter's gradient is the
same sum as the reference's, to float rounding.

Reference path: every row run whole (speed-up off); parity in tests/test_speedups.py.
Not used where the one-forward-per-step assumption matters or positions are not plain:
packed batches, gradient checkpointing (no cache), NEFTune (noise per row), DDP.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

MIN_PREFIX = 8  # shorter common prefixes save less than the second call costs


def common_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> int:
    """How many leading tokens every row of the batch shares (real tokens, not padding),
    leaving at least one token per row for the second pass."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    length = int(same.long().cumprod(0).sum())
    return min(length, input_ids.shape[1] - 1)


def forward_with_shared_prefix(model, model_inputs: dict, prefix: int,
                               window: Callable[..., contextlib.AbstractContextManager] | None
                               = None):
    """The model's output logits (or hidden states, under the answer head) for the whole
    batch, computing the first ``prefix`` positions once; same shape as ``model(**inputs)``.
    ``window(columns, shared)`` is told which part of the batch each call covers
    (``frozen_bottom.FrozenBottom.window``)."""
    window = window or (lambda *_args, **_kwargs: contextlib.nullcontext())
    ids = model_inputs["input_ids"]
    rows = ids.shape[0]
    with window(slice(0, prefix), shared=True):
        first = model(input_ids=ids[:1, :prefix], use_cache=True)
    # transformers 5.2x names the cache ``cache``; earlier versions ``past_key_values``
    name = "cache" if getattr(first, "cache", None) is not None else "past_key_values"
    cache = getattr(first, name)
    cache.batch_repeat_interleave(rows)
    rest_inputs = {k: v for k, v in model_inputs.items() if k != "input_ids"}
    with window(slice(prefix, None)):
        rest = model(input_ids=ids[:, prefix:], use_cache=False, **{name: cache}, **rest_inputs)
    head = first.logits.expand(rows, -1, -1).to(rest.logits.dtype)
    return torch.cat([head, rest.logits], dim=1)
