"""Frozen lower layers: what they output for a row is computed once, not once per epoch.

With adapters on the last layers only (``lora.last_layers``), the layers below them hold no
trainable weight and no dropout, and see the same tokens every epoch: their output for a
row never changes. The first pass over a row records what enters the first trained layer;
every later pass over a batch whose rows are all recorded skips the lower layers and starts
there. For the quickstart (top 15 of 30 layers, 5 epochs) that is a third of the layer
work in four epochs of five.

Rows are keyed by their tokens (right-padded batches put a row's tokens at the same
positions in any batch), so shuffling and regrouping between epochs do not matter. The
records live in RAM, within a budget; past it the speed-up stops and frees them.

Reference path: the lower layers run every time (speed-up off); parity in
tests/test_speedups.py. Not used with NEFTune (noise on the embeddings), packing,
gradient checkpointing, dropout in the lower layers or a trainable layer below.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..models import text_config

MAX_STORE_BYTES = 2 * 2 ** 30


def store_budget(available_ram_bytes: int) -> int:
    """RAM the records may take: a quarter of what is free, at most 2 GiB."""
    return min(MAX_STORE_BYTES, available_ram_bytes // 4)


def store_bytes(tokens: int, hidden_size: int, element_bytes: int) -> int:
    """RAM the records of ``tokens`` tokens take (one hidden vector each)."""
    return tokens * hidden_size * element_bytes


def store_fits(tokens: int, hidden_size: int, element_bytes: int, budget_bytes: int) -> bool:
    """Whether training keeps the records of ``tokens`` data tokens (``attach``), as the
    memory estimate must know too."""
    return store_bytes(tokens, hidden_size, element_bytes) <= budget_bytes


@dataclass
class _Batch:
    keys: list[bytes]
    mask: torch.Tensor             # (rows, width) bool: the real tokens
    replay: bool                   # every row recorded: skip the lower layers
    buffer: torch.Tensor | None    # (rows, width, hidden) input of the first trained layer


class FrozenBottom:
    """Records and replays the input of the first trained decoder layer, per row."""

    def __init__(self, layers: torch.nn.ModuleList, first_trained: int, budget_bytes: int,
                 log: Callable[[str], None]):
        self.first_trained = first_trained
        self._budget = budget_bytes
        self._log = log
        self._store: dict[bytes, torch.Tensor] = {}
        self._used = 0
        self._active = True
        self._batch: _Batch | None = None
        self._window: tuple[slice, bool] = (slice(None), False)
        self._returns_tuple = False
        for layer in layers[:first_trained]:
            layer.forward = self._skipped_on_replay(layer.forward)
        layers[first_trained].register_forward_pre_hook(self._at_first_trained, with_kwargs=True)

    @contextlib.contextmanager
    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """Around one batch's forward call(s): replay it if every row is recorded, else
        record the rows not yet recorded."""
        if not self._active:
            yield
            return
        mask = (attention_mask.bool() if attention_mask is not None
                else torch.ones_like(input_ids, dtype=torch.bool))
        ids, real = input_ids.cpu(), mask.cpu()
        keys = [ids[row][real[row]].numpy().tobytes() for row in range(len(ids))]
        replay = all(key in self._store for key in keys)
        buffer = None
        if replay:
            first = self._store[keys[0]]
            buffer = first.new_zeros((*input_ids.shape, first.shape[-1]))
            for row, key in enumerate(keys):
                buffer[row][mask[row]] = self._store[key]
        self._batch = _Batch(keys, mask, replay, buffer)
        try:
            yield
            if not replay and self._batch.buffer is not None:
                self._record(self._batch)
        finally:
            self._batch = None

    @contextlib.contextmanager
    def window(self, columns: slice, shared: bool = False):
        """The columns of the batch the next forward call covers; ``shared``: the call runs
        one row standing for every row (a shared prefix, ``shared_prefix.py``)."""
        self._window = (columns, shared)
        try:
            yield
        finally:
            self._window = (slice(None), False)

    def _replaying(self) -> bool:
        """Skip the lower layers now? Not in a shared prefix's one-row call: that row is
        cheap, and the lower layers' keys and values must reach the cache for the rest."""
        return self._batch is not None and self._batch.replay and not self._window[1]

    def _skipped_on_replay(self, forward):
        def maybe_skip(*args, **kwargs):
            if self._replaying():
                hidden = args[0] if args else kwargs["hidden_states"]
                return (hidden,) if self._returns_tuple else hidden
            out = forward(*args, **kwargs)
            self._returns_tuple = isinstance(out, tuple)
            return out
        return maybe_skip

    def _at_first_trained(self, module, args, kwargs):
        batch = self._batch
        if batch is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        columns, shared = self._window
        if batch.replay:
            if not self._replaying():
                return None
            part = batch.buffer[:, columns]
            if part.shape != hidden.shape:
                raise RuntimeError(f"frozen_bottom: replayed {tuple(part.shape)} where the "
                                   f"model gives {tuple(hidden.shape)}")
            part = part.to(hidden.dtype)
            return ((part, *args[1:]), kwargs) if args else (args, {**kwargs,
                                                                     "hidden_states": part})
        if batch.buffer is None:
            batch.buffer = hidden.new_zeros((*batch.mask.shape, hidden.shape[-1]))
        batch.buffer[:, columns] = hidden.detach()  # shared: one row, broadcast to all
        return None

    def _record(self, batch: _Batch) -> None:
        for row, key in enumerate(batch.keys):
            if key in self._store:
                continue
            kept = batch.buffer[row][batch.mask[row]].clone()
            self._used += kept.numel() * kept.element_size()
            self._store[key] = kept
        if self._used > self._budget:
            self._log(f"frozen lower layers: their outputs outgrew {self._budget / 2**30:.1f} "
                      "GiB of RAM; computed every time from here on")
            self._store.clear()
            self._active = False


def decoder_layers(causal_lm) -> torch.nn.ModuleList | None:
    """The model's stack of decoder layers: the module list as long as its layer count."""
    count = getattr(text_config(causal_lm.config), "num_hidden_layers", None)
    for module in causal_lm.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    return None


def why_not(causal_lm) -> str | None:
    """None when the lower layers are frozen and deterministic; else why not."""
    layers = decoder_layers(causal_lm)
    if layers is None:
        return "the model's decoder layers were not found"
    first = first_trained_layer(layers)
    if not first:
        return "adapters on the first layer (set lora.last_layers)"
    embeddings = causal_lm.get_input_embeddings()
    if any(p.requires_grad for p in embeddings.parameters()) or \
            any(p.requires_grad for layer in layers[:first] for p in layer.parameters()):
        return "a trainable weight below the adapters"
    text = text_config(causal_lm.config)
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in layers[:first].modules()) or \
            any(isinstance(v, float) and v > 0 for k, v in vars(text).items()
                if k.endswith("dropout") or "pdrop" in k):
        return "dropout in the model's own layers"
    return None


def first_trained_layer(layers: torch.nn.ModuleList) -> int:
    for index, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return 0


def attach(causal_lm, budget_bytes: int, log: Callable[[str], None], tokens: int = 0
           ) -> FrozenBottom | None:
    """The store on ``causal_lm``'s lower layers, or None (logged) when they are not frozen
    and deterministic or the records of ``tokens`` data tokens would outgrow the budget."""
    reason = why_not(causal_lm)
    embeddings = causal_lm.get_input_embeddings()
    size = (tokens, embeddings.embedding_dim, embeddings.weight.element_size())
    if not reason and not store_fits(*size, budget_bytes):
        need = store_bytes(*size)
        reason = (f"their outputs for the data's {tokens:,} tokens would take "
                  f"{need / 2 ** 30:.1f} GiB, more than {budget_bytes / 2 ** 30:.1f} GiB")
    if reason:
        log(f"frozen lower layers not kept: {reason}")
        return None
    layers = decoder_layers(causal_lm)
    bottom = FrozenBottom(layers, first_trained_layer(layers), budget_bytes, log)
    log(f"speed-up: the outputs of the {bottom.first_trained} frozen lower layers are kept per "
        f"row after the first pass (up to {budget_bytes / 2**30:.1f} GiB of RAM)")
    return bottom
