"""How long the run's batches really are: the longest row and the longest answer, in tokens.

A memory estimate at ``train.max_seq_len`` describes a batch of rows that long; the
quickstart's rows are a quarter of that, and with loss on answers only the head projects
only the answer positions. The peak step is the batch of the longest rows (the Trainer's
length grouping puts it first), so the estimate uses these lengths when the data can be
read: a few hundred milliseconds once per file, cached by its size and modification time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig

MAX_SHAPE_BYTES = 20_000_000   # bigger files: assume rows of max_seq_len
MAX_SHAPE_ROWS = 5_000
REPLAY_PROMPT_TOKENS = 64      # a general question with its chat template


@dataclass(frozen=True)
class DataShape:
    longest: int          # tokens of the longest row after truncation
    longest_answer: int   # trained tokens of the row with the most
    rows: int = 0         # training rows (replay's not included)
    tokens: int = 0       # all rows' tokens (scaled up from the rows measured), replay's too


def data_shape(config: RunConfig) -> DataShape | None:
    """The token lengths of ``config``'s data, or None when they cannot be known cheaply
    (no file, too big, unreadable, the tokenizer not on this machine)."""
    d = config.data
    path = Path(d.path)
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if not path.is_file() or stat.st_size > MAX_SHAPE_BYTES:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, d.format, d.template,
           d.custom_template, d.system_prompt, config.model.name_or_path,
           config.model.trust_remote_code, config.train.max_seq_len)
    if key not in _SHAPES:
        _SHAPES[key] = _measure(config)
        while len(_SHAPES) > 16:
            _SHAPES.pop(next(iter(_SHAPES)))
    shape = _SHAPES[key]
    if shape is None or not d.replay_ratio:
        return shape
    from ..replay import REPLAY_GENERATION
    answer = min(REPLAY_GENERATION.max_new_tokens, config.train.max_seq_len)
    replay_row = min(config.train.max_seq_len, REPLAY_PROMPT_TOKENS + answer)
    return DataShape(max(shape.longest, replay_row), max(shape.longest_answer, answer),
                     shape.rows, shape.tokens + round(d.replay_ratio * shape.rows) * replay_row)


_SHAPES: dict[tuple, DataShape | None] = {}


def _measure(config: RunConfig) -> DataShape | None:
    from ..data import check_file
    from ..errors import FinetuneError
    from ..models import load_tokenizer
    from ..templates import TemplateSpec, encode_example
    try:
        report = check_file(config.data.path, config.data.format)
        tokenizer = load_tokenizer(config.model)
        spec = TemplateSpec.from_data_config(config.data)
        longest = longest_answer = tokens = 0
        measured = report.examples[:MAX_SHAPE_ROWS]
        for example in measured:
            enc = encode_example(example, spec, tokenizer, config.train.max_seq_len)
            longest = max(longest, len(enc.input_ids))
            longest_answer = max(longest_answer, enc.trained_tokens)
            tokens += len(enc.input_ids)
    except (FinetuneError, OSError, ValueError):
        return None
    rows = len(report.examples)
    return DataShape(longest, longest_answer, rows, round(tokens * rows / len(measured))) \
        if longest else None
