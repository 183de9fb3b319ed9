"""A run's data step (read, check, split, tokenise) on a big JSON Lines file: wall time and
peak memory, rows in memory vs streamed, and streamed again with the token cache warm.

    python bench/tokenize_big.py [--rows 300000] [--keep]

It writes ``--rows`` distinct Alpaca rows (~300 bytes each) into a temporary folder and
runs the job's own data step (``data_stream.load_split`` then ``TrainingData.sft``, the
embedded model's tokenizer and chat template, max_seq_len 512, val_split 0.05) in a fresh
process three times, each with the token cache in that folder: in memory (cold cache),
streamed (cold cache), streamed again (the cache from the run before). It prints each
one's wall time, peak RSS (the child's own, from wait4) and sequence count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.validate_big import WORDS  # noqa: E402  (the same rows as validate's bench)


def write_file(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, rows + 1):
            words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 13))
            out.write(json.dumps({
                "instruction": f"Question {i}: what links {words}?", "input": "",
                "output": f"Answer {i}: the {words} all appear in row {i} of this file, "
                          "which exists to measure how fast a big file is tokenised."}) + "\n")


def child(data: str, model: str, stream: bool) -> None:
    """The data step of a run, as ``TrainingJob.setup`` does it; prints one JSON line."""
    from finetune_gui.config import RunConfig
    from finetune_gui.data_stream import load_split
    from finetune_gui.models import load_tokenizer
    from finetune_gui.templates import TemplateSpec
    from finetune_gui.training_data import TrainingData
    cfg = RunConfig()
    cfg.model.name_or_path, cfg.data.path, cfg.data.val_split = model, data, 0.05
    cfg.train.max_seq_len = 512
    tokenizer = load_tokenizer(cfg.model)
    started = time.perf_counter()
    logs: list[str] = []
    split = load_split(cfg.data, seed=cfg.train.seed, stream=stream)
    train, held, _, _ = TrainingData(cfg, log=logs.append, phase=lambda _: None,
                                     run_root=Path(data).parent, writes=False
                                     ).sft(split, TemplateSpec.from_data_config(cfg.data),
                                           None, tokenizer)
    print(json.dumps({"data_step_s": round(time.perf_counter() - started, 1),
                      "sequences": len(train), "held_out": len(held),
                      "cache": "hit" if any("from the cache" in line for line in logs)
                      else "built"}))


def measure(data: Path, model: str, stream: bool, cache: Path) -> dict:
    started = time.perf_counter()
    env = dict(os.environ, FINETUNE_GUI_CACHE=str(cache))
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(data), model,
                             "stream" if stream else "memory"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"the child failed: {output[-2000:]}")
    return dict(json.loads(output.strip().splitlines()[-1]),
                process_s=round(time.perf_counter() - started, 1),
                peak_rss_mib=round(usage.ru_maxrss / 1024))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4] == "stream")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()
    from finetune_gui.config import EMBEDDED_MODEL
    from finetune_gui.models import resolve_source
    model = resolve_source(EMBEDDED_MODEL).location  # converted once, in the usual cache
    folder = Path(tempfile.mkdtemp(prefix="tokenize-big-"))
    data = folder / f"rows-{args.rows}.jsonl"
    write_file(data, args.rows)
    print(json.dumps({"rows": args.rows, "megabytes": round(data.stat().st_size / 1e6, 1)}))
    for name, stream, cache in (("in memory, cold cache", False, folder / "cache-memory"),
                                ("streamed, cold cache", True, folder / "cache"),
                                ("streamed, cached", True, folder / "cache")):
        print(json.dumps({"run": name, **measure(data, model, stream, cache)}), flush=True)
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
