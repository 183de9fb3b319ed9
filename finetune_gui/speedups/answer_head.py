"""Answer-only head: project onto the vocabulary only the positions that carry loss.

With loss on answers alone, most positions (prompt, padding) never need logits, yet the
model's head would project every position onto the whole vocabulary — for a small model
with a 49k vocabulary that is a fifth of all the work, plus a ``tokens x vocab`` fp32 copy
for the loss. Here the head is swapped out inside the forward pass (the model returns
hidden states) and the trainer applies it to the trained positions only. The forward still
goes through the (possibly DDP-wrapped) model, so gradient synchronisation is untouched.

Reference path: the model's own logits for every position (speed-ups off); parity in
tests/test_speedups.py.
"""

from __future__ import annotations

import contextlib

import torch

from ..models import text_config


class _PassHidden(torch.nn.Module):
    """Stands in for the output head during the forward pass: returns hidden states."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def plain_head(causal_lm) -> torch.nn.Module | None:
    """The output head when logits are just ``head(hidden)``; None if anything else happens."""
    text = text_config(causal_lm.config)
    if getattr(text, "final_logit_softcapping", None) or getattr(text, "logit_scale", None) \
            or getattr(text, "logits_scaling", 1.0) not in (1, 1.0, None):
        return None
    get = getattr(causal_lm, "get_output_embeddings", None)
    head = get() if get else None
    if not isinstance(head, torch.nn.Linear) or any(p.requires_grad for p in head.parameters()):
        return None  # a trained head (modules_to_save) must stay inside the DDP forward
    return head


@contextlib.contextmanager
def hidden_states_out(causal_lm):
    head = causal_lm.get_output_embeddings()
    causal_lm.set_output_embeddings(_PassHidden())
    try:
        yield head
    finally:
        causal_lm.set_output_embeddings(head)
