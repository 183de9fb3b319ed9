"""The adapter alone as a GGUF LoRA for llama.cpp and Ollama, beside its base as GGUF.

One base file can then serve many tuned adapters (``llama-cli -m base.gguf --lora
adapter.gguf``; Ollama's ``ADAPTER``). The layout is llama.cpp's own
(``convert_lora_to_gguf.py``): ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and for each adapted matrix ``<tensor>.lora_a`` (r x in) and
``<tensor>.lora_b`` (out x r), B's rows in llama.cpp's rotary order for q and k as the base's
are. llama.cpp scales by alpha / r, so rsLoRA's alpha / sqrt(r) is written as alpha * sqrt(r).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import FinetuneError
from ..messages import Message
from ..templates import TemplateSpec
from .chat_templates import modelfile_text
from .gguf_arch import rotary_rows
from .gguf_export import MODELFILE, check_before_merging, check_gguf_target, write_gguf
from .merged import ExportResult, Progress, load_merged, no_progress

PREFIX = "base_model.model."
BASE_FILE, ADAPTER_FILE = "base.gguf", "adapter.gguf"


def check_lora_target(out_dir: str | Path) -> Path:
    dest = Path(out_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FinetuneError(Message("export.dest_exists", path=dest))
    return dest


def _adapter(run_root: Path) -> tuple[dict, dict]:
    from safetensors.numpy import load_file
    folder = runs.RunPaths(run_root).adapter
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        weights = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise FinetuneError(Message("export.adapter_unreadable", path=folder, why=exc)) from None
    if config.get("use_dora"):
        raise FinetuneError(Message("export.lora_dora"))
    extra = [k for k in weights if ".lora_A." not in k and ".lora_B." not in k]
    if extra or config.get("modules_to_save"):
        raise FinetuneError(Message("export.lora_modules",
                                    name=(extra or config["modules_to_save"])[0]))
    return config, weights


def write_lora_tensors(run_root: Path, out: Path, model_config) -> dict:
    """The adapter's A and B matrices as a llama.cpp LoRA file; what was written."""
    import gguf
    config, weights = _adapter(run_root)
    if model_config.model_type not in ("llama", "mistral"):
        raise FinetuneError(Message("export.lora_family", kind=model_config.model_type))
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    n_head = model_config.num_attention_heads
    n_kv = model_config.num_key_value_heads or n_head
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model_config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, scale * r)
    pairs = 0
    for key in sorted(k for k in weights if ".lora_A." in k):
        module = key[len(PREFIX):] if key.startswith(PREFIX) else key
        module = module.split(".lora_A.")[0]
        target = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        b_key = key.replace(".lora_A.", ".lora_B.")
        if target is None or b_key not in weights:
            raise FinetuneError(Message("export.lora_tensor", name=key))
        a, b = weights[key].astype(np.float32), weights[b_key].astype(np.float32)
        if module.endswith("q_proj"):
            b = rotary_rows(b, n_head, n_head)
        elif module.endswith("k_proj"):
            b = rotary_rows(b, n_head, n_kv)
        writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b))
        pairs += 1
    if not pairs:
        raise FinetuneError(Message("export.lora_empty"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"matrices": pairs, "rank": r, "scale": scale}


def export_gguf_lora(run_dir: str | Path, out_dir: str | Path, base_type: str = "f16", *,
                     progress: Progress | None = None) -> ExportResult:
    """``out_dir``/base.gguf (the base, not merged), adapter.gguf and an Ollama Modelfile
    with ``FROM ./base.gguf`` and ``ADAPTER ./adapter.gguf``."""
    step = progress or no_progress
    dest = check_lora_target(out_dir)
    check_gguf_target(dest / BASE_FILE, base_type)
    paths, config = runs.find_run(run_dir)
    _adapter(paths.root)                      # refuse before loading the base
    check_before_merging(config)
    base = load_merged(paths.root, progress=progress, adapter="none")
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        for leftover in tmp.iterdir():
            leftover.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        written = write_gguf(base, tmp / BASE_FILE, base_type, modelfile=False, progress=progress)
        step(0.95, "writing the LoRA")
        about = write_lora_tensors(paths.root, tmp / ADAPTER_FILE, base.model.config)
        text, notes = modelfile_text(BASE_FILE, TemplateSpec.from_data_config(base.config.data),
                                     base.tokenizer, base.config.generation,
                                     base.model.generation_config)
        (tmp / MODELFILE).write_text(text + f"ADAPTER ./{ADAPTER_FILE}\n", encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
        raise
    step(1.0, "done")
    files = [dest / BASE_FILE, dest / ADAPTER_FILE, dest / MODELFILE]
    return ExportResult(dest, "gguf-lora", files, written.notes + notes,
                        {"base_type": base_type, **about,
                         "adapter_bytes": (dest / ADAPTER_FILE).stat().st_size,
                         "base_bytes": (dest / BASE_FILE).stat().st_size})
