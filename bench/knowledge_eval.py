"""Did the tuned model learn? Ask held-out paraphrased questions, before and after.

    python bench/knowledge_eval.py RUN_DIR [--eval presets/data/quillmore_eval.jsonl]

Prints each question with the base and tuned answers and whether each contains one of the
fact's keywords (case-insensitive), then the two hit rates. Greedy decoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune_gui.chat import ChatEngine  # noqa: E402
from finetune_gui.evaluate import ask_both, read_questions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--eval", default="presets/data/quillmore_eval.jsonl")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    started = time.time()
    results = ask_both(ChatEngine.from_run(args.run_dir), read_questions(args.eval)[: args.limit])
    if not args.quiet:
        for r in results:
            print(f"Q: {r.question}  [{' / '.join(r.keywords)}]")
            print(f"  base  {'HIT ' if r.base_hit else 'miss'} {r.base[:110]!r}")
            print(f"  tuned {'HIT ' if r.tuned_hit else 'miss'} {r.tuned[:110]!r}")
    n = len(results)
    base, tuned = sum(r.base_hit for r in results), sum(r.tuned_hit for r in results)
    print(f"base hit rate:  {base}/{n} = {base / n:.0%}")
    print(f"tuned hit rate: {tuned}/{n} = {tuned / n:.0%}")
    print(f"({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
