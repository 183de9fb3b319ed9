"""Recognising what went wrong in a run, and saying how to fix it."""

from __future__ import annotations

import errno
import re

import torch

from .errors import FinetuneError
from .messages import Message
from .models import text_config


def check_sequence_length(max_seq_len: int, model_config) -> None:
    """Refuse a train.max_seq_len beyond the positions the model was built for."""
    text_cfg = text_config(model_config)
    limit = getattr(text_cfg, "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < max_seq_len:
        raise FinetuneError(Message("train.seq_len_above_model", asked=max_seq_len, most=limit))


def weights_finite(model) -> bool:
    """True when every trainable weight is a finite number (cheap: LoRA weights only)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA says 'out of memory'; the CPU allocator says 'can't allocate memory'."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT as an OSError, or as text from torch.save/safetensors writers."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota" in text


def out_of_memory_message(exc: BaseException) -> Message:
    text = str(exc)
    gpu = isinstance(exc, torch.OutOfMemoryError) or "cuda" in text.lower()
    size = re.search(r"(?i)tried to allocate (\d+(?:\.\d+)? ?[KMGT]iB|\d+)", text)
    amount = size.group(1) if size else ""
    if amount.isdigit():
        amount = f"{int(amount) / 2**20:,.0f} MiB"
    kind = "gpu" if gpu else "ram"
    return (Message(f"train.oom_{kind}_amount", amount=amount) if amount
            else Message(f"train.oom_{kind}"))
