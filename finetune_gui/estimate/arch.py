"""Architecture configs without weights: find one, normalise it, list its modules.

Where a config comes from (``model.name_or_path``):

* the embedded alias ``smollm2-135m-instruct`` ->
  ``presets/architectures/smollm2-135m-instruct.json`` (never converts the GGUF);
* a Hub id ``org/Name`` -> the shipped file ``presets/architectures/<org>__<name>.json`` (the id
  lowercased, ``/`` written as ``__``), or an alias listed in ``presets/architectures/aliases.json``
  (instruct/chat variants that share a base architecture), or a ``config.json`` already in the local
  Hugging Face cache. Nothing is downloaded;
* a folder -> its ``config.json``; a ``.json`` file -> that file; a ``.gguf`` file -> its metadata.

``modules(arch)`` lists every parameter-holding module with its full dotted name, exactly as
transformers names them, so that LoRA target matching and parameter counts follow peft's own rules.
Families written out by hand (fast, no torch import): llama, mistral, qwen2, qwen3, gemma, gemma2,
phi3. Any other ``model_type`` transformers knows is instantiated once on the meta device
(no memory, no weights) and its modules are read from that; the result is cached.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EMBEDDED_MODEL
from ..errors import ConfigError, ModelLoadError
from ..messages import Message

PRESET_DIR = Path(__file__).resolve().parents[2] / "presets" / "architectures"
ALIASES_FILE = "aliases.json"
HAND_WRITTEN = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")
# transformers 5 picks eager attention for these by default (Gemma-2: soft-capped attention logits)
EAGER_BY_DEFAULT = ("gemma2",)


@dataclass(frozen=True)
class Module:
    """One parameter-holding module. ``kind``: linear, embedding or other (norms and the like)."""
    name: str
    kind: str
    in_features: int = 0   # linear: in; embedding: num_embeddings
    out_features: int = 0  # linear: out; embedding: embedding_dim
    params: tuple[tuple[str, int], ...] = ()  # (parameter name, numel), counted here
    tied: tuple[tuple[str, int], ...] = ()    # parameters shared with an earlier module

    @property
    def numel(self) -> int:
        return sum(n for _, n in self.params)

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass
class Arch:
    """The sizes the estimate needs, read from a transformers config dict."""
    model_type: str
    architecture: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tie: bool
    source: str
    norms_per_layer: int = 2
    qk_norm: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    logit_softcap: bool = False
    attn_softcap: bool = False
    attn_implementation: str = "sdpa"
    config: dict = field(default_factory=dict, repr=False)
    _modules: tuple[Module, ...] | None = field(default=None, repr=False)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def modules(self) -> tuple[Module, ...]:
        if self._modules is None:
            if self.model_type in HAND_WRITTEN:
                self._modules = tuple(_hand_written_modules(self))
            else:
                self._modules = _meta_modules(json.dumps(self.config, sort_keys=True))
        return self._modules


# ---- finding a config ------------------------------------------------------------------------

def preset_name(hub_id: str) -> str:
    """File stem of a shipped architecture for a Hub id: lowercased, '/' written as '__'."""
    return hub_id.strip().lower().replace("/", "__")


def shipped_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json") if p.name != ALIASES_FILE)


@functools.lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    path = PRESET_DIR / ALIASES_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k.lower(): v for k, v in data.items() if not k.startswith("_")}


def find_config(name_or_path: str) -> tuple[dict, str]:
    """The config dict for ``model.name_or_path`` and a description of where it came from."""
    text = (name_or_path or "").strip()
    if not text:
        raise ModelLoadError(Message("model.empty"))
    if text == EMBEDDED_MODEL:
        shipped = PRESET_DIR / f"{EMBEDDED_MODEL}.json"
        return _read_json(shipped), f"{EMBEDDED_MODEL} (shipped preset)"
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(Message("model.no_file", path=path))
        cfg = _gguf_config(str(path.resolve()), path.stat().st_mtime)
        return cfg, f"{path.name} (GGUF metadata)"
    if text.lower().endswith(".json"):
        if not path.is_file():
            raise ModelLoadError(Message("model.no_config_file", path=path))
        return _read_json(path), str(path)
    if path.exists() or text.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelLoadError(Message("model.no_folder", path=path))
        if not (path / "config.json").is_file():
            raise ModelLoadError(Message("model.no_config", path=path))
        return _read_json(path / "config.json"), str(path / "config.json")
    stem = preset_name(text)
    stem = _aliases().get(text.lower(), stem)
    shipped = PRESET_DIR / f"{stem}.json"
    if shipped.is_file():
        return _read_json(shipped), f"{text} (shipped preset {shipped.name})"
    cached = _hub_cache_config(text)
    if cached is not None:
        return _read_json(cached), f"{text} (Hugging Face cache)"
    if text.count("/") != 1:
        raise ModelLoadError(Message("model.not_found_estimate", name=text))
    raise ModelLoadError(Message("model.no_architecture", name=text))


def _hub_cache_config(hub_id: str) -> Path | None:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots.append(hf_home / "hub")
    folder = "models--" + hub_id.replace("/", "--")
    for root in roots:
        found = sorted((root / folder / "snapshots").glob("*/config.json"))
        if found:
            return found[-1]
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(Message("model.config_unreadable", path=path, why=exc)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(Message("file.line_json", path=path, where=f"line {exc.lineno}",
                                  why=exc.msg, column=exc.colno)) from None
    if not isinstance(data, dict):
        raise ConfigError(Message("model.config_not_object", path=path))
    return data


_GGUF_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
                     "gemma": "gemma", "gemma2": "gemma2", "phi3": "phi3"}


@functools.lru_cache(maxsize=8)
def _gguf_config(path: str, _mtime: float) -> dict:
    """A transformers-style config from GGUF metadata (sizes only; tied when there is no output)."""
    try:
        import gguf
    except ImportError:
        raise ModelLoadError(Message("model.no_gguf_package")) from None
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises plain ValueError/struct errors on a bad file
        raise ModelLoadError(Message("model.gguf_metadata", path=path, why=exc)) from None

    def get(key, default=None):
        fld = reader.fields.get(key)
        return fld.contents() if fld is not None else default

    arch = get("general.architecture")
    if arch not in _GGUF_MODEL_TYPES:
        raise ModelLoadError(Message("model.gguf_arch", path=path, arch=arch,
                                     supported=", ".join(_GGUF_MODEL_TYPES)))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = get(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    heads = get(f"{arch}.attention.head_count")
    hidden = get(f"{arch}.embedding_length")
    cfg = {
        "architectures": [f"{arch.capitalize()}ForCausalLM"],
        "model_type": _GGUF_MODEL_TYPES[arch],
        "hidden_size": hidden,
        "intermediate_size": get(f"{arch}.feed_forward_length"),
        "num_hidden_layers": get(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get(f"{arch}.attention.head_count_kv", heads),
        "head_dim": get(f"{arch}.attention.key_length", hidden // heads if heads else None),
        "vocab_size": vocab,
        "max_position_embeddings": get(f"{arch}.context_length"),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }
    missing = [k for k, v in cfg.items() if v is None]
    if missing:
        raise ModelLoadError(Message("model.gguf_lacks", path=path, names=", ".join(missing)))
    return cfg


# ---- normalising -------------------------------------------------------------------------------

def load_arch(name_or_path: str) -> Arch:
    """Find and normalise the architecture of ``model.name_or_path`` (cached per source)."""
    cfg, source = find_config(name_or_path)
    return _arch_cached(json.dumps(cfg, sort_keys=True), source)


@functools.lru_cache(maxsize=64)
def _arch_cached(cfg_json: str, source: str) -> Arch:
    return arch_from_dict(json.loads(cfg_json), source=source)


def arch_from_dict(cfg: dict, *, source: str = "config") -> Arch:
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]
    model_type = cfg.get("model_type")
    if not model_type:
        raise ConfigError(Message("model.no_model_type", source=source))

    def need(*keys):
        for key in keys:
            if cfg.get(key) is not None:
                return cfg[key]
        raise ConfigError(Message("model.config_lacks", source=source, key=keys[0]))

    hidden = int(need("hidden_size", "n_embd", "d_model"))
    heads = int(need("num_attention_heads", "n_head"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    intermediate = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
    tie_default = model_type in ("gemma", "gemma2", "gemma3_text")
    arch = Arch(
        model_type=model_type,
        architecture=(cfg.get("architectures") or [model_type])[0],
        hidden=hidden, intermediate=intermediate,
        layers=int(need("num_hidden_layers", "n_layer")),
        heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        vocab=int(need("vocab_size")),
        tie=bool(cfg.get("tie_word_embeddings", tie_default)),
        source=source,
        norms_per_layer=4 if model_type in ("gemma2", "gemma3_text") else 2,
        qk_norm=model_type in ("qwen3", "gemma3_text"),
        fused_qkv=model_type == "phi3",
        fused_gate_up=model_type == "phi3",
        logit_softcap=bool(cfg.get("final_logit_softcapping")),
        attn_implementation=cfg.get("_attn_implementation") or cfg.get("attn_implementation")
        or ("eager" if model_type in EAGER_BY_DEFAULT else "sdpa"),
        attn_softcap=bool(cfg.get("attn_logit_softcapping")),
        config=cfg,
    )
    for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "vocab"):
        if getattr(arch, name) <= 0:
            raise ConfigError(Message("model.config_positive", source=source, name=name))
    if heads % kv_heads:
        raise ConfigError(Message("model.config_heads", source=source, heads=heads,
                                  kv_heads=kv_heads))
    return arch


# ---- module inventories ----------------------------------------------------------------------

def _linear(name: str, fin: int, fout: int, bias: bool = False) -> Module:
    params = (("weight", fin * fout),) + ((("bias", fout),) if bias else ())
    return Module(name, "linear", fin, fout, params)


def _hand_written_modules(a: Arch):
    cfg, h, mt = a.config, a.hidden, a.model_type
    attn_bias = bool(cfg.get("attention_bias", False))
    qkv_bias = True if mt == "qwen2" else attn_bias
    o_bias = False if mt == "qwen2" else attn_bias
    mlp_bias = bool(cfg.get("mlp_bias", False)) if mt == "llama" else False
    yield Module("model.embed_tokens", "embedding", a.vocab, h, (("weight", a.vocab * h),))
    for i in range(a.layers):
        p = f"model.layers.{i}."
        if a.fused_qkv:  # Phi-3 defines o_proj first
            yield _linear(p + "self_attn.o_proj", a.q_dim, h, o_bias)
            yield _linear(p + "self_attn.qkv_proj", h, a.q_dim + 2 * a.kv_dim, qkv_bias)
        else:
            yield _linear(p + "self_attn.q_proj", h, a.q_dim, qkv_bias)
            yield _linear(p + "self_attn.k_proj", h, a.kv_dim, qkv_bias)
            yield _linear(p + "self_attn.v_proj", h, a.kv_dim, qkv_bias)
            yield _linear(p + "self_attn.o_proj", a.q_dim, h, o_bias)
        if a.qk_norm:
            yield Module(p + "self_attn.q_norm", "other", params=(("weight", a.head_dim),))
            yield Module(p + "self_attn.k_norm", "other", params=(("weight", a.head_dim),))
        if a.fused_gate_up:
            yield _linear(p + "mlp.gate_up_proj", h, 2 * a.intermediate, mlp_bias)
        else:
            yield _linear(p + "mlp.gate_proj", h, a.intermediate, mlp_bias)
            yield _linear(p + "mlp.up_proj", h, a.intermediate, mlp_bias)
        yield _linear(p + "mlp.down_proj", a.intermediate, h, mlp_bias)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if a.norms_per_layer == 4:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for norm in norms:
            yield Module(p + norm, "other", params=(("weight", h),))
    yield Module("model.norm", "other", params=(("weight", h),))
    # Tied: lm_head is its own module but shares the embedding's weight (counted once).
    head = (("weight", a.vocab * h),)
    yield Module("lm_head", "linear", h, a.vocab, () if a.tie else head, head if a.tie else ())


@functools.lru_cache(maxsize=16)
def _meta_modules(cfg_json: str) -> tuple[Module, ...]:
    """Any other architecture: build it on the meta device once and read its modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = json.loads(cfg_json)
    model_type = cfg.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **cfg)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError, ImportError) as exc:
        raise ModelLoadError(Message("model.unbuildable", kind=model_type,
                                     why=str(exc).splitlines()[0][:200])) from None
    seen: set[int] = set()
    out = []
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        own, tied = [], []
        for pname, param in module.named_parameters(recurse=False):
            (tied if id(param) in seen else own).append((pname, param.numel()))
            seen.add(id(param))
        own, tied = tuple(own), tuple(tied)
        if module is output and name != "lm_head":
            raise ModelLoadError(Message("model.output_layer", kind=model_type, name=name))
        if isinstance(module, torch.nn.Linear):
            out.append(Module(name, "linear", module.in_features, module.out_features, own, tied))
        elif type(module).__name__ == "Conv1D":  # GPT-2 style linear; peft's all-linear takes it
            fin, fout = module.weight.shape
            out.append(Module(name, "linear", int(fin), int(fout), own, tied))
        elif isinstance(module, torch.nn.Embedding):
            out.append(Module(name, "embedding", module.num_embeddings, module.embedding_dim,
                              own, tied))
        elif own or tied:
            out.append(Module(name, "other", params=own, tied=tied))
    return tuple(out)


def linear_names_from_config(arch: Arch | dict | str) -> list[str]:
    """Distinct leaf names of the linear layers LoRA can target (lm_head left out), in model order.

    Accepts an ``Arch``, a config dict, or anything ``model.name_or_path`` accepts. The UI uses it
    for target-module checkboxes before a model is loaded.
    """
    if isinstance(arch, str):
        arch = load_arch(arch)
    elif isinstance(arch, dict):
        arch = arch_from_dict(arch)
    names: list[str] = []
    for m in arch.modules():
        if m.kind == "linear" and m.leaf != "lm_head" and m.leaf not in names:
            names.append(m.leaf)
    return names


MLP_BLOCKS = ("mlp", "feed_forward", "ffn")


def mlp_linear_names(arch: Arch | str) -> list[str]:
    """Leaf names of the linear layers inside the feed-forward blocks (``...mlp.up_proj``),
    in model order: where the small-data recipe puts its adapters. A name that also names
    a layer outside them (GPT-2's ``c_proj``) is left out: targets are matched by leaf."""
    if isinstance(arch, str):
        arch = load_arch(arch)
    inside: list[str] = []
    outside: set[str] = set()
    for m in arch.modules():
        if m.kind != "linear" or m.leaf == "lm_head":
            continue
        if set(m.name.split(".")[:-1]) & set(MLP_BLOCKS):
            if m.leaf not in inside:
                inside.append(m.leaf)
        else:
            outside.add(m.leaf)
    return [name for name in inside if name not in outside]
