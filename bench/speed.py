"""Training speed: the chapter's QLoRA recipe against our engine, same model, data and LoRA.

    python bench/speed.py [--epochs 1] [--repeats 3] [--data presets/data/ai_basics_en.jsonl]
                          [--no-startup]

Each variant trains in its own process (so peak RSS is its own) and prints one JSON line;
the summary gives medians, the ratio of real (non-padding) tokens per second, and the ratio
within each back-to-back pair (robust to the machine's speed drifting between pairs). Peak RSS
is read when training ends, before the eval model is loaded.

- chapter: the recipe as the chapter writes it — 4-bit NF4 base with double quantisation,
  bf16, Alpaca text, a collator that pads and uses ``input_ids`` (padding included) as labels,
  batch 4, r=16, alpha=32, dropout 0.05 on all seven projections, lr 2e-4, weight decay
  0.001, grad-norm 0.3, constant schedule, length-grouped batches (the chapter's
  ``group_by_length``), paged 32-bit AdamW where bitsandbytes has it (else AdamW).
- ours: ``TrainingJob`` with the same data, template, LoRA settings, batch, lr and epochs.

Then (unless ``--no-startup``) ``bench/startup.py``: app cold start, embedded model load
time, chat time to first token and tokens per second.

Both are scored with the same eval loss: mean cross-entropy over the answer tokens of a
held-out 10% split, in the Alpaca template the two were trained with.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# "Whole command" time: from this process's start to the end of training (imports, model load,
# data preparation and training; the eval-loss scoring afterwards is the bench's, not the job's).
PROCESS_START = time.time()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def split_data(path: str, seed: int = 0):
    from finetune_gui.config import DataConfig
    from finetune_gui.data import load_examples
    split = load_examples(DataConfig(path=path, val_split=0.1), seed=seed)
    return split.train, split.validation


def eval_loss(model, tokenizer, examples) -> float:
    """Mean answer-token cross-entropy under the Alpaca template (identical for both)."""
    import torch

    from finetune_gui.templates import IGNORE_INDEX, TemplateSpec, encode_example
    spec = TemplateSpec("alpaca")
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for example in examples:
            enc = encode_example(example, spec, tokenizer, 512)
            ids = torch.tensor([enc.input_ids])
            labels = torch.tensor([enc.labels])
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[0, 1:]
            keep = target != IGNORE_INDEX
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep],
                                                       reduction="sum").item()
            count += int(keep.sum())
    return total / count


def run_chapter(data: str, epochs: float, out: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,
                              Trainer, TrainingArguments)

    from finetune_gui.models import resolve_source
    train, held_out = split_data(data)
    folder = resolve_source("smollm2-135m-instruct").location
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True))
    model.config.use_cache = False
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=SEVEN, task_type="CAUSAL_LM"))
    texts = [("Below is an instruction that describes a task. Write a response that "
              "appropriately completes the request.\n\n### Instruction:\n"
              f"{e.turns[0].instruction}\n\n### Response:\n{e.turns[0].output}") for e in train]
    from datasets import Dataset
    lengths = [min(512, len(tokenizer(t).input_ids)) for t in texts]
    dataset = Dataset.from_dict({"text": texts, "length": lengths})

    def collate(rows):  # the chapter's collator: labels are the padded input_ids
        batch = tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True,
                          truncation=True, max_length=512)
        return {"input_ids": batch.input_ids, "labels": batch.input_ids.clone()}

    import importlib.util
    optim = "paged_adamw_32bit" if importlib.util.find_spec("bitsandbytes") else "adamw_torch"
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, optim=optim, learning_rate=2e-4, weight_decay=0.001,
        bf16=True, max_grad_norm=0.3, warmup_steps=0.03, lr_scheduler_type="constant",
        train_sampling_strategy="group_by_length", logging_steps=10, report_to=[],
        remove_unused_columns=False, save_strategy="no", disable_tqdm=True, use_cpu=True,
        seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    try:
        started = time.time()
        result = trainer.train()
    except Exception as exc:  # paged optimizers may be GPU-only: fall back and say so
        if optim == "adamw_torch":
            raise
        args.optim = "adamw_torch"
        optim = f"adamw_torch (paged_adamw_32bit failed: {str(exc).splitlines()[0][:80]})"
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
        started = time.time()
        result = trainer.train()
    seconds = time.time() - started
    command_seconds = time.time() - PROCESS_START
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": "chapter", "optimizer": optim, "train_seconds": seconds,
            "command_seconds": command_seconds,
            "peak_rss_mib": peak_rss,
            "real_tokens": int(sum(lengths) * epochs),
            "train_loss": result.training_loss, "eval_loss": eval_loss(model, tokenizer, held_out)}


def run_ours(data: str, epochs: float, out: Path, overrides: list[str]) -> dict:
    from finetune_gui.config import RunConfig
    from finetune_gui.training import TrainingJob
    train, held_out = split_data(data)
    train_file = out / "train.jsonl"  # the same 90% the chapter trains on; eval stays outside
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text("".join(json.dumps({"instruction": e.turns[0].instruction,
                                              "input": e.turns[0].input,
                                              "output": e.turns[0].output}) + "\n"
                                  for e in train), encoding="utf-8")
    config = RunConfig()
    for item in ["data.template=alpaca", f"data.path={train_file}", "data.val_split=0",
                 f"train.epochs={epochs}", "train.batch_size=4", "train.learning_rate=2e-4",
                 "train.max_seq_len=512", f"train.output_dir={out / 'run'}",
                 "train.save_steps=100000",
                 "train.lr_scheduler=constant", "train.logging_steps=1", "train.seed=0",
                 f"lora.target_modules=[{', '.join(SEVEN)}]", *overrides]:
        config.apply_override(item)
    state = TrainingJob(config).run()
    command_seconds = time.time() - PROCESS_START
    if state.status != "finished":
        raise SystemExit(f"ours failed: {state.message}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from peft import PeftModel

    from finetune_gui import models
    base, tokenizer = models.load_model(config.model, for_training=False)
    model = PeftModel.from_pretrained(base, str(out / "run" / "adapter"))
    losses = [loss for _, loss in state.loss]
    return {"variant": "ours", "train_seconds": state.train_seconds,
            "command_seconds": command_seconds,
            "real_tokens": state.tokens_seen, "peak_rss_mib": peak_rss,
            "train_loss": sum(losses) / len(losses),
            "eval_loss": eval_loss(model, tokenizer, held_out)}


def child(args) -> None:
    out = Path(tempfile.mkdtemp(prefix=f"speed-{args.variant}-"))
    if args.variant == "chapter":
        result = run_chapter(args.data, args.epochs, out)
    else:
        result = run_ours(args.data, args.epochs, out, args.set)
    result["tokens_per_second"] = result["real_tokens"] / result["train_seconds"]
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "presets" / "data" / "ai_basics_en.jsonl"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=("chapter", "ours"))
    parser.add_argument("--only", choices=("chapter", "ours"))
    parser.add_argument("--no-startup", action="store_true",
                        help="skip app cold start, model load and chat latency (bench/startup.py)")
    parser.add_argument("--set", action="append", default=[],
                        help="extra overrides for our engine, e.g. train.precision=fp32")
    args = parser.parse_args()
    if args.variant:
        return child(args)
    results: dict[str, list[dict]] = {"chapter": [], "ours": []}
    for _ in range(args.repeats):
        for variant in ([args.only] if args.only else ["chapter", "ours"]):
            cmd = [sys.executable, __file__, "--variant", variant, "--data", args.data,
                   "--epochs", str(args.epochs)] + [f"--set={s}" for s in args.set]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(line[0][7:])
            results[variant].append(result)
            print(json.dumps(result), flush=True)
    print(f"\n{'variant':<8} {'real tok/s':>10} {'wall s':>8} {'peak RSS MiB':>13} "
          f"{'train loss':>10} {'eval loss':>9}   (medians of {args.repeats})")
    medians = {}
    for variant, rows in results.items():
        if not rows:
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in
               ("tokens_per_second", "train_seconds", "peak_rss_mib", "train_loss", "eval_loss")}
        medians[variant] = med
        print(f"{variant:<8} {med['tokens_per_second']:>10.1f} {med['train_seconds']:>8.1f} "
              f"{med['peak_rss_mib']:>13.0f} {med['train_loss']:>10.3f} {med['eval_loss']:>9.3f}")
    if len(medians) == 2:
        ratio = medians["ours"]["tokens_per_second"] / medians["chapter"]["tokens_per_second"]
        print(f"\nours / chapter real tokens per second: {ratio:.2f}x")
        # Each pair ran back to back, so its ratio is robust to the machine's speed drifting
        # between pairs (this CPU's varies by ~20% over a day).
        pairs = [o["tokens_per_second"] / c["tokens_per_second"]
                 for c, o in zip(results["chapter"], results["ours"])]
        print(f"per pair: {' '.join(f'{r:.2f}x' for r in pairs)} "
              f"(median {statistics.median(pairs):.2f}x)")
        # The same examples and epochs, but not the same token count: the chapter's prompt
        # leaves out the `input` field. Its wall-clock time for the whole job, for comparison:
        walls = [c["train_seconds"] / o["train_seconds"]
                 for c, o in zip(results["chapter"], results["ours"])]
        print(f"chapter / ours train time, same job: {' '.join(f'{r:.2f}x' for r in walls)} "
              f"(median {statistics.median(walls):.2f}x)")
        commands = [c["command_seconds"] / o["command_seconds"]
                    for c, o in zip(results["chapter"], results["ours"])]
        print(f"chapter / ours whole command (start to trained): "
              f"{' '.join(f'{r:.2f}x' for r in commands)} "
              f"(median {statistics.median(commands):.2f}x)")
    if not args.no_startup:
        print()
        import startup
        startup.report()


if __name__ == "__main__":
    main()
