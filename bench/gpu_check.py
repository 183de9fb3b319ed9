"""The GPU check: the chapter's QLoRA recipe on a random-weight 7B-shaped model, one GPU.

    python bench/gpu_check.py                  # on the lent H200 / any CUDA GPU, ~5-8 min
    python bench/gpu_check.py --shape tiny     # the same path on a CPU in seconds (tests)

For each variant (speed-ups ``all`` = Liger where installed, then ``safe``) it trains a few
steps through ``TrainingJob`` — the app's own path — and prints one JSON line: tokens/s,
MFU (6 x parameters x tokens/s over the card's bf16 peak), the peak VRAM allocated and
reserved (torch) and used (nvidia-smi, the whole card) against the estimator's figure for
the same config, and the plan it ran with. ``--export`` then merges and writes GGUF and
prints each one's peak RSS/VRAM. Weights are random (no download on the lent machine), the
tokenizer is the embedded model's; 4-bit needs bitsandbytes and falls back to a 16-bit
base, saying so, where it is missing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {  # Llama-2-7B's shape (vocab: the embedded tokenizer's); tiny: for CPU tests
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
}
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
                   "A10": 125e12, "4090": 165e12, "3090": 71e12, "T4": 65e12}


def make_model(shape: str, folder: Path) -> Path:
    """Random weights in the given shape, saved as bf16 safetensors with a tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune_gui.config import ModelConfig
    from finetune_gui.models import load_tokenizer
    tokenizer = load_tokenizer(ModelConfig())
    config = LlamaConfig(**SHAPES[shape], vocab_size=len(tokenizer), max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def smi_used_bytes() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=10)
        return int(out.stdout.split()[0]) * 2 ** 20
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def peak_flops() -> float | None:
    import torch
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_FLOPS.items() if k in name), None)


def run_variant(model_dir: Path, out: Path, speedups: str, steps: int, quantization: str,
                seq_len: int, batch: int) -> dict:
    """The chapter's recipe (NF4 + double quant, r=16, alpha=32, dropout 0.05, seven
    projections, lr 2e-4, paged AdamW) for ``steps`` steps, through TrainingJob."""
    import torch

    from finetune_gui.config import RunConfig
    from finetune_gui.estimate import estimate
    from finetune_gui.plan import resolve_plan
    from finetune_gui.training import TrainingJob
    config = RunConfig()
    for key, value in {"model.name_or_path": str(model_dir), "model.quantization": quantization,
                       "data.path": str(ROOT / "presets/data/ai_basics_en.jsonl"),
                       "data.template": "alpaca", "lora.r": 16, "lora.alpha": 32,
                       "lora.dropout": 0.05, "train.learning_rate": 2e-4,
                       "train.batch_size": batch, "train.max_seq_len": seq_len,
                       "train.max_steps": steps, "train.save_steps": 10_000,
                       "train.speedups": speedups, "train.output_dir": str(out),
                       "train.logging_steps": 1, "train.seed": 0}.items():
        config.set(key, value)
    config.set("lora.target_modules", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"])
    est = estimate(config)
    plan = resolve_plan(config)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    state = TrainingJob(config).run()
    result = {"variant": f"speedups={speedups}", "quantization": quantization,
              "status": state.status, "message": state.message[:300],
              "wall_seconds": round(time.time() - started, 1),
              "train_seconds": round(state.train_seconds or 0.0, 1),
              "tokens_per_second": round(state.tokens_per_second or 0.0, 1),
              "plan": plan.summary(), "plan_notes": plan.notes,
              "speedup_log": [line for line in state.log if "speed-up" in line or "Liger" in line],
              "estimate_gib": round(est.peak_bytes / 2 ** 30, 2),
              "estimate_device": est.device, "losses": [round(x, 4) for _, x in state.loss][:8]}
    flops = peak_flops()
    if flops and state.tokens_per_second:
        result["mfu"] = round(6 * state.total_params * state.tokens_per_second / flops, 4)
    if torch.cuda.is_available():
        allocated = torch.cuda.max_memory_allocated()
        result.update(vram_allocated_gib=round(allocated / 2 ** 30, 2),
                      vram_reserved_gib=round(torch.cuda.max_memory_reserved() / 2 ** 30, 2),
                      estimate_error=round(est.peak_bytes / allocated - 1, 3))
        used = smi_used_bytes()
        if used:
            result["nvidia_smi_gib"] = round(used / 2 ** 30, 2)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    return result


def export_peaks(run: Path, out: Path) -> list[dict]:
    import torch

    from finetune_gui.export import export_gguf, export_merged
    results = []
    for name, call in (("merged", lambda: export_merged(run, out / "merged")),
                       ("gguf f16", lambda: export_gguf(run, out / "model.gguf", "f16",
                                                        modelfile=False))):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.time()
        call()
        results.append({"export": name, "seconds": round(time.time() - started, 1),
                        "peak_rss_gib": round(resource.getrusage(
                            resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
                        "vram_peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                        if torch.cuda.is_available() else 0.0})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--variants", default="all,safe", help="train.speedups levels to run")
    parser.add_argument("--export", action="store_true", help="also merge and write GGUF")
    args = parser.parse_args()
    import importlib.util

    import torch
    quantization = "4bit" if importlib.util.find_spec("bitsandbytes") and \
        torch.cuda.is_available() else "none"
    print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                      "quantization": quantization,
                      "note": None if quantization == "4bit" else
                      "no bitsandbytes (or no GPU): a 16-bit base instead of the chapter's NF4"}),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp_path = Path(tmp)
        started = time.time()
        model_dir = make_model(args.shape, tmp_path / "model")
        print(json.dumps({"model_seconds": round(time.time() - started, 1)}), flush=True)
        last = None
        for level in args.variants.split(","):
            last = tmp_path / f"run-{level}"
            print(json.dumps(run_variant(model_dir, last, level, args.steps, quantization,
                                         args.seq_len, args.batch)), flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if args.export and last is not None:
            for line in export_peaks(last, tmp_path / "export"):
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
