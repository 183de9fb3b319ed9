"""Live trainable-parameter count and memory estimate for the LoRA tab.

Uses ``finetune_gui.estimate`` when it is importable. Until then (and for the exact count
whenever a model is loaded) it counts what peft would add from the model's linear-layer
shapes — read from the loaded model, or from a weightless copy built on the meta device.
The count is exact for LoRA/DoRA (checked against peft in tests/test_ui_lora.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch

from ..config import LoraConfig, ModelConfig, RunConfig
from ..errors import FinetuneError
from ..messages import Message, reason_of


@dataclass
class Structure:
    """Shapes of a model's layers: enough to count LoRA parameters without weights."""
    linear: list[tuple[str, int, int, int]]    # (full name, in, out, bias size)
    biases: list[tuple[str, int]]              # every bias in the model (name, size)
    module_params: dict[str, int]              # leaf name -> total params of those modules
    total_params: int
    names: list[str] = field(default_factory=list)  # distinct LoRA-targetable leaf names


def structure_of(model) -> Structure:
    from ..models import linear_layer_names
    linear, biases, module_params = [], [], {}
    for full, module in model.named_modules():
        leaf = full.rsplit(".", 1)[-1]
        own = sum(p.numel() for p in module.parameters(recurse=True))
        if leaf:
            module_params[leaf] = module_params.get(leaf, 0) + own
        if isinstance(module, torch.nn.Linear) and "lora_" not in full:
            bias = module.bias.numel() if module.bias is not None else 0
            linear.append((full, module.in_features, module.out_features, bias))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            biases.append((name, p.numel()))
    total = sum(p.numel() for p in model.parameters())
    return Structure(linear, biases, module_params, total, linear_layer_names(model))


@functools.lru_cache(maxsize=8)
def _meta_structure(location: str, trust_remote_code: bool) -> Structure:
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    return structure_of(model)


def structure_from_config(model_cfg: ModelConfig) -> Structure:
    """The structure of a model that is not loaded, from its config.json alone."""
    from ..models import resolve_source
    source = resolve_source(model_cfg.name_or_path)
    if not source.is_local:
        raise FinetuneError(Message("ui.load_to_count"))
    try:
        return _meta_structure(source.location, model_cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise FinetuneError(Message("lora.no_architecture", source=source.description,
                                    why=str(exc).splitlines()[0][:200])) from None


def _targeted(structure: Structure, targets, last_layers: int = 0
              ) -> list[tuple[str, int, int, int]]:
    if targets == "all-linear":
        chosen = [m for m in structure.linear if m[0].rsplit(".", 1)[-1] != "lm_head"
                  and m[0].rsplit(".", 1)[-1] in structure.names]
    else:
        wanted = set(targets)
        chosen = [m for m in structure.linear if m[0].rsplit(".", 1)[-1] in wanted]
    if last_layers:
        index = [(m, re.search(r"\.layers\.(\d+)\.", m[0])) for m in chosen]
        layers = max((int(found.group(1)) for _, found in index if found), default=-1) + 1
        chosen = [m for m, found in index
                  if found and int(found.group(1)) >= layers - last_layers]
    return chosen


def trainable_params(structure: Structure, lora: LoraConfig) -> int:
    """Exactly what ``peft.get_peft_model(...).get_nb_trainable_parameters()`` reports."""
    chosen = _targeted(structure, lora.target_modules, lora.last_layers)
    if not chosen:
        raise FinetuneError(Message("lora.no_targets", targets=repr(lora.target_modules)))
    count = sum(lora.r * (i + o) + (o if lora.use_dora else 0) for _, i, o, _ in chosen)
    if lora.bias == "all":
        count += sum(n for _, n in structure.biases)
    elif lora.bias == "lora_only":
        count += sum(b for *_, b in chosen)
    for name in lora.modules_to_save:
        count += structure.module_params.get(name, 0)
    return count


@dataclass
class CountReport:
    trainable: int
    total: int
    exact: bool
    peak_bytes: int | None = None
    breakdown: dict | None = None
    device: str = ""
    fits: bool | None = None
    note: str = ""
    plan_rows: list[tuple[str, str]] = field(default_factory=list)
    seq_len: int = 0               # the batch length the estimate assumed
    answer_tokens: int | None = None
    from_data: bool = False        # that length came from the data, not max_seq_len


def estimator():
    """``finetune_gui.estimate.estimate`` once that module exists, else None."""
    try:
        from ..estimate import estimate
    except ImportError:
        return None
    return estimate


def count_report(config: RunConfig, structure: Structure | None) -> CountReport:
    """Trainable count (exact when a structure is known) plus the estimator's memory."""
    report = None
    est = estimator()
    if est is not None:
        try:
            e = est(config)
            report = CountReport(int(e.trainable_params), int(e.total_params), False,
                                 int(e.peak_bytes), dict(getattr(e, "breakdown", {}) or {}),
                                 str(getattr(e, "device", "")), getattr(e, "fits", None))
            if e.plan is not None:
                report.plan_rows = e.plan.rows()
            if e.setup is not None:
                report.seq_len, report.answer_tokens = e.setup.seq_len, e.setup.answer_tokens
                report.from_data = e.setup.seq_len != config.train.max_seq_len or \
                    e.setup.answer_tokens is not None
        except FinetuneError as exc:
            if structure is None:
                raise
            report = CountReport(0, 0, False, note=reason_of(exc))
        except Exception as exc:  # an estimator bug must not break the LoRA tab
            report = CountReport(0, 0, False, note=f"estimator failed: {exc}"[:200])
    if structure is not None:
        trainable = trainable_params(structure, config.lora)
        if report is None:
            report = CountReport(trainable, structure.total_params + trainable, True)
        else:
            report.trainable, report.exact = trainable, True
            report.total = structure.total_params + trainable
    if report is None:
        raise FinetuneError(Message("ui.load_to_count"))
    if report.peak_bytes is None:
        # Lower bound until the estimator lands: LoRA weights, grads and two AdamW moments
        # in fp32 on top of the frozen base weights.
        report.note = report.note or "lower_bound"
    return report
