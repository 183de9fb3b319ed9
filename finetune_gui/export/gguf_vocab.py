"""A tokenizer as llama.cpp stores it in GGUF: the vocabulary, how text is split and merged,
the special ids, and the run's chat template.

Two families, read from the tokenizer's own ``tokenizer.json``:

- byte-level BPE (SmolLM, Llama 3, Qwen2, GPT-2): ``tokenizer.ggml.model = gpt2``, the
  merges, and llama.cpp's name for the pre-tokenizer's split regex;
- SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma):
  ``tokenizer.ggml.model = llama``, no merges but a score per token (llama.cpp merges the
  adjacent pair whose joined piece scores highest, so a piece's score is minus the rank of
  the merge that makes it), ``<0xNN>`` pieces typed BYTE, and the space prefix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import FinetuneError
from ..templates import adds_bos

# llama.cpp's name for a pre-tokenizer, from the split regex of a tokenizer.json.
_KNOWN_SPLITS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")

UNSUPPORTED = ("GGUF export here supports byte-level BPE tokenizers (SmolLM, Llama 3, Qwen) and "
               "SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma); this "
               "model's is {kind}: export the merged model and convert it with llama.cpp's "
               "convert_hf_to_gguf.py")


def family(data: dict) -> tuple[str | None, str]:
    """("gpt2" | "llama", "") for a tokenizer.json we can write, else (None, what it is)."""
    model = data.get("model") or {}
    pre = data.get("pre_tokenizer") or {}
    byte_level = any(p.get("type") == "ByteLevel" for p in [pre] + (pre.get("pretokenizers") or []))
    if model.get("type") == "BPE" and byte_level:
        return "gpt2", ""
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama", ""
    return None, f"a {model.get('type') or 'different'} tokenizer"


def folder_family(folder: Path) -> tuple[str | None, str]:
    """The family of a model folder's tokenizer, without loading it."""
    try:
        return family(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    except FileNotFoundError:
        if (folder / "tokenizer.model").exists():
            return None, "a slow SentencePiece tokenizer (tokenizer.model without tokenizer.json)"
        return "gpt2", ""      # unknown here: checked when the export starts
    except (OSError, ValueError):
        return "gpt2", ""


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise FinetuneError(UNSUPPORTED.format(kind="a slow (SentencePiece) tokenizer"))
    return json.loads(backend.to_str())


def check_gguf_tokenizer(tokenizer) -> str:
    """The family of a loaded tokenizer; raises before any merge when it cannot be written."""
    kind, why = family(_tokenizer_json(tokenizer))
    if kind is None:
        raise FinetuneError(UNSUPPORTED.format(kind=why))
    return kind


def _pre_tokenizer(data: dict, source_pre: str | None) -> tuple[str, str]:
    """llama.cpp's pre-tokenizer name for a byte-level vocabulary, and where it came from."""
    if source_pre:
        return source_pre, "copied from the base's GGUF"
    pre_tok = data.get("pre_tokenizer") or {}
    kinds = [pre_tok] if pre_tok.get("type") != "Sequence" else pre_tok.get("pretokenizers", [])
    types = [k.get("type") for k in kinds]
    if types == ["ByteLevel"] and kinds[0].get("use_regex", True):
        return "gpt-2", "GPT-2 byte-level splitting"
    if types == ["Digits", "ByteLevel"] and kinds[0].get("individual_digits"):
        return "smollm", "byte-level with single digits"
    for k in kinds:
        if k.get("type") == "Split":
            regex = (k.get("pattern") or {}).get("Regex")
            if regex in _KNOWN_SPLITS:
                return _KNOWN_SPLITS[regex], "matched the split regex"
    return "default", "unrecognised pre-tokenizer: llama.cpp will use its default splitting"


def _tokens(tokenizer, vocab_size: int):
    """Every id's piece and type; ids the tokenizer lacks become unused padding pieces."""
    import gguf
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _space_prefix(data: dict) -> bool:
    """Whether the tokenizer puts '▁' before the text (Metaspace prepend, or a Prepend
    normalizer as older Llama 2 files have)."""
    parts = []
    for key in ("pre_tokenizer", "normalizer"):
        node = data.get(key) or {}
        parts += [node] + list(node.get("pretokenizers") or node.get("normalizers") or [])
    for node in parts:
        if node.get("type") == "Metaspace":
            return node.get("prepend_scheme", "always") != "never" and \
                node.get("add_prefix_space", True)
        if node.get("type") == "Prepend":
            return True
    return False


def add_vocab(writer, tokenizer, vocab_size: int,
              source_pre: str | None = None) -> tuple[str, list[str]]:
    """Write the tokenizer into a GGUF writer: the pre-tokenizer name, and notes about
    anything llama.cpp may do differently."""
    import gguf
    kind = check_gguf_tokenizer(tokenizer)
    data = _tokenizer_json(tokenizer)
    tokens, types = _tokens(tokenizer, vocab_size)
    notes = []
    writer.add_tokenizer_model(kind)
    if kind == "gpt2":
        pre, why = _pre_tokenizer(data, source_pre)
        if pre == "default":
            notes.append(why)
        writer.add_tokenizer_pre(pre)
        merges = [m if isinstance(m, str) else " ".join(m)
                  for m in (data.get("model") or {}).get("merges", [])]
        writer.add_token_merges(merges)
        writer.add_add_space_prefix(False)
    else:
        pre = "default"
        writer.add_tokenizer_pre(pre)
        rank = {}
        for i, merge in enumerate((data.get("model") or {}).get("merges", [])):
            rank.setdefault("".join(merge.split(" ") if isinstance(merge, str) else merge), i)
        scores = []
        unk = tokenizer.unk_token_id
        for i, (piece, kind_) in enumerate(zip(tokens, types)):
            if kind_ == gguf.TokenType.NORMAL and _BYTE_PIECE.fullmatch(piece):
                types[i] = gguf.TokenType.BYTE
            elif i == unk:
                types[i] = gguf.TokenType.UNKNOWN
            scores.append(-float(rank[piece]) if piece in rank else 0.0)
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(_space_prefix(data))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    for name in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(int(token_id))
    writer.add_add_bos_token(adds_bos(tokenizer))
    writer.add_chat_template(tokenizer.chat_template)
    return pre, notes
