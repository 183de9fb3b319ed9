"""Command line over the same core as the UI: train, evaluate, chat, preview, validate, estimate,
export.

Every user mistake ends as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from .cli_serve import add_serve_parser
from .config import RunConfig
from .errors import FinetuneError

EXIT_USER_ERROR = 2


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings
    warnings.filterwarnings("ignore")


def _load_config(args) -> RunConfig:
    return RunConfig.load(args.config, args.set)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _distributed_rank() -> int:
    """This process's rank under ``accelerate launch``/torchrun (0 when run alone).

    Each process trains in its own thread like a single run; the CUDA device is pinned to
    the local rank first so that the model loads onto this process's GPU, and only rank 0
    prints progress (the job itself writes the run folder from rank 0 only).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return int(os.environ.get("RANK", "0"))


def cmd_train(args) -> int:
    from .training import TrainingJob
    config = _load_config(args)
    rank = _distributed_rank()
    quiet = rank != 0
    job = TrainingJob(config, resume=args.resume)
    job.start()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        print("\nstopping: saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)
        job.stop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    printed_logs = printed_loss = 0
    while True:
        state = job.wait(timeout=0.5)
        for line in state.log[printed_logs:] if not quiet else ():
            print(line, flush=True)
        printed_logs = len(state.log)
        for step, loss in state.loss[printed_loss:] if not quiet else ():
            evals = [v for s, v in state.eval_loss if s == step]
            extra = f" eval_loss {evals[-1]:.4f}" if evals else ""
            for name in ("reward_accuracy", "reward_margin"):
                values = [v for s, v in state.preference.get(name, []) if s == step]
                extra += f" {name} {values[-1]:.3f}" if values else ""
            print(f"step {step}/{state.total_steps} loss {loss:.4f}{extra} "
                  f"lr {state.learning_rate:.2e} tok/s {state.tokens_per_second:.0f} "
                  f"eta {_duration(state.eta_seconds)}", flush=True)
        printed_loss = len(state.loss)
        if not state.active:
            break
    # Let the job's thread finish its clean-up: leaving while it still runs can abort the
    # interpreter at exit ("terminate called without an active exception").
    state = job.wait()
    signal.signal(signal.SIGINT, previous)
    if state.status == "failed":
        raise FinetuneError(state.message)
    if quiet:
        print(f"process {rank}/{os.environ.get('WORLD_SIZE')}: {state.status}: {state.message}",
              flush=True)
    else:
        print(f"{state.status}: {state.message}")
        print(f"run folder: {state.output_dir}")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FinetuneError(f"{path}: prompts file not found")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    if not prompts:
        raise FinetuneError("give at least one --prompt or a --prompts-file")
    return prompts


def cmd_chat(args) -> int:
    from .chat import ChatEngine
    prompts = _read_prompts(args)
    engine = ChatEngine.from_run(args.run_dir)
    if args.merged:
        engine.merge()
    for key in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"):
        if getattr(args, key) is not None:
            engine.config.set(f"generation.{key}", getattr(args, key), source="chat")
    params = engine.config.generation
    for prompt in prompts:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": prompt})
        answer = engine.answer(messages, params, use_adapter=not args.base_only)
        if args.json:
            print(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False), flush=True)
        else:
            print(f"### {prompt}\n{answer}\n", flush=True)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import EvalOptions, evaluate_run
    from .evaluation.report import summary_lines
    if args.limit is not None and args.limit < 0:
        raise FinetuneError("--limit must be 0 (all rows) or more")
    if args.max_new_tokens is not None and not 0 <= args.max_new_tokens <= 4096:
        raise FinetuneError("--max-new-tokens must be between 1 and 4096 (0 = automatic)")
    options = EvalOptions(data=args.data or "", base=args.base, general=not args.no_general,
                          limit=args.limit or 0, max_new_tokens=args.max_new_tokens or 0)

    def progress(p) -> None:
        if not args.json:
            print(f"[{p.done}/{p.total}] {p.phase} · {_duration(p.elapsed)} elapsed, "
                  f"eta {_duration(p.eta)}", file=sys.stderr, flush=True)

    result = evaluate_run(args.run_dir, options, progress=progress)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for row in result["rows"]:
        base = f"\n  base:  {row['base_answer']!r}" if "base_answer" in row else ""
        print(f"### {row['where']}: {row['prompt']}\n  ref:   {row['reference']!r}"
              f"\n  tuned: {row['answer']!r}{base}")
    print()
    for line in summary_lines(result):
        print(line)
    print(f"saved to {result['saved_to']}")
    return 0


def cmd_preview(args) -> int:
    from . import models
    from .data import load_examples
    from .templates import TemplateSpec, example_spans
    config = _load_config(args)
    spec = TemplateSpec.from_data_config(config.data)
    split = load_examples(config.data, seed=config.train.seed)
    tokenizer = models.load_tokenizer(config.model)
    spec.check(tokenizer)
    max_len = config.train.max_seq_len
    print(f"{len(split.train)} training rows, {len(split.validation)} validation rows; "
          f"template {spec.name}; «…» = masked (no loss), ⟦…⟧ = cut by max_seq_len={max_len}")
    for example in split.train[: args.n]:
        spans = example_spans(example, spec, tokenizer, max_len)
        out, current = [], None
        for text, kind in spans:
            if kind != current:
                out.append({"masked": "«", "cut": "⟦", "trained": ""}[kind])
                if current in ("masked", "cut"):
                    out.insert(-1, {"masked": "»", "cut": "⟧"}[current])
                current = kind
            out.append(text)
        if current in ("masked", "cut"):
            out.append({"masked": "»", "cut": "⟧"}[current])
        trained = sum(1 for _, k in spans if k == "trained")
        print(f"\n--- {example.where}: {len(spans)} tokens, {trained} trained ---")
        print("".join(out))
    return 0


def cmd_validate(args) -> int:
    from .data import MAX_ERRORS_KEPT, check_file
    report = check_file(args.data_file, args.format, keep_examples=False,
                        progress=_progress_bar(f"checking {args.data_file}"))
    print(f"{args.data_file}: format {report.format}, {report.rows_total} rows, "
          f"{report.good_rows} good, {report.bad_rows} bad, "
          f"{report.duplicates} duplicates")
    for error in report.errors:
        print(f"error: {error}")
    if report.bad_rows > len(report.errors):
        print(f"(only the first {MAX_ERRORS_KEPT} problems are listed)")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.duplicates > len(report.warnings):
        print(f"(only the first {MAX_ERRORS_KEPT} duplicates are listed)")
    return 1 if report.errors else 0


def _progress_bar(label: str):
    """A one-line progress bar on stderr (a terminal only), at most a few redraws a second."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25 and done < total:
            return
        last[0] = now
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} [{bar:<30}] {share:4.0%} of {total / 1e6:,.0f} MB{end}")
        sys.stderr.flush()
    return show


def cmd_estimate(args) -> int:
    from .estimate import estimate_report
    report = estimate_report(_load_config(args), args.vram)
    if args.json:
        print(json.dumps(report))
        return 0
    gib = 1024 ** 3
    print(f"trainable parameters: {report['trainable_params']:,} of {report['total_params']:,}")
    print(f"peak memory ({report['device']}): {report['peak_bytes'] / gib:.2f} GiB")
    for part, size in report["breakdown"].items():
        print(f"  {part:<24} {size / gib:8.3f} GiB")
    for key in ("fits", "max_seq_len_fit", "max_batch_size_fit"):
        if report.get(key) is not None:
            print(f"{key}: {report[key]}")
    return 0


def cmd_export(args) -> int:
    from . import export
    if not (args.merged or args.gguf or args.lora or args.push_to_hub):
        raise FinetuneError("choose what to export: --merged OUT_DIR, --gguf OUT.gguf, "
                            "--lora OUT_DIR and/or --push-to-hub USER/NAME")
    if (args.gguf or args.lora) and args.gguf_type not in export.GGUF_TYPES:
        raise FinetuneError(f"--gguf-type must be one of {', '.join(export.GGUF_TYPES)}")
    if args.merged:
        export.check_merged_target(args.merged)
    if args.gguf:
        export.check_gguf_target(args.gguf, args.gguf_type)
    if args.lora:
        export.check_lora_target(args.lora)
    if args.push_to_hub:
        export.require_token()
    results = []

    def progress(fraction: float, text: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {text}", flush=True)

    if args.merged:
        merged = export.load_merged(args.run_dir, dtype=args.dtype, progress=progress)
        results.append(export.save_merged(merged, args.merged,
                                          max_shard_size=args.max_shard_size,
                                          progress=progress))
        del merged  # one model in memory at a time
    if args.gguf:  # from exact (float32) weights, merged one at a time as they are written
        results.append(export.export_gguf(args.run_dir, args.gguf, args.gguf_type,
                                          modelfile=not args.no_modelfile, progress=progress))
    if args.lora:
        results.append(export.export_gguf_lora(args.run_dir, args.lora, args.gguf_type,
                                               progress=progress))
    if args.push_to_hub:
        # What was exported goes up: the merged folder and/or the GGUF with its Modelfile;
        # with neither, the adapter folder.
        uploads = [(str(r.path), None) for r in results if r.kind == "merged"]
        uploads += [(str(r.path.parent), [f.name for f in r.files])
                    for r in results if r.kind == "gguf"]
        uploads += [(str(r.path), None) for r in results if r.kind == "gguf-lora"]
        if not uploads:
            from .runs import find_run
            uploads = [(str(find_run(args.run_dir)[0].adapter), None)]
        for folder, files in uploads:
            url = export.push_to_hub(folder, args.push_to_hub, files=files,
                                     private=not args.public)
        results.append({"path": uploads[0][0], "kind": "hub", "url": url})
    for result in results:
        data = result if isinstance(result, dict) else result.to_dict()
        if args.json:
            print(json.dumps(data, ensure_ascii=False), flush=True)
            continue
        print(f"{data['kind']}: {data.get('url') or data['path']}")
        for note in data.get("notes", []):
            print(f"  note: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune_gui",
                                     description="LoRA/QLoRA fine-tuning from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("config", help="run configuration YAML (e.g. presets/quickstart.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting; the value is YAML (repeatable)")

    p = sub.add_parser("train", help="train a LoRA adapter")
    with_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("chat", help="ask a trained run (or its base model) questions")
    p.add_argument("run_dir", help="run folder (train.output_dir of a finished run)")
    p.add_argument("--prompt", action="append", help="a question (repeatable)")
    p.add_argument("--prompts-file", help="a file with one prompt per line")
    p.add_argument("--base-only", action="store_true", help="answer with the base model alone")
    p.add_argument("--merged", action="store_true", help="merge the adapter first (faster)")
    p.add_argument("--json", action="store_true", help='print {"prompt", "answer"} per line')
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float, help="0 = greedy (the default)")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--repetition-penalty", type=float)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("evaluate", help="score a run's answers to held-out questions, base vs "
                       "tuned, and what it forgot")
    p.add_argument("run_dir", help="run folder of a finished run")
    p.add_argument("--data", help="questions to ask (any data file with answers and/or "
                   "keywords); default: data.eval_path, else the run's held-out rows")
    p.add_argument("--base", action="store_true", help="answer with the base model too")
    p.add_argument("--no-general", action="store_true",
                   help="skip the general-knowledge probe (\"general answers kept\")")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--max-new-tokens", type=int,
                   help="longest answer (default: from the longest reference answer)")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("preview", help="show examples exactly as the model will see them")
    with_config(p)
    p.add_argument("-n", type=int, default=3, help="how many examples")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("validate", help="check a data file and list every bad row")
    p.add_argument("data_file")
    p.add_argument("--format", default="auto", choices=("auto", "alpaca", "messages", "sharegpt"))
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("estimate", help="trainable parameters and peak memory, before loading")
    with_config(p)
    p.add_argument("--vram", type=float, help="GPU memory in GiB to fit into")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("export", help="merged model, GGUF (+ Ollama Modelfile), or Hub upload")
    p.add_argument("run_dir", help="run folder of a finished run")
    p.add_argument("--merged", metavar="OUT_DIR",
                   help="save base + adapter merged as a plain transformers model here")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="merged weights dtype; auto = the base's own (16-bit for a 4/8-bit base)")
    p.add_argument("--max-shard-size", default="2GB", help="safetensors shard size (e.g. 2GB)")
    p.add_argument("--gguf", metavar="OUT.gguf", help="write a GGUF file for llama.cpp/Ollama")
    p.add_argument("--gguf-type", default="f16",
                   help="f16 (default), q8_0, q5_k_m, q4_k_m (llama.cpp's quantizer) or f32")
    p.add_argument("--lora", metavar="OUT_DIR",
                   help="the adapter alone as a llama.cpp LoRA (adapter.gguf) with its base "
                        "(base.gguf, --gguf-type) and an Ollama Modelfile using ADAPTER")
    p.add_argument("--no-modelfile", action="store_true",
                   help="do not write an Ollama Modelfile beside the GGUF")
    p.add_argument("--push-to-hub", metavar="USER/NAME",
                   help="upload the export (or the adapter) to the Hub; token from HF_TOKEN")
    p.add_argument("--public", action="store_true", help="make the Hub repository public")
    p.add_argument("--json", action="store_true", help="print one JSON object per export")
    p.set_defaults(func=cmd_export)

    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    started = time.time()
    try:
        return args.func(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"interrupted after {time.time() - started:.0f}s", file=sys.stderr)
        return 130
