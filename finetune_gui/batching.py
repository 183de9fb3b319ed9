"""Turning examples into training batches."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterable

import torch

from .documents import document_chunks
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


class PackingCollator:
    """A batch as one sequence without padding (transformers' ``DataCollatorWithFlattening``):
    positions restart at each example, which the model's attention reads as "no attention
    across this boundary", and each example's first label is masked so that no token is
    predicted from the example before. Replay soft targets are flattened the same way."""

    def __init__(self):
        from transformers import DataCollatorWithFlattening
        self._flatten = DataCollatorWithFlattening(return_position_ids=True,
                                                   separator_id=IGNORE_INDEX)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._flatten([{"input_ids": r["input_ids"], "labels": r["labels"]}
                               for r in rows])
        # For the Trainer's count of real tokens only: the Trainer's loss drops it before
        # the model sees it, as a mask would hide the boundaries that the positions mark.
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        soft_rows = [r.get("soft_ids") for r in rows]
        if any(soft_rows):
            k = len(next(s for s in soft_rows if s)[0])
            ids, logp = [], []
            for row in rows:  # the first position of each example is a boundary: none
                n = len(row["input_ids"])
                row_ids = list(row.get("soft_ids") or [])[1:n]
                row_logp = list(row.get("soft_logp") or [])[1:n]
                ids += [[-1] * k] + row_ids + [[-1] * k] * (n - 1 - len(row_ids))
                logp += [[0.0] * k] + row_logp + [[0.0] * k] * (n - 1 - len(row_logp))
            batch.update(soft_ids=torch.tensor([ids], dtype=torch.long),
                         soft_logp=torch.tensor([logp], dtype=torch.float32))
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


TOKENS_PER_WRITE = 1000  # examples tokenised and written to Arrow at a time


def token_count(dataset) -> int:
    """Tokens in a tokenised ``datasets.Dataset``, from Arrow's list lengths (no row is
    turned into Python objects; a selection or repetition of rows counts as it is)."""
    import pyarrow.compute as pc
    lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"])
    return int(pc.sum(lengths).as_py() or 0)


def token_features():
    """The columns of a tokenised dataset, as ``Dataset.from_dict`` infers them (so that
    rows written in a stream and rows built in memory are the same dataset)."""
    from datasets import Features, List, Value
    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int64")),
                     "length": Value("int64")})


def encode_rows(examples, spec: TemplateSpec, tokenizer, max_len: int, soft=None,
                overlap: int = 0) -> tuple[dict[str, list], int, int]:
    """The columns (ids/labels/length) of ``examples`` plus (truncated, dropped) counts.

    A document (raw text) becomes as many rows as it has ``max_len`` chunks (see
    ``finetune_gui.documents``; ``overlap`` tokens of context each), never truncated.
    ``soft``, when given, holds one ``replay.SoftTargets`` (or None) per example: those rows
    are trained towards the base's distributions instead of their tokens alone."""
    rows = {"input_ids": [], "labels": [], "length": []}
    if soft is not None:
        rows.update(soft_ids=[], soft_logp=[])
    truncated = dropped = 0
    for i, example in enumerate(examples):
        target = soft[i] if soft is not None else None
        if example.text is not None:
            pieces = document_chunks(example, tokenizer, max_len, overlap)
        else:
            enc = encode_example(example, spec, tokenizer, max_len)
            truncated += enc.truncated
            if enc.trained_tokens == 0:  # the answer was cut off entirely: nothing to learn
                dropped += 1
                continue
            pieces = [(enc.input_ids, enc.labels)]
        for ids, labels in pieces:
            rows["input_ids"].append(ids)
            rows["labels"].append(labels)
            rows["length"].append(len(ids))
            if soft is not None:
                rows["soft_ids"].append(target.ids[:len(ids)] if target else [])
                rows["soft_logp"].append(target.logp[:len(ids)] if target else [])
    return rows, truncated, dropped


def tokenize_examples(examples, spec: TemplateSpec, tokenizer, max_len: int, soft=None,
                      overlap: int = 0):
    """A ``datasets.Dataset`` in memory of ``encode_rows``, plus (truncated, dropped)."""
    from datasets import Dataset
    rows, truncated, dropped = encode_rows(examples, spec, tokenizer, max_len, soft, overlap)
    return Dataset.from_dict(rows), truncated, dropped


def with_soft_columns(dataset, features):
    """``dataset`` with empty replay soft targets (``features``' types, to concatenate with
    replay rows): its rows are trained on their tokens alone."""
    empty = [[]] * len(dataset)
    return (dataset.add_column("soft_ids", empty, feature=features["soft_ids"])
            .add_column("soft_logp", empty, feature=features["soft_logp"]))


def write_tokens(examples: Iterable, file: Path, spec: TemplateSpec, tokenizer, max_len: int,
                 overlap: int = 0, progress: Callable[[int], None] | None = None):
    """``tokenize_examples`` as a stream: ``TOKENS_PER_WRITE`` examples at a time are
    tokenised and written to the Arrow file ``file`` by ``datasets``' writer, so memory
    stays flat however many there are; returns the file memory-mapped as a ``Dataset``,
    plus (truncated, dropped). ``progress`` is told the examples done after each write."""
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter
    truncated = dropped = done = 0
    examples = iter(examples)
    with ArrowWriter(features=token_features(), path=str(file)) as writer:
        while chunk := list(itertools.islice(examples, TOKENS_PER_WRITE)):
            rows, cut, lost = encode_rows(chunk, spec, tokenizer, max_len, overlap=overlap)
            writer.write_batch(rows)
            truncated, dropped, done = truncated + cut, dropped + lost, done + len(chunk)
            if progress is not None:
                progress(done)
        writer.finalize()
    return Dataset.from_file(str(file)), truncated, dropped
