"""Exact trainable/total parameter counts for LoRA settings, following peft's own rules.

The numbers equal ``PeftModel.get_nb_trainable_parameters()`` after ``get_peft_model`` (checked
against peft 0.21 on the meta device in tests/test_estimate.py):

* target matching: a module is adapted when its full name is in ``target_modules`` or ends with
  ``"." + target``; ``'all-linear'`` takes every linear layer except the output layer (lm_head);
  modules matched by ``modules_to_save`` (regex on name components) are never adapted;
* a linear layer gets A (r x in) and B (out x r); an embedding gets A (r x num) and B (dim x r);
  DoRA adds a magnitude vector of ``out_features`` (``embedding_dim`` for embeddings);
* ``bias='all'`` makes every parameter whose name contains "bias" trainable, ``'lora_only'`` the
  biases of adapted layers;
* ``modules_to_save``: every module whose name ends with the entry gets a full trainable copy
  (a tied lm_head copy is a real, untied copy: it adds vocab x hidden);
* totals count shared (tied) weights once and add the adapters and copies, like peft.
4-bit layers count at their unpacked size, as peft does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..messages import Message
from .arch import Arch, Module


@dataclass
class TrainableTensor:
    numel: int
    group: str    # adapter (LoRA A/B, DoRA magnitude), bias (a base bias), copy (modules_to_save)
    module: str   # the module it belongs to


@dataclass
class ParamCount:
    total: int
    trainable: int
    base_total: int
    adapter_params: int
    copy_params: int
    bias_params: int
    adapted: list[Module] = field(default_factory=list)
    copied: list[Module] = field(default_factory=list)
    tensors: list[TrainableTensor] = field(default_factory=list)

    def adapted_per_layer(self, layers: int) -> dict[str, float]:
        """Average number of adapted modules per decoder layer, by leaf name."""
        out: dict[str, float] = {}
        for m in self.adapted:
            if ".layers." in m.name:
                out[m.leaf] = out.get(m.leaf, 0.0) + 1.0 / layers
        return out


def _containers(modules: tuple[Module, ...]) -> list[str]:
    names: dict[str, None] = {}
    for m in modules:
        parts = m.name.split(".")
        for i in range(1, len(parts)):
            names[".".join(parts[:i])] = None
    leaf_names = {m.name for m in modules}
    return [n for n in names if n not in leaf_names]


_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def _matches(key: str, targets: list[str]) -> bool:
    return key in targets or any(key.endswith("." + t) for t in targets)


def count_parameters(arch: Arch, r: int, target_modules: list[str] | str, *, bias: str = "none",
                     use_dora: bool = False, modules_to_save: list[str] | None = None,
                     last_layers: int = 0) -> ParamCount:
    modules = arch.modules()
    lowest = max(0, arch.layers - last_layers) if last_layers else 0
    mts = list(modules_to_save or [])
    excluded = [re.compile(rf"(^|.*\.){m}($|\..*)") for m in mts]

    def is_excluded(key: str) -> bool:
        return any(p.match(key) for p in excluded)

    if target_modules == "all-linear":
        wanted = {m.name for m in modules if m.kind == "linear" and m.name != "lm_head"}

        def is_target(key: str) -> bool:
            return key in wanted
    elif isinstance(target_modules, str):
        raise ConfigError(Message("lora.targets_form"))
    else:
        targets = list(target_modules)

        def is_target(key: str) -> bool:
            return _matches(key, targets)

    for key in _containers(modules):
        if is_target(key) and not is_excluded(key):
            raise ConfigError(Message("lora.target_block", name=key))
    adapted: list[Module] = []
    for m in modules:
        if not is_target(m.name) or is_excluded(m.name):
            continue
        layer = _LAYER_INDEX.search(m.name)
        if lowest and (layer is None or int(layer.group(1)) < lowest):
            continue   # peft's layers_to_transform: only modules inside the chosen layers
        if m.kind == "other":
            raise ConfigError(Message("lora.target_other", name=m.name))
        adapted.append(m)
    if not adapted:
        raise ConfigError(Message("lora.no_targets_listed", targets=repr(target_modules),
                                  linear=", ".join(_leaf_linears(modules))))

    tensors: list[TrainableTensor] = []
    for m in adapted:
        tensors.append(TrainableTensor(r * m.in_features, "adapter", m.name))
        tensors.append(TrainableTensor(m.out_features * r, "adapter", m.name))
        if use_dora:
            tensors.append(TrainableTensor(m.out_features, "adapter", m.name))

    copied: list[Module] = []
    if mts:
        prefixes = [k for k in list(_containers(modules)) + [m.name for m in modules]
                    if any(k.endswith(t) for t in mts)]
        # A block matched as a whole is copied whole; its children are not wrapped again.
        prefixes = [p for p in prefixes if not any(p.startswith(q + ".") for q in prefixes)]
        if not prefixes:
            raise ConfigError(Message("lora.no_modules_to_save", names=repr(mts)))
        for m in modules:
            if any(m.name == p or m.name.startswith(p + ".") for p in prefixes):
                copied.append(m)
                for _, n in m.params + m.tied:
                    tensors.append(TrainableTensor(n, "copy", m.name))

    adapted_names = {m.name for m in adapted}
    copied_names = {m.name for m in copied}
    if bias != "none":
        for m in modules:
            if m.name in copied_names:
                continue  # the original stays frozen; its trainable copy is counted above
            if bias == "lora_only" and m.name not in adapted_names:
                continue
            for pname, n in m.params:
                if "bias" in pname or "bias" in m.name:
                    tensors.append(TrainableTensor(n, "bias", m.name))

    base_total = sum(m.numel for m in modules)
    adapter = sum(t.numel for t in tensors if t.group == "adapter")
    copies = sum(t.numel for t in tensors if t.group == "copy")
    biases = sum(t.numel for t in tensors if t.group == "bias")
    return ParamCount(total=base_total + adapter + copies, trainable=adapter + copies + biases,
                      base_total=base_total, adapter_params=adapter, copy_params=copies,
                      bias_params=biases, adapted=adapted, copied=copied, tensors=tensors)


def _leaf_linears(modules) -> list[str]:
    out: list[str] = []
    for m in modules:
        if m.kind == "linear" and m.leaf not in out:
            out.append(m.leaf)
    return out
