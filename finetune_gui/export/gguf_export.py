"""Write a merged model as a GGUF file for llama.cpp and Ollama.

Uses the gguf package's writer and tensor-name map, as llama.cpp's own converter does: the
architecture's metadata and tensor layout (``gguf_arch``: Llama, Mistral, Qwen2, Gemma,
Phi-3), the tokenizer (``gguf_vocab``) with the run's chat template, 1-D tensors in f32,
matrices in f16 or Q8_0, or llama.cpp's own k-quants (``gguf_quantize``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import models, runs
from ..config import EMBEDDED_MODEL, RunConfig
from ..errors import FinetuneError
from ..messages import Message
from ..templates import TemplateSpec
from .chat_templates import modelfile_text
from .gguf_arch import (SUPPORTED_TYPES, add_hyperparameters, arch_spec, check_rope,
                        gguf_support_message, tensor_data)
from .gguf_quantize import K_QUANTS, check_quantizer, quantize_gguf
from .gguf_vocab import UNSUPPORTED, add_vocab, check_gguf_tokenizer, folder_family
from .exact_weights import ExactWeight, exact_weights, head_tied
from .merged import ExportResult, Merged, Progress, no_progress, load_merged

GGUF_TYPES = ("f16", "q8_0", "q5_k_m", "q4_k_m", "f32")
MODELFILE = "Modelfile"

def check_gguf_target(out_path: str | Path, gguf_type: str = "f16") -> Path:
    """Refuse a bad type, a name not ending in .gguf, or an existing file."""
    if gguf_type not in GGUF_TYPES:
        raise FinetuneError(f"gguf type must be one of {', '.join(GGUF_TYPES)}; got {gguf_type!r}")
    check_quantizer(gguf_type)
    out = Path(out_path)
    if out.suffix.lower() != ".gguf":
        raise FinetuneError(Message("export.gguf_suffix", path=out))
    if out.exists():
        raise FinetuneError(Message("export.file_exists", path=out))
    return out


def _base_config_json(config: RunConfig) -> dict:
    source = models.resolve_source(config.model.name_or_path)
    if not source.is_local:
        return {}
    try:
        return json.loads((Path(source.location) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def gguf_support(config: RunConfig) -> tuple[bool, str]:
    """Whether this run's base can be written as GGUF here, and why not."""
    try:
        model_type = _base_config_json(config).get("model_type")
    except FinetuneError as exc:
        return False, str(exc)
    if model_type is None:
        return True, "the architecture is checked when the export starts"
    if model_type not in SUPPORTED_TYPES:
        return False, gguf_support_message(model_type)
    source = models.resolve_source(config.model.name_or_path)
    if source.is_local and Path(source.location).is_dir():
        kind, why = folder_family(Path(source.location))
        if kind is None:
            return False, UNSUPPORTED.format(kind=why)
    return True, f"{model_type}: supported"


def _source_gguf(config: RunConfig) -> Path | None:
    name = config.model.name_or_path.strip()
    if name == EMBEDDED_MODEL:
        return models.embedded_gguf_path_or_none()
    if name.lower().endswith(".gguf") and Path(name).expanduser().is_file():
        return Path(name).expanduser()
    return None


def _source_pre(config: RunConfig) -> str | None:
    """The pre-tokenizer name the base's own GGUF file names, if the base came as GGUF."""
    import gguf
    source = _source_gguf(config)
    if source is None:
        return None
    field = gguf.GGUFReader(source).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None and field.contents() else None


class _Deferred:
    """A tensor for ``GGUFWriter.add_tensor`` whose values are computed when the writer
    writes it (``tofile``) and dropped right after: the writer never holds the model twice."""

    def __init__(self, hf_name: str, weight: ExactWeight, kind: str, cfg, spec) -> None:
        import gguf
        from gguf.quants import quant_shape_to_byte_shape
        self._make = lambda: _stored_values(hf_name, weight, kind, cfg, spec)
        if kind == "q8_0":
            self.shape = quant_shape_to_byte_shape(weight.shape, gguf.GGMLQuantizationType.Q8_0)
            self.dtype = np.dtype(np.uint8)
        else:
            self.shape = weight.shape
            self.dtype = np.dtype(np.float32 if kind == "f32" else np.float16)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def tofile(self, fout) -> None:
        values = self._make()
        if values.nbytes != self.nbytes:  # the writer has already laid out the file
            raise FinetuneError(f"GGUF tensor size changed while writing ({values.shape})")
        values.tofile(fout)


def _stored_values(hf_name: str, weight: ExactWeight, kind: str, cfg, spec) -> np.ndarray:
    import gguf
    from gguf.quants import quantize
    data = np.ascontiguousarray(tensor_data(hf_name, weight.values(), cfg, spec))
    if kind == "q8_0":
        return quantize(data, gguf.GGMLQuantizationType.Q8_0)
    return data.astype(np.float32 if kind == "f32" else np.float16, copy=False)


def write_gguf(merged: Merged, out_path: str | Path, gguf_type: str = "f16", *,
               modelfile: bool = True, progress: Progress | None = None) -> ExportResult:
    """Write a model in memory — merged, or with its adapter still a branch
    (``load_merged(adapter="branch")``: merged weight by weight while writing) — as GGUF,
    with an Ollama Modelfile beside it. k-quants are written as f16 first, then quantised by
    llama.cpp."""
    import gguf
    step = progress or no_progress
    out = check_gguf_target(out_path, gguf_type)
    model, tokenizer, config = merged.model, merged.tokenizer, merged.config
    cfg = model.config
    spec = arch_spec(cfg)
    check_rope(cfg)
    notes = list(merged.notes)

    step(0.75, "writing GGUF")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    stored = "f16" if gguf_type in K_QUANTS else gguf_type
    written = out.with_name(out.name + ".f16.partial") if gguf_type in K_QUANTS else tmp
    model_arch = getattr(gguf.MODEL_ARCH, spec.arch)
    writer = gguf.GGUFWriter(str(written), gguf.MODEL_ARCH_NAMES[model_arch])
    writer.add_name(f"{Path(config.model.name_or_path).name} + {merged.run_dir.name}")
    writer.add_type("model")
    add_hyperparameters(writer, cfg, spec)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[stored]
    writer.add_file_type(int(file_type))
    if stored == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # Tokenizer: vocabulary, merges or scores, special ids, and the run's chat template.
    pre, vocab_notes = add_vocab(writer, tokenizer, cfg.vocab_size, _source_pre(config))
    notes += vocab_notes

    # Tensors.
    name_map = gguf.get_tensor_name_map(model_arch, cfg.num_hidden_layers)
    tied = head_tied(model)
    counts = {"f32": 0, "f16": 0, "q8_0": 0}
    for hf_name, weight in exact_weights(model).items():
        if tied and hf_name == "lm_head.weight":
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            raise FinetuneError(Message("export.gguf_tensor", name=hf_name))
        kind = ("f32" if len(weight.shape) == 1 or stored == "f32" else
                "q8_0" if stored == "q8_0" and weight.shape[-1] % 32 == 0 else "f16")
        writer.add_tensor(gguf_name, _Deferred(hf_name, weight, kind, cfg, spec),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0 if kind == "q8_0" else None)
        counts[kind] += 1
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()  # each weight merged and converted as it is written
        writer.close()
        if gguf_type in K_QUANTS:
            step(0.9, f"quantising to {gguf_type} with llama.cpp")
            counts = quantize_gguf(written, tmp, gguf_type)
        os.replace(tmp, out)
    except OSError as exc:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise FinetuneError(Message("export.gguf_write", path=out, why=exc)) from None
    finally:
        if written != tmp:
            written.unlink(missing_ok=True)
    files = [out]
    if modelfile:
        text, mf_notes = modelfile_text(out.name, TemplateSpec.from_data_config(config.data),
                                        tokenizer, config.generation, model.generation_config)
        mf = out.with_name(MODELFILE)
        mf.write_text(text, encoding="utf-8")
        files.append(mf)
        notes.extend(mf_notes)
    step(1.0, "done")
    return ExportResult(out, "gguf", files, notes,
                        {"gguf_type": gguf_type, "tensors": counts, "pre_tokenizer": pre,
                         "bytes": out.stat().st_size})


def check_before_merging(config: RunConfig) -> None:
    """Refuse, before minutes of merging, a tokenizer, architecture or rotary scaling the
    writer cannot carry (read from the base's files, weights not loaded)."""
    check_gguf_tokenizer(models.load_tokenizer(config.model))
    source = models.resolve_source(config.model.name_or_path)
    if source.is_local and (Path(source.location) / "config.json").is_file():
        from transformers import AutoConfig
        base = AutoConfig.from_pretrained(source.location)
        arch_spec(models.text_config(base))
        check_rope(models.text_config(base))


def export_gguf(run_dir: str | Path, out_path: str | Path, gguf_type: str = "f16", *,
                modelfile: bool = True, progress: Progress | None = None) -> ExportResult:
    """Merge a run's adapter and write ``out_path`` (.gguf) plus an Ollama ``Modelfile``.

    The weights are merged in float32 (exact) one at a time as they are written (the base
    stays in its own dtype: one copy of the model in memory), then stored as ``gguf_type``:
    f16, q8_0, f32, or llama.cpp's q5_k_m / q4_k_m (for laptops: about 3.5x / 4x smaller
    than f16).
    """
    out = check_gguf_target(out_path, gguf_type)
    _, config = runs.find_run(run_dir)
    check_before_merging(config)
    merged = load_merged(run_dir, progress=progress, adapter="branch")
    return write_gguf(merged, out, gguf_type, modelfile=modelfile, progress=progress)
