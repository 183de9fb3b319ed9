"""Turning examples into training batches."""

from __future__ import annotations

import torch

from .templates import IGNORE_INDEX, TemplateSpec, encode_example


class PadCollator:
    """Pad a batch to its longest row: ids with the pad token, labels with IGNORE_INDEX.

    Rows with replay soft targets (``soft_ids``/``soft_logp``, see ``finetune_gui.replay``)
    get them padded too; a row without any has ids -1 (nothing to match) throughout."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        soft_rows = [r.get("soft_ids") for r in rows]
        if any(soft_rows):
            k = len(next(s for s in soft_rows if s)[0])
            soft_ids = torch.full((len(rows), width, k), -1, dtype=torch.long)
            soft_logp = torch.zeros((len(rows), width, k), dtype=torch.float32)
            for i, row in enumerate(rows):
                if row.get("soft_ids"):
                    n = len(row["soft_ids"])
                    soft_ids[i, :n] = torch.tensor(row["soft_ids"])
                    soft_logp[i, :n] = torch.tensor(row["soft_logp"])
            batch.update(soft_ids=soft_ids, soft_logp=soft_logp)
        return batch


def forward_in_batches(model, encoded: list, pad_id: int, batch_size: int = 8):
    """Yield (encoded rows, padded batch, logits) for every ``batch_size`` rows of
    ``encode_example`` results, padded as in training, without gradients. Evaluation's
    answer-only loss and replay's soft targets both read the model this way."""
    collate = PadCollator(pad_id)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            yield chunk, batch, logits


def tokenize_examples(examples, spec: TemplateSpec, tokenizer, max_len: int, soft=None):
    """A ``datasets.Dataset`` of ids/labels/length plus (truncated, dropped) counts.

    ``soft``, when given, holds one ``replay.SoftTargets`` (or None) per example: those rows
    are trained towards the base's distributions instead of their tokens alone."""
    from datasets import Dataset
    rows = {"input_ids": [], "labels": [], "length": []}
    if soft is not None:
        rows.update(soft_ids=[], soft_logp=[])
    truncated = dropped = 0
    for i, example in enumerate(examples):
        enc = encode_example(example, spec, tokenizer, max_len)
        truncated += enc.truncated
        if enc.trained_tokens == 0:  # the answer was cut off entirely: nothing to learn
            dropped += 1
            continue
        rows["input_ids"].append(enc.input_ids)
        rows["labels"].append(enc.labels)
        rows["length"].append(len(enc.input_ids))
        if soft is not None:
            target = soft[i]
            rows["soft_ids"].append(target.ids[:len(enc.input_ids)] if target else [])
            rows["soft_logp"].append(target.logp[:len(enc.input_ids)] if target else [])
    return Dataset.from_dict(rows), truncated, dropped
