"""Shared fixtures: a tiny random Llama with the embedded model's real tokenizer.

Most tests train this model (a few MB, seconds per run); a few end-to-end tests use the
embedded SmolLM2-135M itself and are marked ``embedded``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=UserWarning)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from finetune_gui.config import ModelConfig
    from finetune_gui.models import load_tokenizer
    return load_tokenizer(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    """A 2-layer, 64-wide Llama with random weights, saved as safetensors with a tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=len(embedded_tokenizer), max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.2,
                         eos_token_id=embedded_tokenizer.eos_token_id,
                         bos_token_id=embedded_tokenizer.bos_token_id,
                         pad_token_id=embedded_tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def ui_handler(demo, module: str, name: str):
    """The event handler ``name`` defined in ``finetune_gui.ui.<module>`` of a built app."""
    found = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name
             and getattr(f.fn, "__module__", "") == f"finetune_gui.ui.{module}"]
    assert found, f"no handler {module}.{name}"
    return found[0]


@pytest.fixture
def codes_data(tmp_path) -> Path:
    """A small, very learnable Alpaca dataset."""
    rows = [{"instruction": f"What is code {i}?", "input": "",
             "output": f"Code {i} is blue {i % 3} square."} for i in range(24)]
    return write_jsonl(tmp_path / "codes.jsonl", rows)


@pytest.fixture
def tiny_config(tiny_model_dir, codes_data, tmp_path):
    """A run config that trains the tiny model for a handful of steps."""
    from finetune_gui.config import RunConfig
    cfg = RunConfig()
    cfg.model.name_or_path = str(tiny_model_dir)
    cfg.data.path = str(codes_data)
    cfg.data.template = "alpaca"
    cfg.lora.r = 8
    cfg.lora.alpha = 16
    cfg.lora.dropout = 0.0
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.train.max_steps = 12
    cfg.train.learning_rate = 1e-2
    cfg.train.batch_size = 4
    cfg.train.max_seq_len = 128
    cfg.train.warmup_ratio = 0.0
    cfg.train.lr_scheduler = "constant"
    cfg.train.save_steps = 4
    return cfg
