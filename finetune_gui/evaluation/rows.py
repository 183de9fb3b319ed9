"""The rows an evaluation asks: a run's held-out split, or any data file.

A row is a question (with any earlier turns as context), an optional reference answer and
optional keywords. Files in the Data step's formats (alpaca, messages, sharegpt) give the
last answer as the reference; a ``question`` row (``question`` or ``prompt``, with
``answer``/``reference`` and/or ``keywords``) needs no answer at all: a pure fact check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data import Example, Turn, detect_row_format, row_keywords, row_to_example
from ..data_files import RowError, read_rows
from ..errors import DataError
from ..messages import Message, reason_of

QUESTION_FIELDS = ("question", "prompt")
REFERENCE_FIELDS = ("answer", "reference", "output")


@dataclass
class EvalRow:
    """One question; ``example``'s last turn holds the reference (empty if none)."""
    example: Example
    where: str
    keywords: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        return self.example.turns[-1].instruction

    @property
    def reference(self) -> str:
        return self.example.turns[-1].output

    @property
    def language(self) -> str:
        from .metrics import has_cjk
        return "zh" if has_cjk(self.prompt + self.reference) else "en"


def _question_row(row: dict) -> Example:
    prompt = next((row[k] for k in QUESTION_FIELDS if k in row), None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(Message("eval.row_question"))
    reference = next((row[k] for k in REFERENCE_FIELDS if row.get(k) is not None), "")
    if not isinstance(reference, str):
        raise ValueError(Message("row.not_text", name="answer", kind=type(reference).__name__))
    system = row.get("system") or ""
    if not isinstance(system, str):
        raise ValueError(Message("row.not_text", name="system", kind=type(system).__name__))
    return Example([Turn(prompt, "", reference)], system=system)


def row_to_eval_row(row, where: str) -> EvalRow:
    """One raw row as an evaluation row; ``ValueError`` says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError(Message("row.not_object", kind=type(row).__name__))
    if any(k in row for k in QUESTION_FIELDS) and detect_row_format(row) is None:
        example = _question_row(row)
    else:
        fmt = detect_row_format(row)
        if fmt is None:
            raise ValueError(Message("eval.row_no_question"))
        if fmt == "text":
            raise ValueError(Message("eval.row_document"))
        example = row_to_example(row, fmt, where)
    keywords = row_keywords(row)
    if not example.turns[-1].output.strip() and not keywords:
        raise ValueError(Message("eval.row_nothing_to_score"))
    source = row.get("source")  # a saved split names the row of the original file
    shown = source if isinstance(source, str) and source.strip() else where
    example.where = shown
    return EvalRow(example, shown, keywords)


def read_eval_rows(path: str | Path) -> list[EvalRow]:
    """Every row of ``path``; raises ``DataError`` naming the first bad row (and the count)."""
    raw, errors = read_rows(path)
    rows = []
    for where, row in raw:
        try:
            rows.append(row_to_eval_row(row, where))
        except ValueError as exc:
            errors.append(RowError(where, reason_of(exc)))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            raise DataError(Message("eval.bad_rows", path=path, where=first.where,
                                    reason=first.reason, more=len(errors) - 1))
        raise DataError(Message("data.bad_row", path=path, where=first.where, reason=first.reason))
    if not rows:
        raise DataError(Message("eval.no_rows", path=path))
    return rows
