"""UI load: while a training job runs, N concurrent sessions click around and chat.

    python bench/ui_load.py [--sessions 10] [--requests 20] [--think 1.0] [--max-seconds 120]

Starts the real app (``app.py``) on a tiny random Llama (2 layers, 64 wide, the embedded
model's tokenizer) over loopback, starts a long training job through the Train tab's own
Start endpoint, then runs ``--sessions`` gradio_client sessions at once, each in its own
process, each making ``--requests`` calls in a fixed cycle with a think time before each
(``--think`` seconds on average, like a person clicking; 0 = back-to-back stress),
bounded by ``--max-seconds`` overall:

- set_field:     change the LoRA rank (the field's own handler)
- lora_count:    the live trainable-parameter count that follows a rank change
- train_poll:    the Train tab's progress poll (what its timer calls every second)
- data_preview:  load the data file: table, row checks, token preview and histogram
- chat:          one streamed answer (16 new tokens) from the base model (generation)

It prints p50/p95/max latency per kind, the number of failed requests, and the training
steps made before and during the load. Everything runs on this machine; nothing leaves it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from processes import free_port, stop  # noqa: E402  (bench/ is this script's folder)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

NON_GENERATION = ("set_field", "lora_count", "train_poll", "data_preview")
CYCLE = ("set_field", "lora_count", "train_poll", "data_preview", "chat")
DATA = "presets/data/quillmore_train.jsonl"


def make_tiny_model(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune_gui.config import ModelConfig
    from finetune_gui.models import load_tokenizer
    tok = load_tokenizer(ModelConfig())
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                         max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def endpoints(model: Path, runs: Path) -> tuple[dict[str, str], list[str], list]:
    """API names of the handlers we call, read off the same app built in this process,
    and the values a fresh page shows in every field (what its Start button sends)."""
    from finetune_gui.ui.app import build_app
    from finetune_gui.ui.common import AppOptions
    from finetune_gui.ui.fields import to_ui
    options = AppOptions(root=str(ROOT), model=str(model), runs_dir=str(runs))
    demo = build_app(options)
    from finetune_gui.ui.state import new_state_factory
    config = new_state_factory(options, demo.ui.workspace)().config
    wanted = {"set_field": ("fields", "set_lora_r"), "lora_count": ("lora_tab", "refresh"),
              "train_poll": ("train_tab", "poll"), "data_preview": ("data_tab", "on_load"),
              "chat": ("chat_tab", "on_send"), "start": ("train_tab", "on_start"),
              "stop": ("train_tab", "on_stop")}
    names = {}
    for kind, (module, name) in wanted.items():
        for fn in demo.fns.values():
            f = fn.fn
            if getattr(f, "__module__", "") == f"finetune_gui.ui.{module}" and \
                    getattr(f, "__name__", "") == name and fn.api_name:
                names[kind] = "/" + fn.api_name
                break
    keys = list(demo.ui.fields)
    return names, keys, [to_ui(config, k) for k in keys]


def wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited while waiting for {what}")
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def steps_done(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines()
             if line.strip().startswith("{")]
    return max(steps, default=0)


def session(url: str, api: dict, fields: list[str], n: int, seconds: float, index: int,
            cycle: tuple, think: float, out, go) -> None:
    """One browser-like session in its own process (so the load generator's own GIL does
    not add to the latencies it measures); reports (kind, seconds) or ("error", text)."""
    import random

    from gradio_client import Client
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as exc:  # counted, never hidden
        out.put(("error", f"session {index}: connect: {type(exc).__name__}: {exc}"[:300]))
        out.put(("done", index))
        return
    out.put(("ready", index))
    go.wait()  # every session connected (process start-up is not part of the load)
    deadline = time.time() + seconds
    pause = random.Random(index)
    gen = [k for k in fields if k.startswith("generation.")]
    gen_values = {"generation.max_new_tokens": 16, "generation.temperature": 0.0,
                  "generation.top_p": 0.9, "generation.top_k": 50,
                  "generation.repetition_penalty": 1.1}
    for i in range(n):
        if time.time() > deadline:
            break
        if think:
            time.sleep(pause.uniform(0.5 * think, 1.5 * think))
        kind = cycle[(i + index) % len(cycle)]
        args: tuple = ()
        if kind == "set_field":
            args = (4 + (i * 7 + index) % 60,)
        elif kind == "data_preview":
            args = (DATA,)
        elif kind == "chat":
            args = ("__base__", f"Session {index} asks question {i}: what is Quillmore?",
                    [], [], "", False, *[gen_values[k] for k in gen])
        t0 = time.perf_counter()
        try:
            if kind == "chat":
                client.submit(*args, api_name=api[kind]).result(timeout=120)
            else:
                client.predict(*args, api_name=api[kind])
        except Exception as exc:
            out.put(("error", f"session {index} {kind}: {type(exc).__name__}: {exc}"[:300]))
            continue
        out.put((kind, time.perf_counter() - t0))
    out.put(("done", index))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--requests", type=int, default=20, help="calls per session")
    p.add_argument("--max-seconds", type=float, default=120.0, help="bound on the load phase")
    p.add_argument("--no-training", action="store_true", help="baseline: the same load, no job")
    p.add_argument("--think", type=float, default=1.0,
                   help="mean pause in seconds before each request of a session, drawn "
                        "uniformly from 0.5x to 1.5x (0 = back-to-back stress)")
    p.add_argument("--no-chat", action="store_true",
                   help="leave generation out of the cycle (to see what chat costs the rest)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="OMP_NUM_THREADS for the app (0 = its default: every core)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ui-load-"))
    model = make_tiny_model(work / "tiny-llama")
    runs = work / "runs"
    api, fields, page_values = endpoints(model, runs)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(work / "app.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", FINETUNE_GUI_AUTH="")
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(model), "--port", str(port),
                             "--runs-dir", str(runs)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Press Ctrl+C" in (work / "app.log").read_text(), 180, "app start", proc)
        from gradio_client import Client
        control = Client(url, verbose=False, download_files=False)
        values = list(page_values)
        values[fields.index("train.max_steps")] = 100_000   # runs until we stop it
        values[fields.index("train.save_steps")] = 50
        metrics = runs / "quickstart" / "metrics.jsonl"
        before_rate = 0.0
        if not args.no_training:
            control.predict(*values, api_name=api["start"])
            wait_for(lambda: steps_done(metrics) >= 3, 180, "training to start", proc)
            t0, s0 = time.time(), steps_done(metrics)
            time.sleep(5)
            before_rate = (steps_done(metrics) - s0) / (time.time() - t0)

        results: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        cycle = tuple(k for k in CYCLE if not (args.no_chat and k == "chat"))
        spawn = multiprocessing.get_context("spawn")
        reports, go = spawn.Queue(), spawn.Event()
        sessions = [spawn.Process(target=session, args=(url, api, fields, args.requests,
                                                        args.max_seconds, i, cycle, args.think,
                                                        reports, go))
                    for i in range(args.sessions)]
        for proc_ in sessions:
            proc_.start()
        ready = gone = 0
        while ready + gone < len(sessions):
            kind, value = reports.get(timeout=300)
            ready, gone = ready + (kind == "ready"), gone + (kind == "done")
            if kind == "error":
                errors.append(value)
        time.sleep(2)  # let the sessions' start-up settle
        start_steps, started = steps_done(metrics), time.time()
        go.set()
        running = ready
        while running:
            kind, value = reports.get(timeout=args.max_seconds + 180)
            if kind == "done":
                running -= 1
            elif kind == "error":
                errors.append(value)
            elif kind != "ready":
                results[kind].append(value)
        for proc_ in sessions:
            proc_.join(timeout=30)
        load_seconds = time.time() - started
        load_steps = steps_done(metrics) - start_steps
        if not args.no_training:
            control.predict(api_name=api["stop"])
            wait_for(lambda: (runs / "quickstart" / "adapter").exists(), 120, "the job to stop",
                     proc)
        still_alive = proc.poll() is None
    finally:
        stop(proc)
        log.close()

    print(f"sessions {args.sessions} (one process each, think time {args.think:g}s) x up to "
          f"{args.requests} requests, load phase "
          f"{load_seconds:.1f}s (bound {args.max_seconds:.0f}s), {os.cpu_count()} CPU cores")
    print(f"{'kind':<14}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for kind in CYCLE:
        v = results.get(kind, [])
        if v:
            print(f"{kind:<14}{len(v):>5}{pct(v, .5) * 1000:>10.0f}{pct(v, .95) * 1000:>10.0f}"
                  f"{max(v) * 1000:>10.0f}")
    non_gen = [x for k in NON_GENERATION for x in results.get(k, [])]
    verdict = "PASS" if non_gen and pct(non_gen, .95) < 0.5 and not errors else "FAIL"
    print(f"non-generation events: n {len(non_gen)}, p95 {pct(non_gen, .95) * 1000:.0f} ms "
          f"(target < 500 ms) -> {verdict}")
    print(f"request errors: {len(errors)}")
    for line in errors[:10]:
        print(f"  {line}")
    if args.no_training:
        print(f"training: none (baseline); app alive after: {still_alive}")
    else:
        print(f"training: {before_rate:.2f} steps/s before the load, {load_steps} steps "
              f"({load_steps / load_seconds:.2f} steps/s) during it (torch threads: "
              f"{args.torch_threads or 'default'}); app alive after: {still_alive}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
