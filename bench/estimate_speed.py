"""How fast is an estimate? Target: under 50 ms once the model's config is read (a UI slider).

    python bench/estimate_speed.py

Prints milliseconds per ``estimate()`` for a few models and settings (the first call includes
reading and parsing the architecture config; later calls reuse it, as the UI does), and the time
of the two searches ``max_seq_len_fit`` / ``max_batch_size_fit``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune_gui.config import RunConfig  # noqa: E402
from finetune_gui.estimate import (COMMON_GPUS, estimate, max_batch_size_fit,  # noqa: E402
                                   max_seq_len_fit)

CASES = {
    "smollm2-135m-instruct, CPU defaults": {"model.device": "cpu"},
    "Llama-2-7B QLoRA q/v r=8, T4": {"model.name_or_path": "meta-llama/Llama-2-7b-hf",
                                     "model.quantization": "4bit",
                                     "lora.target_modules": ["q_proj", "v_proj"], "lora.r": 8},
    "Llama-3-8B QLoRA all-linear r=16 + DoRA, T4": {
        "model.name_or_path": "meta-llama/Meta-Llama-3-8B", "model.quantization": "4bit",
        "lora.use_dora": True, "train.gradient_checkpointing": True},
    "Gemma-2-9B LoRA, lm_head saved, T4": {"model.name_or_path": "google/gemma-2-9b",
                                           "lora.modules_to_save": ["lm_head"]},
    "LLaMA-65B QLoRA all-linear r=64, T4": {"model.name_or_path": "huggyllama/llama-65b",
                                            "model.quantization": "4bit", "lora.r": 64},
}


def per_call_ms(fn, repeat: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1000


def main() -> None:
    t4 = COMMON_GPUS["T4 16GB"]
    print(f"{'case':48s} {'first call':>11s} {'per estimate':>13s} {'seq search':>11s} "
          f"{'batch search':>13s}")
    worst = 0.0
    for name, values in CASES.items():
        cfg = RunConfig()
        for key, value in values.items():
            cfg.set(key, value)
        gpu = None if values.get("model.device") == "cpu" else t4
        t0 = time.perf_counter()
        estimate(cfg, gpu_bytes=gpu)
        first = (time.perf_counter() - t0) * 1000
        warm = per_call_ms(lambda: estimate(cfg, gpu_bytes=gpu))
        seq = per_call_ms(lambda: max_seq_len_fit(cfg, t4), repeat=20)
        batch = per_call_ms(lambda: max_batch_size_fit(cfg, t4), repeat=20)
        worst = max(worst, warm)
        print(f"{name:48s} {first:9.1f}ms {warm:11.2f}ms {seq:9.1f}ms {batch:11.1f}ms")
    print(f"\nslowest estimate once the config is read: {worst:.2f} ms "
          f"({'under' if worst < 50 else 'OVER'} the 50 ms target)")


if __name__ == "__main__":
    main()
