"""Packing against today's length-grouped padded batches: tokens/s and eval loss.

    python bench/packing.py [--repeats 3] [--epochs 1] [--data presets/data/ai_basics_en.jsonl]
                            [--set train.precision=fp32 ...]

Runs ``bench/speed.py``'s own engine variant (embedded model, Alpaca template, batch 4,
r 16 on the seven projections, lr 2e-4, one epoch) back to back in fresh processes:
padded batches grouped by length (the default), padded batches in random order, and packed
batches (``train.packing``). Prints each run as JSON, then medians and the ratio of
packed to grouped tokens/s within each round (robust to the machine drifting).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "grouped": ["train.group_by_length=true", "train.packing=false"],
    "random": ["train.group_by_length=false", "train.packing=false"],
    "packed": ["train.group_by_length=true", "train.packing=true"],
}


def run(name: str, args) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "speed.py"), "--variant", "ours", "--data",
           args.data, "--epochs", str(args.epochs)]
    cmd += [f"--set={item}" for item in VARIANTS[name] + args.set]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line[0][7:]) | {"variant": name}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "presets" / "data" / "ai_basics_en.jsonl"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    ratios = []
    for _ in range(args.repeats):
        round_ = {name: run(name, args) for name in VARIANTS}
        for name, result in round_.items():
            results[name].append(result)
        ratios.append(round_["packed"]["tokens_per_second"] /
                      round_["grouped"]["tokens_per_second"])
    for name, runs in results.items():
        print(f"{name:8} tokens/s {statistics.median(r['tokens_per_second'] for r in runs):7.1f}"
              f"  train {statistics.median(r['train_seconds'] for r in runs):6.1f} s"
              f"  eval loss {statistics.median(r['eval_loss'] for r in runs):.4f}")
    print(f"packed / grouped tokens/s, per round: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
