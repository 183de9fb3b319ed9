"""The merged model's weights in float32, one tensor at a time.

GGUF is written from exact (float32) merged weights. Merging the whole model in float32 first
held a float32 copy of every weight (a 7B base: ~28 GB of RAM) and the writer then held a
second, converted copy until the file was written. Here the base stays in its own dtype with
the adapter still a branch, and each weight is merged when the writer asks for it: a LoRA
layer is copied alone to float32 and merged there by peft's own ``merge`` (LoRA and DoRA
alike), so at most one layer's float32 copy exists at a time. For a 16/32-bit base the numbers
are those of merging the whole model in float32 (a test compares the GGUF files byte for byte).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

BASE_LAYER = ".base_layer."
SAVED_COPY = ".modules_to_save."


@dataclass(frozen=True)
class ExactWeight:
    """One weight of the merged model: its shape now, its float32 values when asked."""
    shape: tuple[int, ...]
    values: Callable[[], np.ndarray]


def exact_weights(model) -> dict[str, ExactWeight]:
    """Names as the merged transformers model has them (``model.layers.0.mlp.up_proj.weight``)
    → weights; ``model`` is a merged model or a ``PeftModel`` whose adapter is still a branch."""
    from peft import PeftModel
    if not isinstance(model, PeftModel):
        return {name: _plain(tensor) for name, tensor in model.state_dict().items()}
    adapter = model.active_adapter
    base = model.get_base_model()
    modules = dict(base.named_modules())
    weights: dict[str, ExactWeight] = {}
    for key, tensor in base.state_dict().items():
        if BASE_LAYER in key:
            owner, _, leaf = key.partition(BASE_LAYER)
            weights[f"{owner}.{leaf}"] = ExactWeight(
                tuple(tensor.shape), _merged_leaf(modules[owner], adapter, leaf))
        elif SAVED_COPY in key:  # a fully trained module (lora.modules_to_save): its copy
            owner, _, rest = key.partition(SAVED_COPY)
            name, _, leaf = rest.partition(".")
            if name == adapter:
                weights[f"{owner}.{leaf}"] = _plain(tensor)
        elif ".lora_" in key or ".original_module." in key:
            continue  # adapter matrices (folded in above) and the replaced original
        else:
            weights[key] = _plain(tensor)
    return weights


def head_tied(model) -> bool:
    """Whether the head is the input embeddings (and may be left out of the file). Not when
    ``lora.modules_to_save`` trained a copy of either: merging unties them, as peft does."""
    from peft import PeftModel
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    if not isinstance(model, PeftModel):
        return True
    base = model.get_base_model()
    embeddings = (base.get_input_embeddings(), base.get_output_embeddings())
    return not any(module in embeddings for module in base.modules()
                   if hasattr(module, "modules_to_save"))


def _plain(tensor: torch.Tensor) -> ExactWeight:
    return ExactWeight(tuple(tensor.shape),
                       lambda: tensor.detach().to("cpu", torch.float32).numpy())


def _merged_leaf(layer, adapter: str, leaf: str) -> Callable[[], np.ndarray]:
    def values() -> np.ndarray:
        alone = copy.deepcopy(layer).to("cpu", torch.float32)
        alone.merge(adapter_names=[adapter])
        merged = alone.get_base_layer()
        for part in leaf.split("."):
            merged = getattr(merged, part)
        return merged.detach().numpy()
    return values
