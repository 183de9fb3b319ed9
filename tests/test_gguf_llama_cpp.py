"""Our GGUF files in llama.cpp itself (llama-cpp-python), and its 4/5-bit k-quants.

A 256-wide tiny Llama (k-quants need rows that are a multiple of 256 wide) is tuned for a few
steps and exported; llama.cpp must tokenise the run's prompts as we do and answer as ``chat``
answers (f16), and the k-quant files must be small and close to f16.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import llama2_style_tokenizer, train_tiny
from finetune_gui.chat import ChatEngine
from finetune_gui.errors import FinetuneError
from finetune_gui.export import check_gguf_target, export_gguf, export_gguf_lora
from finetune_gui.export import gguf_quantize

llama_cpp = pytest.importorskip("llama_cpp")

PROMPTS = ["What is code 3?", "What is code 17?", "Write a haiku about rain."]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def wide_llama_run(tmp_path_factory, tok, name: str, **config) -> Path:
    """A 256-wide, 2-layer random Llama with ``tok``'s vocabulary, tuned for a few steps
    (k-quants need rows that are a multiple of 256 wide)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    folder = tmp_path_factory.mktemp(name)
    settings = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                    max_position_embeddings=512, tie_word_embeddings=True,
                    initializer_range=0.2, eos_token_id=tok.eos_token_id,
                    bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**settings, **config})).save_pretrained(folder)
    tok.save_pretrained(folder)
    return train_tiny(folder, tmp_path_factory.mktemp(name + "-run") / "run")


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory, embedded_tokenizer) -> Path:
    return wide_llama_run(tmp_path_factory, embedded_tokenizer, "wide-llama")


@pytest.fixture(scope="module")
def engine(wide_run) -> ChatEngine:
    return ChatEngine.from_run(wide_run)


@pytest.fixture(scope="module")
def gguf_files(wide_run, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gguf")
    return {kind: export_gguf(wide_run, out / kind / "model.gguf", kind)
            for kind in ("f16", "q5_k_m", "q4_k_m")}


def load(path: Path, **kw):
    return gguf_quantize.open_in_llama_cpp(path, n_ctx=512, verbose=False, **kw)


def llama_cpp_tokens(llm, ids: list[int], engine: ChatEngine, max_new_tokens: int) -> list[int]:
    """Greedy in llama.cpp, up to and including the run's stop token."""
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(token)
        if token in engine.stop_ids or len(out) >= max_new_tokens:
            break
    return out


def llama_cpp_answer(llm, ids: list[int], engine: ChatEngine, max_new_tokens: int) -> str:
    tokens = llama_cpp_tokens(llm, ids, engine, max_new_tokens)
    return engine.tokenizer.decode([t for t in tokens if t not in engine.stop_ids],
                                   skip_special_tokens=True).strip()


# How far below the reference's best token llama.cpp's pick may score. A random model's
# logits have near ties, and the chat engine holds the base in bf16 on a CPU with native
# bf16 while the file's matrices are f16: each can flip a near tie, so exact answers compare
# only where the reference is decisive. A wrong tensor, vocabulary or template moves the
# picks by whole logits.
NEAR_TIE = 0.15


def assert_answers_like_chat(llm, engine: ChatEngine, prompt: str, *, use_adapter=True) -> str:
    """Every token llama.cpp picks greedily is the chat engine's greedy pick on the same
    prefix, or within ``NEAR_TIE`` of it; llama.cpp's answer."""
    params = dataclasses.replace(engine.config.generation, repetition_penalty=1.0)
    ids = engine.prompt_ids(user(prompt))
    tokens = llama_cpp_tokens(llm, ids, engine, params.max_new_tokens)
    with engine.using(use_adapter) as model:
        assert_near_greedy(model, ids, tokens, engine.tokenizer)
    return llama_cpp_answer(llm, ids, engine, params.max_new_tokens)


def assert_near_greedy(model, ids: list[int], tokens: list[int], tokenizer) -> None:
    """Teacher-forced (one forward over prompt and answer): each of ``tokens`` scores within
    ``NEAR_TIE`` of ``model``'s best token at its position."""
    import torch
    with torch.inference_mode():
        logits = model(torch.tensor([ids + tokens])).logits[0, len(ids) - 1:-1].float()
    gaps = (logits.max(dim=-1).values - logits[torch.arange(len(tokens)), torch.tensor(tokens)])
    assert gaps.max().item() <= NEAR_TIE, (tokenizer.decode(tokens), gaps.tolist())


def test_llama_cpp_tokenises_and_answers_like_chat(gguf_files, engine):
    llm = load(gguf_files["f16"].path)
    try:
        for prompt in PROMPTS:
            ids = engine.prompt_ids(user(prompt))
            text = engine.tokenizer.decode(ids)
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            assert_answers_like_chat(llm, engine, prompt)
    finally:
        llm.close()


@pytest.mark.parametrize("kind, block", [("q5_k_m", "q5_K"), ("q4_k_m", "q4_K")])
def test_k_quants_are_small_and_close_to_f16(gguf_files, engine, kind, block):
    result, f16 = gguf_files[kind], gguf_files["f16"]
    types = result.extra["tensors"]
    assert types.get(block, 0) >= 10 and "f16" not in types, types
    assert result.extra["bytes"] < 0.5 * f16.extra["bytes"]
    assert "\nFROM ./model.gguf\n" in (result.path.parent / "Modelfile").read_text()
    ids = engine.prompt_ids(user(PROMPTS[0]))
    logits = {}
    for name, path in (("f16", f16.path), (kind, result.path)):
        llm = load(path, logits_all=True)
        try:
            llm.eval(ids)
            logits[name] = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
        finally:
            llm.close()
    a, b = logits["f16"], logits[kind]
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    print(f"\n{kind}: {result.extra['bytes']:,} bytes (f16 {f16.extra['bytes']:,}), "
          f"next-token logits cosine to f16 {cosine:.4f}, types {types}")
    assert cosine > 0.97
    assert int(a.argmax()) == int(b.argmax())


def test_k_quants_are_refused_before_merging_without_llama_cpp(monkeypatch, tmp_path):
    monkeypatch.setattr(gguf_quantize, "_llama_cpp", lambda: None)
    with pytest.raises(FinetuneError, match="pip install llama-cpp-python"):
        check_gguf_target(tmp_path / "model.gguf", "q4_k_m")
    check_gguf_target(tmp_path / "model.gguf", "q8_0")   # ours: no llama.cpp needed


def test_lora_gguf_on_its_base_answers_like_chat(wide_run, engine, tmp_path):
    result = export_gguf_lora(wide_run, tmp_path / "lora")
    base, adapter = tmp_path / "lora" / "base.gguf", tmp_path / "lora" / "adapter.gguf"
    assert result.files == [base, adapter, tmp_path / "lora" / "Modelfile"]
    modelfile = (tmp_path / "lora" / "Modelfile").read_text()
    assert "\nFROM ./base.gguf\n" in modelfile and modelfile.endswith("ADAPTER ./adapter.gguf\n")
    assert result.extra["matrices"] == 14 and result.extra["adapter_bytes"] < 2**20
    tuned = load(base, lora_path=str(adapter))
    plain = load(base)
    try:
        for prompt in PROMPTS:
            assert_answers_like_chat(tuned, engine, prompt)
            assert_answers_like_chat(plain, engine, prompt, use_adapter=False)
    finally:
        tuned.close()
        plain.close()
    with pytest.raises(FinetuneError, match="not an empty folder"):
        export_gguf_lora(wide_run, tmp_path / "lora")


# ---- a Llama 2 / Mistral-style SentencePiece vocabulary ------------------------------------

SAMPLES = ["Hello world", "What is code 3?", "two  spaces and\nnew lines\n", "  lead", "naïve café 你好 🙂",
           "### Instruction:\nSay hi.\n\n### Response:\n"]


@pytest.fixture(scope="module")
def llama2_run(tmp_path_factory) -> Path:
    tok = llama2_style_tokenizer(tmp_path_factory.mktemp("llama2-tokenizer"))
    return wide_llama_run(tmp_path_factory, tok, "llama2-style", num_key_value_heads=4,
                          tie_word_embeddings=False)


def test_sentencepiece_vocabulary_round_trips_through_transformers_and_llama_cpp(llama2_run,
                                                                                  tmp_path):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    engine = ChatEngine.from_run(llama2_run)
    result = export_gguf(llama2_run, tmp_path / "model.gguf", "f16")
    reader = gguf.GGUFReader(result.path)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.add_space_prefix"].contents() is True
    ours = engine.tokenizer
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    llm = load(result.path)
    try:
        for text in SAMPLES:
            ids = ours.encode(text, add_special_tokens=False)
            assert any(ours.convert_ids_to_tokens(i).startswith("<0x") for i in
                       ours.encode(SAMPLES[4], add_special_tokens=False))   # byte fallback used
            assert theirs.encode(text, add_special_tokens=False) == ids, text
            if not text.startswith(" "):
                # llama.cpp always adds the '▁' prefix; transformers 5 skips it when the text
                # starts with a space already (so with Meta's own Llama 2 files too)
                assert llm.tokenize(text.encode(), add_bos=False) == ids, text
            assert theirs.decode(ids) == ours.decode(ids)
        model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf",
                                                     dtype=torch.float32)
        params = dataclasses.replace(engine.config.generation, repetition_penalty=1.0)
        for prompt in PROMPTS:
            assert_answers_like_chat(llm, engine, prompt)
            # transformers reading the same file picks the same tokens
            ids = engine.prompt_ids(user(prompt))
            x = torch.tensor([ids])
            with torch.inference_mode():
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                     do_sample=False, max_new_tokens=params.max_new_tokens,
                                     eos_token_id=engine.stop_ids, pad_token_id=ours.pad_token_id)
            assert_near_greedy(model, ids, llama_cpp_tokens(llm, ids, engine,
                                                            params.max_new_tokens), ours)
            assert_near_greedy(model, ids, out[0, len(ids):].tolist(), ours)
    finally:
        llm.close()


# ---- more architectures: tiny random models of each, tuned, exported, answered by llama.cpp --

def _tiny(model_type: str, tok):
    """A tiny config of each architecture llama.cpp knows (the embedded byte-level vocabulary:
    the vocabulary and the architecture are independent in GGUF)."""
    from transformers import GemmaConfig, Phi3Config, Qwen2Config
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                  max_position_embeddings=512, initializer_range=0.2,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                  pad_token_id=tok.pad_token_id)
    if model_type == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if model_type == "gemma":
        return GemmaConfig(**common, head_dim=16, tie_word_embeddings=True)
    return Phi3Config(**common, original_max_position_embeddings=512, tie_word_embeddings=False)


@pytest.mark.parametrize("model_type, arch", [("qwen2", "qwen2"), ("gemma", "gemma"),
                                              ("phi3", "phi3")])
def test_architectures_answer_in_llama_cpp_as_in_chat(model_type, arch, embedded_tokenizer,
                                                       tmp_path):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM
    folder = tmp_path / "base"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_tiny(model_type, embedded_tokenizer)).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    run = train_tiny(folder, tmp_path / "run")
    engine = ChatEngine.from_run(run)
    result = export_gguf(run, tmp_path / "model.gguf", "f32")
    assert gguf.GGUFReader(result.path).fields["general.architecture"].contents() == arch
    llm = load(result.path)
    try:
        answers = [assert_answers_like_chat(llm, engine, prompt) for prompt in PROMPTS]
        assert any(answers) and len(set(answers)) > 1    # real, prompt-dependent answers
    finally:
        llm.close()
