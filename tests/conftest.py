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


def kill_9_then_resume(config, tmp_path: Path, *, steps: int = 24, wait_s: float = 180,
                       before_resume=None):
    """Train ``config`` in a real CLI process, SIGKILL it once a checkpoint exists, then
    ``--resume`` it to the end (``before_resume(paths)`` runs in between). Asserts the kill left a resumable run and the resume
    continued from that checkpoint with one metrics point per step; returns
    ``(run paths, the checkpoint killed at, the resume's CompletedProcess)``."""
    import signal
    import subprocess
    import sys
    import time
    from finetune_gui.runs import RunPaths, read_metrics, read_state
    config.train.max_steps = steps
    config.train.save_steps = 3
    saved = tmp_path / "run.yaml"
    config.save(saved)
    paths = RunPaths(Path(config.train.output_dir))
    command = [sys.executable, "-m", "finetune_gui", "train", str(saved)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + wait_s
        while paths.latest_checkpoint() is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = paths.latest_checkpoint()
    assert killed_at is not None and read_state(paths)["status"] == "running"
    if before_resume is not None:
        before_resume(paths)
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {killed_at.name}" in resumed.stdout
    logged = [r["step"] for r in read_metrics(paths) if "loss" in r]
    assert logged == list(range(1, steps + 1)), "one point per step, no gap and no duplicate"
    assert read_state(paths)["status"] == "finished"
    return paths, killed_at, resumed


def train_tiny(model_dir: Path, out: Path, **overrides) -> Path:
    """A finished run of the tiny model on 24 'code N' rows (12 steps, a few seconds)."""
    from finetune_gui.config import RunConfig
    from finetune_gui.training import TrainingJob
    rows = [{"instruction": f"What is code {i}?", "input": "",
             "output": f"Code {i} is blue {i % 3} square."} for i in range(24)]
    data = write_jsonl(out.parent / f"{out.name}-codes.jsonl", rows)
    cfg = RunConfig()
    settings = {"model.name_or_path": str(model_dir), "data.path": str(data),
                "data.template": "alpaca", "lora.r": 8, "lora.alpha": 16, "lora.dropout": 0.0,
                "train.output_dir": str(out), "train.max_steps": 12, "train.learning_rate": 1e-2,
                "train.batch_size": 4, "train.max_seq_len": 128, "train.warmup_ratio": 0.0,
                "train.lr_scheduler": "constant", "train.save_steps": 12,
                "generation.max_new_tokens": 32, **overrides}
    for key, value in settings.items():
        cfg.set(key, value)
    state = TrainingJob(cfg).run()
    assert state.status == "finished", state.message
    return out


def llama2_style_tokenizer(folder: Path):
    """A SentencePiece-style BPE (byte fallback, '▁' for spaces, <0xNN> byte pieces) trained
    on the shipped English data, in transformers' own Llama tokenizer."""
    import json
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer
    texts = [row["instruction"] + " " + row["output"] for row in map(
        json.loads, (ROOT / "presets/data/ai_basics_en.jsonl").read_text().splitlines())]
    raw = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                                       special_tokens=["<unk>", "<s>", "</s>"]))
    learned = json.loads(raw.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(folder)
    return tokenizer
