"""Fold a run's LoRA adapter into its base model and save a plain transformers folder.

The result loads with ``AutoModelForCausalLM.from_pretrained(folder)`` alone: no peft, no
finetune_gui. It carries the tokenizer, a chat template that renders exactly the prompts the
run trained on, and a generation config with the run's decoding settings and stop tokens, so
that a plain ``model.generate(ids)`` answers as the Chat tab does.

A base that was trained in 4 or 8 bits is loaded as it was trained and then dequantised to
16-bit before merging: the adapter learned corrections to the quantised weights, so those are
the weights it is added to (merging into 4-bit storage would round the update away).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from .. import models, runs
from ..config import RunConfig
from ..errors import FinetuneError
from ..generation import sampling_kwargs
from ..messages import Message
from ..plan import Machine, resolve_plan
from ..templates import TemplateSpec, stop_token_ids
from .chat_templates import run_chat_template

RUN_COPY = "finetune_gui_run.yaml"
DTYPES = ("auto", "float32", "bfloat16", "float16")

Progress = Callable[[float, str], None]


@dataclass
class Merged:
    """A merged model in memory, with what is needed to save or convert it."""
    model: object
    tokenizer: object
    config: RunConfig
    run_dir: Path
    dtype: torch.dtype
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    path: Path
    kind: str                       # "merged", "gguf"
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind,
                "files": [str(f) for f in self.files], "notes": list(self.notes), **self.extra}


def no_progress(fraction: float, text: str) -> None:
    pass


def sixteen_bit() -> torch.dtype:
    """The 16-bit dtype a dequantised base is stored in: bf16 where the hardware has it."""
    machine = Machine.detect()
    if machine.cuda:  # native bf16 only: a T4 or V100 would emulate it
        return torch.bfloat16 if machine.cuda_bf16 else torch.float16
    return torch.bfloat16 if machine.cpu_bf16 else torch.float16


def base_dtype(config: RunConfig) -> torch.dtype:
    """The dtype the base model's own weights are stored in (from its config.json)."""
    source = models.resolve_source(config.model.name_or_path)
    if source.is_local:
        try:
            data = json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            data = {}
        name = data.get("dtype") or data.get("torch_dtype")
        if name in ("float32", "bfloat16", "float16"):
            return getattr(torch, name)
    return torch.float32 if not torch.cuda.is_available() else sixteen_bit()


def resolve_dtype(config: RunConfig, dtype: str = "auto") -> torch.dtype:
    if dtype not in DTYPES:
        raise FinetuneError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if dtype != "auto":
        return getattr(torch, dtype)
    if config.model.quantization != "none":
        return sixteen_bit()
    return base_dtype(config)


def merge_plan(config: RunConfig, target: torch.dtype):
    """Merging runs on the CPU, loading a 16/32-bit base straight in the target dtype: on a
    24 GB card a 7B merge (and GGUF's fp32 copy) would not fit beside nothing else, and
    RAM is where the merged model goes anyway. One full copy of the weights at a time."""
    cpu = config.copy()
    cpu.model.device = "cpu"
    plan = resolve_plan(cpu)
    if config.model.quantization == "none":
        plan = replace(plan, load_dtype=str(target).replace("torch.", ""))
    return plan


def describe_export(run_dir: str | Path) -> dict:
    """What an export of this run will do, for the UI to show before it starts."""
    paths, config = runs.find_run(run_dir)
    quant = config.model.quantization
    notes = []
    if quant != "none":
        notes.append(f"The base was trained in {quant}: it is dequantised to "
                     f"{str(sixteen_bit()).replace('torch.', '')} before the adapter is merged; "
                     "the merged model is a plain 16-bit model.")
    from .gguf_export import gguf_support
    ok, why = gguf_support(config)
    return {"run": str(paths.root), "base": config.model.name_or_path, "quantization": quant,
            "template": config.data.template, "gguf_supported": ok, "gguf_reason": why,
            "notes": notes}


ADAPTER_MODES = ("merged", "branch", "none")


def load_merged(run_dir: str | Path, *, dtype: str = "auto",
                progress: Progress | None = None, adapter: str = "merged") -> Merged:
    """Base + adapter folded into plain weights, in memory. ``adapter="branch"``: the adapter
    attached but not folded in, for writers that merge one weight at a time
    (``exact_weights``); ``"none"``: the base alone, as the adapter saw it, e.g. to ship the
    adapter separately."""
    if adapter not in ADAPTER_MODES:
        raise ValueError(f"adapter must be one of {ADAPTER_MODES}")
    from peft import PeftModel
    step = progress or no_progress
    paths, config = runs.find_run(run_dir)
    target = resolve_dtype(config, dtype)
    notes: list[str] = []
    step(0.05, "loading base model")
    model, tokenizer = models.load_model(config.model, for_training=False,
                                         plan=merge_plan(config, target))
    quant = config.model.quantization
    if quant != "none" and models.has_quantized_layers(model):
        try:
            model = model.dequantize(dtype=target)
        except TypeError:  # older signature without dtype
            model = model.dequantize()
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise FinetuneError(Message("export.dequantise", quant=quant,
                                        why=str(exc).splitlines()[0][:200])) from None
    if quant != "none":  # here, or once at load where the execution plan said so
        notes.append(f"the {quant} base was dequantised to "
                     f"{str(target).replace('torch.', '')} before merging")
    if adapter != "none":
        step(0.35, "loading adapter")
        model = PeftModel.from_pretrained(model, str(paths.adapter))
    if adapter == "merged":
        step(0.5, "merging")
        model = model.merge_and_unload()
    merged = model.to(target) if adapter != "branch" else model  # branch: the adapter's own dtype
    merged.eval()
    merged.config.use_cache = True
    for attr in ("quantization_config",):
        if hasattr(merged.config, attr):
            delattr(merged.config, attr)
    merged.hf_quantizer = None
    merged.is_quantized = False
    _set_generation(merged, tokenizer, config)
    _set_chat_template(tokenizer, config)
    return Merged(merged, tokenizer, config, paths.root, target, notes)


def _set_generation(model, tokenizer, config: RunConfig) -> None:
    """Decode as the Chat tab does: the run's settings, stopping at every end-of-turn token."""
    from transformers import GenerationConfig
    gen = config.generation
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    kwargs = {k: v for k, v in sampling_kwargs(gen).items() if v is not None}
    model.generation_config = GenerationConfig(
        **kwargs, bos_token_id=tokenizer.bos_token_id, eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id)


def _set_chat_template(tokenizer, config: RunConfig) -> None:
    spec = TemplateSpec.from_data_config(config.data)
    tokenizer.chat_template = run_chat_template(spec, tokenizer)


def check_merged_target(out_dir: str | Path) -> Path:
    """Refuse a target that holds something: an export never overwrites."""
    dest = Path(out_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FinetuneError(Message("export.dest_exists", path=dest))
    return dest


def save_merged(merged: Merged, out_dir: str | Path, *, max_shard_size: str | int = "2GB",
                progress: Progress | None = None) -> ExportResult:
    """Write the merged model as sharded safetensors beside ``out_dir``, then rename it in."""
    step = progress or no_progress
    dest = check_merged_target(out_dir)
    step(0.7, "saving")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.model.save_pretrained(tmp, max_shard_size=max_shard_size)
        merged.tokenizer.save_pretrained(tmp)
        merged.config.save(tmp / RUN_COPY)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FinetuneError(Message("export.merged_write", path=dest, why=exc)) from None
    step(1.0, "done")
    files = sorted(p for p in dest.iterdir() if p.is_file())
    shards = [p for p in files if p.suffix == ".safetensors"]
    return ExportResult(dest, "merged", files, list(merged.notes),
                        {"dtype": str(merged.dtype).replace("torch.", ""),
                         "shards": len(shards),
                         "bytes": sum(p.stat().st_size for p in shards)})


def export_merged(run_dir: str | Path, out_dir: str | Path, *, dtype: str = "auto",
                  max_shard_size: str | int = "2GB",
                  progress: Progress | None = None) -> ExportResult:
    """Merge a run's adapter into its base and save a standalone transformers model.

    ``dtype``: auto = the base's own dtype (16-bit for a 4/8-bit base), or float32 /
    bfloat16 / float16. ``max_shard_size``: safetensors shard size, e.g. "2GB".
    """
    dest = check_merged_target(out_dir)
    merged = load_merged(run_dir, dtype=dtype, progress=progress)
    return save_merged(merged, dest, max_shard_size=max_shard_size, progress=progress)
