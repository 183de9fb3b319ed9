"""A/B of two settings on a preset's real training: tokens/s and time per step, alternated.

    python bench/ab.py --a train.shared_prefix=off --b train.shared_prefix=on \
        [--preset presets/quickstart.yaml] [--steps 19] [--repeats 3] [--set KEY=VALUE ...]
        [--keep DIR]

Each run is the CLI's whole ``train`` command in a fresh process (model load, replay and
tokenizing included in the wall time), A and B back to back in every round so that the
machine's drift hits both alike. From each run's metrics.jsonl: training tokens/s after the
first two steps (warm-up), and seconds of training. Prints each run as JSON, then medians
and the B/A ratio of tokens/s within each round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_once(preset: str, settings: list[str], steps: int, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "finetune_gui", "train", preset,
           "--set", f"train.output_dir={folder}", "--set", f"train.max_steps={steps}"]
    for item in settings:
        cmd += ["--set", item]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - started
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    steps_seen = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                  if '"tokens_seen"' in line]
    first, last = steps_seen[1], steps_seen[-1]
    return {"wall_s": round(wall, 1), "train_s": round(last["time"], 1),
            "tokens_per_s": round((last["tokens_seen"] - first["tokens_seen"]) /
                                  (last["time"] - first["time"]), 1),
            "final_loss": round(last["loss"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", action="append", required=True, help="KEY=VALUE of variant A")
    parser.add_argument("--b", action="append", required=True, help="KEY=VALUE of variant B")
    parser.add_argument("--preset", default=str(ROOT / "presets" / "quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=19, help="19 = one quickstart epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for both")
    parser.add_argument("--keep", help="keep the run folders here (else a temporary folder)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"A": [], "B": []}
    ratios = []
    with tempfile.TemporaryDirectory(prefix="fg-ab-") as tmp:
        tmp = args.keep or tmp
        for round_ in range(args.repeats):
            for name, settings in (("A", args.a), ("B", args.b)):
                result = train_once(args.preset, settings + args.set, args.steps,
                                    Path(tmp) / f"{name}{round_}")
                results[name].append(result)
                print(json.dumps({"variant": name, "settings": settings, **result}), flush=True)
            ratios.append(results["B"][-1]["tokens_per_s"] / results["A"][-1]["tokens_per_s"])
    for name, runs in results.items():
        settings = args.a if name == "A" else args.b
        print(f"{name} ({' '.join(settings)}): tokens/s "
              f"{statistics.median(r['tokens_per_s'] for r in runs):.1f}, train "
              f"{statistics.median(r['train_s'] for r in runs):.1f} s, whole command "
              f"{statistics.median(r['wall_s'] for r in runs):.1f} s")
    print(f"B/A tokens/s per round: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
