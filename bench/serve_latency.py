"""Latency of the OpenAI-compatible API under 8 concurrent clients, batched and not.

    PYTHONPATH=. .venv/bin/python bench/serve_latency.py RUN_DIR [--clients 8] [--rounds 3]

Starts ``serve``'s server in this process on a free port, then for --max-batch 8 and 1
sends --clients requests at once with the official ``openai`` client (the Quillmore
questions, answers up to 64 tokens) and prints p50/p95 latency, requests per second and how
many batches the server ran; plus whether a streamed answer equals ``chat``'s greedy answer.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time

import openai

from finetune_gui.chat import ChatEngine
from finetune_gui.serving.http import BackgroundServer
from finetune_gui.serving.server import ModelServer, load_engine

KEY = "sk-bench-key-000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions(n: int) -> list[str]:
    with open("presets/data/quillmore_eval.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line in fh][:n]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def round_of(client, model: str, prompts: list[str]) -> tuple[list[float], float]:
    latencies = [0.0] * len(prompts)

    def ask(i: int) -> None:
        t0 = time.perf_counter()
        client.chat.completions.create(model=model, max_tokens=64,
                                       messages=[{"role": "user", "content": prompts[i]}])
        latencies[i] = time.perf_counter() - t0

    started = time.perf_counter()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prompts = questions(args.clients)
    engine, name = load_engine(args.run_dir)
    chat = ChatEngine.from_run(args.run_dir)
    for max_batch in (8, 1):
        server = ModelServer(engine, name, api_key=KEY, max_batch=max_batch)
        background = BackgroundServer(server, "127.0.0.1", free_port()).start()
        client = openai.OpenAI(base_url=background.base_url, api_key=KEY, max_retries=0,
                               timeout=600)
        if max_batch == 8:
            message = [{"role": "user", "content": prompts[0]}]
            streamed = "".join(c.choices[0].delta.content or "" for c in
                               client.chat.completions.create(model=name, messages=message,
                                                              stream=True) if c.choices)
            print(f"streamed answer equals chat's greedy answer: {streamed == chat.answer(message)}")
        round_of(client, name, prompts[:2])   # warm-up
        latencies, walls = [], []
        batches = server.batcher.batches
        for _ in range(args.rounds):
            lat, wall = round_of(client, name, prompts)
            latencies += lat
            walls.append(wall)
        ran = server.batcher.batches - batches
        print(f"max_batch {max_batch}: {args.clients} concurrent clients x {args.rounds} rounds: "
              f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
              f"{args.clients * args.rounds / sum(walls):.2f} requests/s, {ran} batches", flush=True)
        background.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
