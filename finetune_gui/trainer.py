"""A ``Trainer`` whose loss computes the vocabulary projection only where there is loss.

With loss on answers alone, most positions (prompt, padding) never need logits, yet the
model's head would project every position onto the whole vocabulary — for a small model
with a 49k vocabulary that is a fifth of all the work, plus a ``tokens x vocab`` fp32 copy
for the loss. Here the head is skipped inside the forward pass (the model returns hidden
states) and applied to the trained positions only. The forward still goes through the
(possibly DDP-wrapped) model, so gradient synchronisation is untouched.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import Trainer

from .cpu_kernels import head_cross_entropy
from .templates import IGNORE_INDEX


class _PassHidden(torch.nn.Module):
    """Stands in for the output head during the forward pass: returns hidden states."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def _plain_head(causal_lm) -> torch.nn.Module | None:
    """The output head when logits are just ``head(hidden)``; None if anything else happens."""
    config = causal_lm.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "final_logit_softcapping", None) or getattr(text, "logit_scale", None) \
            or getattr(text, "logits_scaling", 1.0) not in (1, 1.0, None):
        return None
    get = getattr(causal_lm, "get_output_embeddings", None)
    head = get() if get else None
    if not isinstance(head, torch.nn.Linear) or any(p.requires_grad for p in head.parameters()):
        return None  # a trained head (modules_to_save) must stay inside the DDP forward
    return head


@contextlib.contextmanager
def _hidden_states_out(causal_lm):
    head = causal_lm.get_output_embeddings()
    causal_lm.set_output_embeddings(_PassHidden())
    try:
        yield head
    finally:
        causal_lm.set_output_embeddings(head)


class ResponseOnlyTrainer(Trainer):
    """Cross-entropy on answer tokens, normalised over the whole accumulated batch."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, cpu_kernels: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._cpu_kernels = cpu_kernels  # the fused loss of finetune_gui.cpu_kernels
        self.model_accepts_loss_kwargs = True  # so the Trainer counts num_items_in_batch
        self._causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") \
            else self.model
        self._head = _plain_head(self._causal_lm)
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
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self._head is not None:
            with _hidden_states_out(self._causal_lm) as head:
                hidden = model(**model_inputs).logits[:, :-1]
            # accelerate hands outputs back in fp32; project in the head's own dtype, as
            # the model's forward would have
            hidden = hidden[keep].to(head.weight.dtype)
            loss = head_cross_entropy(hidden, head, labels[keep]) if self._cpu_kernels else None
            if loss is None:
                loss = F.cross_entropy(head(hidden).float(), labels[keep], reduction="sum")
        else:
            logits = model(**model_inputs).logits[:, :-1][keep]
            loss = F.cross_entropy(logits.float(), labels[keep], reduction="sum")
        if num_items_in_batch is None:  # evaluation: a plain mean over this batch
            loss = loss / keep.sum().clamp(min=1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss
