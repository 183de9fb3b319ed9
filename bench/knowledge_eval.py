"""Did the tuned model learn? Ask held-out paraphrased questions, before and after.

    python bench/knowledge_eval.py RUN_DIR [--eval presets/data/quillmore_eval.jsonl]

Prints each question with the base and tuned answers and whether each contains one of the
fact's keywords (case-insensitive), then the two hit rates. Greedy decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune_gui.chat import ChatEngine  # noqa: E402
from finetune_gui.config import GenerationConfig  # noqa: E402


def hit(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return any(k.lower() in low for k in keywords)


def evaluate(run_dir: str, eval_path: str, limit: int | None = None) -> dict:
    rows = [json.loads(line) for line in Path(eval_path).read_text(encoding="utf-8").splitlines()
            if line.strip()][:limit]
    engine = ChatEngine.from_run(run_dir)
    params = GenerationConfig(max_new_tokens=48, temperature=0.0, repetition_penalty=1.0)
    results = []
    for row in rows:
        messages = [{"role": "user", "content": row["question"]}]
        base = engine.answer(messages, params, use_adapter=False)
        tuned = engine.answer(messages, params, use_adapter=True)
        results.append({"question": row["question"], "keywords": row["keywords"],
                        "base": base, "tuned": tuned,
                        "base_hit": hit(base, row["keywords"]),
                        "tuned_hit": hit(tuned, row["keywords"])})
    n = len(results)
    return {"questions": n,
            "base_hits": sum(r["base_hit"] for r in results),
            "tuned_hits": sum(r["tuned_hit"] for r in results),
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--eval", default="presets/data/quillmore_eval.jsonl")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    started = time.time()
    report = evaluate(args.run_dir, args.eval, args.limit)
    if not args.quiet:
        for r in report["results"]:
            print(f"Q: {r['question']}  [{' / '.join(r['keywords'])}]")
            print(f"  base  {'HIT ' if r['base_hit'] else 'miss'} {r['base'][:110]!r}")
            print(f"  tuned {'HIT ' if r['tuned_hit'] else 'miss'} {r['tuned'][:110]!r}")
    n = report["questions"]
    print(f"base hit rate:  {report['base_hits']}/{n} = {report['base_hits'] / n:.0%}")
    print(f"tuned hit rate: {report['tuned_hits']}/{n} = {report['tuned_hits'] / n:.0%}")
    print(f"({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
