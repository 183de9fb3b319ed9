"""The LoRA tab's memory estimate against a real run's peak, on this machine.

    python bench/estimate_vs_peak.py [presets/quickstart.yaml] [--steps 8] [--set k=v ...]

Prints the estimate (and its parts) for the config, then trains it for ``--steps`` steps in
a child process (the longest batch comes first: the Trainer's length grouping puts it
there) and prints that process's peak RSS — on a GPU also the peak VRAM allocated — and
the estimate's error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, resource, sys, torch
from finetune_gui.config import RunConfig
from finetune_gui.training import TrainingJob
config = RunConfig.load(sys.argv[1], sys.argv[2:])
state = TrainingJob(config).run()
out = {"status": state.status, "message": state.message,
       "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
if torch.cuda.is_available():
    out["peak_vram"] = torch.cuda.max_memory_allocated()
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "presets" / "quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    from finetune_gui.config import RunConfig
    from finetune_gui.estimate import estimate
    with tempfile.TemporaryDirectory(prefix="estimate-vs-peak-") as tmp:
        overrides = [*args.set, f"train.max_steps={args.steps}", f"train.output_dir={tmp}/run",
                     "train.save_steps=100000"]
        config = RunConfig.load(args.config, overrides)
        est = estimate(config)
        gib = 2 ** 30
        print(f"plan: {est.plan.summary() if est.plan else '?'}")
        print(f"estimate on {est.device}: {est.peak_bytes / gib:.2f} GiB "
              f"(batches of {est.setup.seq_len} tokens, head on "
              f"{est.setup.answer_tokens or 'all'} answer tokens per row)")
        for part, size in sorted(est.breakdown.items(), key=lambda kv: -kv[1]):
            if size:
                print(f"  {part:24s} {size / gib:6.3f} GiB")
        proc = subprocess.run([sys.executable, "-c", CHILD, args.config, *overrides], cwd=ROOT,
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-3000:])
        result = json.loads(line[7:])
        if result["status"] != "finished":
            raise SystemExit(f"the run failed: {result['message']}")
        measured = result.get("peak_vram", result["peak_rss"])
        kind = "peak VRAM allocated" if "peak_vram" in result else "peak RSS"
        print(f"measured {kind}: {measured / gib:.2f} GiB")
        print(f"estimate error: {est.peak_bytes / measured - 1:+.1%}")


if __name__ == "__main__":
    main()
