"""A run's examples read in memory (small files) or streamed (large files, Hub datasets).

``streams`` is the one place that decides. A streamed file is checked in one pass of flat
memory (every bad row named by line, as ``validate`` does), split by the same seeded rule
as in memory (``data.held_out_indices``), and its training rows are read again from the
disk each time they are walked (``ExampleRows``), so they are never all in memory: the
tokens go to an Arrow file batch by batch (``batching.write_tokens``). Only the held-out
rows are kept, to be saved beside the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from .config import DataConfig
from .data import (DataReport, DataSplit, Example, check_file, checked_examples,
                   held_out_indices, load_examples)
from .documents import is_document_source
from .hub_data import is_hub_id

STREAM_FROM_BYTES = 64 * 2**20


def streams(cfg: DataConfig, method: str = "sft") -> bool:
    """Whether ``cfg.path`` is streamed: a Hub dataset, or a row file of at least
    ``STREAM_FROM_BYTES``, for supervised training (preference trainers take their
    rows as lists; raw text files are read whole as documents)."""
    if method != "sft" or not str(cfg.path).strip():
        return False
    if is_hub_id(cfg.path):
        return True
    if is_document_source(cfg.path):
        return False
    try:
        return Path(cfg.path).stat().st_size >= STREAM_FROM_BYTES
    except OSError:  # missing or unreadable: the reader says so in its own words
        return False


class ExampleRows:
    """The good examples of a checked file whose index (among the first ``limit``) is in
    ``held`` (or not in it), read from the file on each walk."""

    def __init__(self, path: str, fmt: str, limit: int, held: set[int], *, in_held: bool):
        self.path, self.format, self.limit = path, fmt, limit
        self.held, self.in_held = held, in_held

    def __len__(self) -> int:
        return len(self.held) if self.in_held else self.limit - len(self.held)

    def __iter__(self) -> Iterator[Example]:
        report = DataReport(self.path, self.format, 0)
        for index, example in enumerate(checked_examples(report)):
            if index >= self.limit:
                return
            if (index in self.held) == self.in_held:
                yield example


def load_split(cfg: DataConfig, seed: int = 42, method: str = "sft",
               progress: Callable[[int, int], None] | None = None,
               stream: bool | None = None) -> DataSplit:
    """``data.load_examples``, streamed where ``streams`` says (or ``stream`` forces):
    the same rows, split the same way, with the training rows as ``ExampleRows``."""
    if not (streams(cfg, method) if stream is None else stream):
        return load_examples(cfg, seed=seed)
    report = check_file(cfg.path, cfg.format, keep_examples=False, progress=progress)
    report.raise_if_bad()
    limit = min(report.good_rows, cfg.max_rows or report.good_rows)
    held = set() if cfg.val_path else set(held_out_indices(limit, cfg.val_split, seed))
    train = ExampleRows(cfg.path, report.format, limit, held, in_held=False)
    if report.format in ("preference", "kto"):  # sft on pairs or labels: a list to filter
        train = list(train)
    if cfg.val_path:
        validation = check_file(cfg.val_path, cfg.format)
        validation.raise_if_bad()
        return DataSplit(train, validation.examples, report)
    return DataSplit(train, list(ExampleRows(cfg.path, report.format, limit, held,
                                             in_held=True)) if held else [], report)
