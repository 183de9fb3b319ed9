"""Start-up and chat latency on the embedded default model.

    python bench/startup.py [--answers 4]

Prints, each measured in a fresh process:

- app cold start: ``python app.py`` started -> its page served over HTTP (loopback);
- model load: ``load_model`` of the embedded SmolLM2-135M (after the imports, timed apart);
- chat: time to first token and tokens per second of greedy answers streamed by
  ``ChatEngine`` (the Chat tab's engine); the first answer is reported on its own, as it
  pays the one-off warm-up of the CPU kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from processes import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is a large language model?", "Explain LoRA in two sentences.",
             "What does a tokenizer do?", "Why do we hold out a validation set?",
             "What is the capital of France?", "Name three uses of embeddings."]


def app_cold_start(timeout: float = 300.0) -> float:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise SystemExit("app.py exited before serving its page")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    if page.status == 200 and b"<html" in page.read(4096).lower():
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"app.py did not serve its page within {timeout:.0f}s")
    finally:
        stop(proc)


def model_and_chat(answers: int) -> dict:
    """Runs in a child process: imports, model load, then streamed greedy answers."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from finetune_gui.chat import ChatEngine
    from finetune_gui.config import GenerationConfig, RunConfig
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = ChatEngine.from_config(RunConfig())
    load = time.perf_counter() - t0
    params = GenerationConfig(max_new_tokens=64, temperature=0.0)
    rows = []
    for question in QUESTIONS[:answers]:
        started = time.perf_counter()
        first = None
        text = ""
        for text in engine.stream([{"role": "user", "content": question}], params):
            if first is None and text.strip():
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        tokens = len(engine.tokenizer.encode(text, add_special_tokens=False))
        rows.append({"ttft_s": first or total, "tokens": tokens,
                     "tokens_per_s": (tokens - 1) / max(total - (first or total), 1e-9)})
    return {"imports_s": imports, "model_load_s": load, "answers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(model_and_chat(args.answers)), flush=True)
    else:
        report(args.answers)


def report(answers: int = 4) -> dict:
    cold = app_cold_start()
    proc = subprocess.run([sys.executable, __file__, "--child", "--answers", str(answers)],
                          capture_output=True, text=True, cwd=ROOT)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"chat measurement failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line[0][7:])
    first, rest = result["answers"][0], result["answers"][1:] or result["answers"]
    print(f"app cold start (process start -> page served): {cold:.1f} s")
    print(f"embedded model load: {result['model_load_s']:.1f} s "
          f"(after {result['imports_s']:.1f} s of imports)")
    print(f"chat, first answer: time to first token {first['ttft_s']:.2f} s, "
          f"{first['tokens_per_s']:.1f} tokens/s")
    print(f"chat, next {len(rest)} answers (median): time to first token "
          f"{statistics.median(r['ttft_s'] for r in rest):.2f} s, "
          f"{statistics.median(r['tokens_per_s'] for r in rest):.1f} tokens/s")
    return {"app_cold_start_s": cold, **result}


if __name__ == "__main__":
    main()
