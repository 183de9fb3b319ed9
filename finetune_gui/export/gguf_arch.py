"""What differs between the architectures our GGUF writer knows, as llama.cpp's own
converter (convert_hf_to_gguf.py) writes them: one table, read by ``write_gguf``.

- llama / mistral: llama.cpp's LLaMA graph, whose rotary layout interleaves the halves of
  each head, so the q and k rows are permuted (transformers' GGUF loader undoes it);
- qwen2: q/k/v biases, NeoX rotary (no permutation);
- gemma (Gemma 1): norm weights stored as 1 + w, head size always written, output tied to
  the embeddings;
- phi3 (Phi-3 mini/medium, 4k context): fused qkv and gate_up matrices as they are, the
  rotary dimensions and the original context; the 128k "longrope" variants are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FinetuneError
from ..messages import Message


@dataclass(frozen=True)
class ArchSpec:
    arch: str                 # gguf.MODEL_ARCH member name
    permute_qk: bool = False
    norm_plus_one: bool = False
    always_head_size: bool = False
    phi3: bool = False


ARCHS = {
    "llama": ArchSpec("LLAMA", permute_qk=True),
    "mistral": ArchSpec("LLAMA", permute_qk=True),
    "qwen2": ArchSpec("QWEN2"),
    "gemma": ArchSpec("GEMMA", norm_plus_one=True, always_head_size=True),
    "phi3": ArchSpec("PHI3", phi3=True),
}
SUPPORTED_TYPES = tuple(ARCHS)


def gguf_support_message(model_type: str) -> str:
    return (f"GGUF export here supports {', '.join(SUPPORTED_TYPES)} models, not "
            f"'{model_type}': export the merged model and convert it with llama.cpp's "
            "convert_hf_to_gguf.py")


def arch_spec(cfg) -> ArchSpec:
    spec = ARCHS.get(cfg.model_type)
    if spec is None:
        raise FinetuneError(gguf_support_message(cfg.model_type))
    return spec


def _rope(cfg) -> tuple[float, dict]:
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return float(theta), params


def check_rope(cfg) -> None:
    """Refuse rotary scalings this writer does not carry (before writing anything)."""
    _, rope = _rope(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    if rope_type not in ("default", "linear") or rope.get("long_factor"):
        raise FinetuneError(Message("export.gguf_rope", kind=rope_type))


def add_hyperparameters(writer, cfg, spec: ArchSpec) -> None:
    """The architecture's numbers, under llama.cpp's keys."""
    import gguf
    theta, rope = _rope(cfg)
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    if spec.phi3:
        rotary = int(rope.get("partial_rotary_factor",
                              getattr(cfg, "partial_rotary_factor", 1.0)) * cfg.hidden_size)
        writer.add_rope_dimension_count(rotary // n_head)
        writer.add_rope_scaling_orig_ctx_len(int(
            rope.get("original_max_position_embeddings",
                     getattr(cfg, "original_max_position_embeddings", None)
                     or cfg.max_position_embeddings)))
        writer.add_sliding_window(int(getattr(cfg, "sliding_window", None) or 0))
    else:
        writer.add_rope_dimension_count(head_dim)
    if spec.always_head_size or head_dim != cfg.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if (rope.get("rope_type", rope.get("type")) or "default") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))


def tensor_data(hf_name: str, data, cfg, spec: ArchSpec):
    """A tensor's values as llama.cpp stores them for this architecture."""
    if spec.norm_plus_one and hf_name.endswith("norm.weight"):
        return data + 1
    if spec.permute_qk:
        n_head = cfg.num_attention_heads
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
        if hf_name.endswith("q_proj.weight"):
            return rotary_rows(data, n_head, n_head)
        if hf_name.endswith("k_proj.weight"):
            return rotary_rows(data, n_head, n_kv)
    return data


def rotary_rows(w, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's q/k row order (rotary halves interleaved), as its converter writes them."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
