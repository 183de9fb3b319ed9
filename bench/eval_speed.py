"""How long the Evaluate step takes on a finished run (default: 40 Quillmore questions).

    python bench/eval_speed.py RUN_DIR [--data presets/data/quillmore_eval.jsonl] [--repeats 3]

Prints the model load time, then for each variant the median seconds of ``--repeats`` runs:
tuned answers only; with the base model's answers (base answers not cached, then cached);
and with the general probe too. Greedy, batched (left padding, KV cache).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune_gui.answering import BaseAnswerCache  # noqa: E402
from finetune_gui.chat import ChatEngine  # noqa: E402
from finetune_gui.evaluation import EvalOptions, evaluate_engine, read_eval_rows  # noqa: E402
from finetune_gui.runs import find_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", default="presets/data/quillmore_eval.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _, config = find_run(args.run_dir)
    started = time.time()
    engine = ChatEngine.from_run(args.run_dir)
    print(f"model load: {time.time() - started:.1f} s")
    rows = read_eval_rows(args.data)
    variants = [
        ("tuned only", EvalOptions(general=False), "none"),
        ("tuned + base, base not cached", EvalOptions(base=True, general=False), "cold"),
        ("tuned + base, base cached", EvalOptions(base=True, general=False), "warm"),
        ("tuned + base + general probe, base cached", EvalOptions(base=True), "warm"),
    ]
    with tempfile.TemporaryDirectory() as warm_dir:
        warm = BaseAnswerCache(config.model, Path(warm_dir))
        for name, options, kind in variants:
            times, result = [], None
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as cold_dir:
                    cache = {"none": None, "warm": warm,
                             "cold": BaseAnswerCache(config.model, Path(cold_dir))}[kind]
                    t0 = time.time()
                    result = evaluate_engine(engine, rows, options, cache=cache,
                                             max_len=config.train.max_seq_len)
                    times.append(time.time() - t0)
            hits = sum(r["metrics"].get("keyword_hit", 0) for r in result["rows"])
            print(f"{name:<44} {statistics.median(times):6.1f} s (runs: "
                  f"{', '.join(f'{t:.1f}' for t in times)}); {len(rows)} rows, "
                  f"tuned keyword hits {hits:.0f}")


if __name__ == "__main__":
    main()
