"""Our GGUF exports checked by llama.cpp itself: does each quant type still state the facts?

    PYTHONPATH=. .venv/bin/python bench/gguf_llama_cpp.py RUN_DIR \
        [--data presets/data/quillmore_eval.jsonl] [--types f16 q8_0 q5_k_m q4_k_m]

For each type: the export time and file size, llama.cpp's load time, and its greedy answers
to the evaluation questions (the Evaluate step's settings: no repetition penalty, answers as
long as the references) — keyword hits, and how many answers are word for word the answers
of the unquantised tuned model in transformers (what ``evaluate`` and ``chat`` use).
Needs llama-cpp-python (installed by ``scripts/setup.sh --test``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from finetune_gui.chat import ChatEngine
from finetune_gui.evaluation.metrics import keyword_hit
from finetune_gui.evaluation.rows import read_eval_rows
from finetune_gui.evaluation.runner import generation_for
from finetune_gui.export import export_gguf
from finetune_gui.export.gguf_quantize import open_in_llama_cpp


def llama_cpp_answer(llm, ids: list[int], stop_ids: list[int], tokenizer, limit: int) -> str:
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        if token in stop_ids or len(out) >= limit:
            break
        out.append(token)
    llm.reset()
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", default="presets/data/quillmore_eval.jsonl")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0", "q5_k_m", "q4_k_m"])
    args = parser.parse_args()
    rows = read_eval_rows(args.data)
    engine = ChatEngine.from_run(args.run_dir)
    params = generation_for(rows, engine.tokenizer, 0)
    prompts = [engine.example_prompt_ids(r.example) for r in rows]
    started = time.perf_counter()
    reference = []
    for i in range(0, len(rows), 8):
        reference += engine.answer_examples([r.example for r in rows[i:i + 8]], params)
    ref_s = time.perf_counter() - started
    hits = sum(keyword_hit(a, r.keywords) for a, r in zip(reference, rows))
    print(f"{len(rows)} questions from {args.data}; run {args.run_dir}")
    print("| file | size | export | llama.cpp load | answers | facts right | same as transformers |")
    print("|---|---|---|---|---|---|---|")
    print(f"| transformers, adapter on the base (evaluate) | – | – | – | {ref_s:.1f} s | "
          f"{hits:.0f}/{len(rows)} | – |")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.types:
            out = Path(tmp) / kind / "model.gguf"
            t0 = time.perf_counter()
            result = export_gguf(args.run_dir, out, kind)
            export_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            llm = open_in_llama_cpp(out, n_ctx=1024, verbose=False, n_threads=None)
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            answers = [llama_cpp_answer(llm, ids, engine.stop_ids, engine.tokenizer,
                                        params.max_new_tokens) for ids in prompts]
            answer_s = time.perf_counter() - t0
            llm.close()
            kind_hits = sum(keyword_hit(a, r.keywords) for a, r in zip(answers, rows))
            same = sum(a == b for a, b in zip(answers, reference))
            size = result.extra["bytes"] / 2**20
            print(f"| {kind} ({', '.join(f'{k} {v}' for k, v in result.extra['tensors'].items() if v)}) "
                  f"| {size:.1f} MiB | {export_s:.1f} s | {load_s:.2f} s | {answer_s:.1f} s "
                  f"| {kind_hits:.0f}/{len(rows)} | {same}/{len(rows)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
