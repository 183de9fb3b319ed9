"""Read instruction data, detect its format, and check every row with its line number.

Rows become ``Example`` objects (an optional system message and user/assistant turns) that
the templates turn into text. Nothing here trains or tokenises.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .config import DataConfig, atomic_write_text
from .data_files import Progress, RowError, iter_rows
from .errors import DataError
from .messages import Message, reason_of

FORMATS = ("alpaca", "messages", "sharegpt", "preference", "kto", "text")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bing": "assistant", "chatgpt": "assistant"}
MAX_ERRORS_KEPT = 1000


@dataclass
class Turn:
    """One user request and the answer the model should learn to give."""
    instruction: str
    input: str = ""
    output: str = ""


@dataclass
class Example:
    turns: list[Turn]
    system: str = ""
    where: str = ""  # e.g. "line 12": where the row came from, for messages and previews
    keywords: list[str] = field(default_factory=list)  # fact checks for evaluation
    rejected: str | None = None  # preference rows: the answer not to give (the last turn's is chosen)
    label: bool | None = None  # KTO rows: whether the last turn's answer is desirable
    text: str | None = None  # raw text (a document): no turns, every token trained

    def with_answer(self, text: str, **changes) -> "Example":
        """The same conversation with ``text`` as the last answer (e.g. a pair's other side)."""
        last = self.turns[-1]
        fields = dict(system=self.system, where=self.where) | changes
        return Example(self.turns[:-1] + [Turn(last.instruction, last.input, text)], **fields)

    def to_row(self) -> dict:
        """The example as a ``messages`` row (keywords kept), e.g. for the saved split."""
        if self.text is not None:
            return {"text": self.text} | ({"source": self.where} if self.where else {})
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns:
            user = f"{turn.instruction}\n\n{turn.input}" if turn.input else turn.instruction
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": turn.output}]
        row: dict = {"messages": messages}
        if self.rejected is not None or self.label is not None:
            answer = messages.pop()["content"]
            row = {"prompt": messages}
            row.update({"chosen": answer, "rejected": self.rejected} if self.rejected is not None
                       else {"completion": answer, "label": self.label})
        if self.keywords:
            row["keywords"] = self.keywords
        if self.where:
            row["source"] = self.where
        return row


@dataclass
class DataReport:
    """Everything a check of one file found: good examples, bad rows, warnings."""
    path: str
    format: str
    rows_total: int
    examples: list[Example] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)  # the first MAX_ERRORS_KEPT
    warnings: list[str] = field(default_factory=list)
    good_rows: int = 0  # counted whether or not the examples are kept
    bad_rows: int = 0   # counted beyond the errors kept
    duplicates: int = 0

    def raise_if_bad(self) -> None:
        if not self.errors:
            return
        more = max(self.bad_rows, len(self.errors)) - 1
        first = self.errors[0]
        if more:
            raise DataError(Message("data.bad_rows", path=self.path, where=first.where,
                                    reason=first.reason, more=more))
        raise DataError(Message("data.bad_row", path=self.path, where=first.where,
                                reason=first.reason))


# ---- formats ----------------------------------------------------------------------------

def detect_row_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    from .preference import detect_preference_format  # it reads rows into our Example
    if (preference := detect_preference_format(row)) is not None:
        return preference
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    if "text" in row:
        return "text"
    return None


def row_to_example(row: Any, fmt: str, where: str) -> Example:
    """Convert one row or raise ``ValueError`` with the reason (the caller adds where)."""
    if not isinstance(row, dict):
        raise ValueError(Message("row.not_object", kind=type(row).__name__))
    if fmt in ("preference", "kto"):
        from .preference import row_to_preference_example
        return row_to_preference_example(row, fmt, where)
    if fmt == "text":
        return Example([], where=where, text=_text_field(row, "text"))
    if fmt == "alpaca":
        instruction = _text_field(row, "instruction")
        output = _text_field(row, "output")
        extra = row.get("input", "")
        if extra is None:
            extra = ""
        if not isinstance(extra, str):
            raise ValueError(Message("row.not_text", name="input", kind=type(extra).__name__))
        system = row.get("system") or ""
        if not isinstance(system, str):
            raise ValueError(Message("row.not_text", name="system", kind=type(system).__name__))
        return Example([Turn(instruction, extra, output)], system=system, where=where,
                       keywords=row_keywords(row))
    key, role_key, content_key = (("messages", "role", "content") if fmt == "messages"
                                  else ("conversations", "from", "value"))
    messages = row.get(key)
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)  # CSV cells hold the list as JSON text
        except json.JSONDecodeError:
            raise ValueError(Message("row.not_json_list", name=key)) from None
    if not isinstance(messages, list) or not messages:
        raise ValueError(Message("row.no_messages", name=key))
    system, turns, _ = walk_messages(messages, key, role_key, content_key,
                                     roles=SHAREGPT_ROLES if fmt == "sharegpt" else None)
    if not turns:
        raise ValueError(Message("row.no_answer", name=key))
    return Example(turns, system=system, where=where, keywords=row_keywords(row))


def walk_messages(messages: list, key: str, role_key: str = "role",
                  content_key: str = "content", roles: dict | None = None
                  ) -> tuple[str, list[Turn], str | None]:
    """(system text, answered turns, a last user message still unanswered) of a message
    list, or ``ValueError`` naming the message. ``roles`` maps other role names (ShareGPT's)."""
    system, turns, pending = "", [], None
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            raise ValueError(Message("row.msg_not_object", at=f"{key}[{i}]"))
        raw_role = msg.get(role_key)
        role = roles.get(str(raw_role).lower()) if roles is not None else raw_role
        if role not in ("system", "user", "assistant"):
            raise ValueError(Message("row.msg_role", at=f"{key}[{i}]", field=role_key,
                                     role=repr(raw_role)[:80]))
        content = msg.get(content_key)
        if not isinstance(content, str) or not content.strip():
            raise ValueError(Message("row.msg_empty", at=f"{key}[{i}]", field=content_key))
        if role == "system":
            if turns or pending is not None:
                raise ValueError(Message("row.msg_system_late", at=f"{key}[{i}]"))
            system = content
        elif role == "user":
            if pending is not None:
                raise ValueError(Message("row.msg_two_users", at=f"{key}[{i}]"))
            pending = content
        else:
            if pending is None:
                raise ValueError(Message("row.msg_no_user", at=f"{key}[{i}]"))
            turns.append(Turn(pending, "", content))
            pending = None
    return system, turns, pending


def row_keywords(row: dict) -> list[str]:
    """A row's ``keyword`` or ``keywords`` (a string or a list of strings): fact checks that
    evaluation looks for in an answer; training ignores them."""
    value = row.get("keywords", row.get("keyword"))
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError(Message("row.keywords"))
    return [k.strip() for k in value if k.strip()]


def _text_field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise ValueError(Message("row.missing", name=name))
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(Message("row.not_text", name=name, kind=type(value).__name__))
    if not value.strip():
        raise ValueError(Message("row.empty", name=name))
    return value


FORMAT_SNIFF_ROWS = 1000  # the rows that decide a file's format when it is "auto"


def check_file(path: str | Path, fmt: str = "auto", *, keep_examples: bool = True,
               progress: Progress | None = None) -> DataReport:
    """Read and check every row; never raises for bad rows, only for unreadable files.

    Rows are checked as they are read, so with ``keep_examples=False`` (``validate``) a
    JSON Lines file of any size is checked in flat memory: only the count of good rows,
    the first ``MAX_ERRORS_KEPT`` problems and an 8-byte hash per row (for duplicates)
    are kept."""
    from .documents import is_document_source, read_documents  # raw text: its own reader
    if str(path).strip() and is_document_source(path):
        if fmt not in ("auto", "text"):
            raise DataError(Message("data.text_format", path=path, fmt=fmt))
        return read_documents(path)
    report = DataReport(str(path), fmt, 0)
    for example in checked_examples(report, progress=progress,
                                    all_warnings=keep_examples):
        if keep_examples:
            report.examples.append(example)
    return report


def checked_examples(report: DataReport, *, progress: Progress | None = None,
                     all_warnings: bool = False) -> Iterator[Example]:
    """The good examples of ``report.path`` as its rows are read (format "auto" is sniffed
    into ``report.format``); bad rows, duplicates and counts go into ``report`` as they
    come, so that a large file is checked or converted in one pass of flat memory."""
    path = report.path
    rows = iter_rows(path, progress)
    first = [item for _, item in zip(range(FORMAT_SNIFF_ROWS), rows)]
    if not first:
        raise DataError(Message("data.no_rows", path=path))
    if report.format == "auto":
        report.format = _sniff_format(path, [row for _, row in first
                                             if not isinstance(row, RowError)])
    fmt = report.format
    seen: dict[int, str] = {}
    for where, row in itertools.chain(first, rows):
        report.rows_total += 1
        if isinstance(row, RowError):
            _keep_error(report, row)
            continue
        if report.good_rows == 0 and fmt == "alpaca" and str(path).lower().endswith(".csv"):
            _check_csv_columns(path, row)
        row_fmt = detect_row_format(row)
        if row_fmt is not None and row_fmt != fmt:
            _keep_error(report, RowError(where, Message("row.other_format", row=row_fmt,
                                                        file=fmt)))
            continue
        try:
            example = row_to_example(row, fmt, where)
        except ValueError as exc:
            _keep_error(report, RowError(where, reason_of(exc)))
            continue
        report.good_rows += 1
        key = hash_example(example)
        if key in seen:
            report.duplicates += 1
            if all_warnings or len(report.warnings) < MAX_ERRORS_KEPT:
                report.warnings.append(f"{where} duplicates {seen[key]}")
        else:
            seen[key] = where
        yield example
    report.errors.sort(key=lambda e: _where_number(e.where))


def _keep_error(report: DataReport, error: RowError) -> None:
    report.bad_rows += 1
    if len(report.errors) < MAX_ERRORS_KEPT:
        report.errors.append(error)


def _sniff_format(path, rows: list) -> str:
    found = Counter(f for r in rows if (f := detect_row_format(r)))
    if found:
        return found.most_common(1)[0][0]
    if rows and isinstance(rows[0], dict):
        cols = ", ".join(map(str, rows[0].keys())) or "none"
        raise DataError(Message("data.unknown_format", path=path, fields=cols))
    return "alpaca"


def _check_csv_columns(path, row: dict) -> None:
    missing = [c for c in ("instruction", "output") if c not in row]
    if missing:
        raise DataError(Message("data.csv_columns", path=path,
                                columns=", ".join(sorted(map(str, row))) or "none",
                                missing=" and ".join(missing)))


def hash_example(example: Example) -> int:
    """8 bytes that tell two rows with the same content apart from all others."""
    key = json.dumps([example.system, [(t.instruction, t.input, t.output)
                                       for t in example.turns], example.rejected,
                      example.label, example.text], ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def _where_number(where: str) -> int:
    tail = where.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@dataclass
class DataSplit:
    train: list[Example]
    validation: list[Example]
    report: DataReport


def load_examples(cfg: DataConfig, seed: int = 42) -> DataSplit:
    """The training and validation examples a run uses; raises on any bad row."""
    report = check_file(cfg.path, cfg.format)
    report.raise_if_bad()
    examples = report.examples[: cfg.max_rows or None]
    if cfg.val_path:
        val_report = check_file(cfg.val_path, cfg.format)
        val_report.raise_if_bad()
        return DataSplit(examples, val_report.examples, report)
    val_idx = set(held_out_indices(len(examples), cfg.val_split, seed))
    return DataSplit([e for i, e in enumerate(examples) if i not in val_idx],
                     [e for i, e in enumerate(examples) if i in val_idx], report)


def held_out_indices(n: int, val_split: float, seed: int) -> list[int]:
    """Which of ``n`` examples are held out (seeded): one rule for rows read into memory
    and rows streamed from a large file, so both split a file the same way."""
    if val_split <= 0 or n < 2:
        return []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[:max(1, int(round(n * val_split)))]


# ---- saving edited rows -----------------------------------------------------------------

def write_examples(path: str | Path, examples: list[Example]) -> None:
    """Save examples as ``messages`` rows (keywords and source kept), e.g. a run's held-out
    split, so that they can be read back exactly."""
    atomic_write_text(Path(path), "".join(json.dumps(e.to_row(), ensure_ascii=False) + "\n"
                                          for e in examples))


def save_rows(path: str | Path, rows: list[dict]) -> Path | None:
    """Write rows as JSONL atomically; the previous file is kept as a timestamped backup."""
    p = Path(path)
    backup = None
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    try:
        if p.exists():
            stamp = time.strftime('%Y%m%d-%H%M%S')
            backup = p.with_name(f"{p.stem}.{stamp}.bak{p.suffix}")
            for n in range(2, 1000):  # two saves in one second must not share a backup
                if not backup.exists():
                    break
                backup = p.with_name(f"{p.stem}.{stamp}-{n}.bak{p.suffix}")
            shutil.copy2(p, backup)
        atomic_write_text(p, text)
    except OSError as exc:  # e.g. a full disk: the file itself is untouched (atomic write)
        if backup is not None and p.exists():
            backup.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        raise DataError(Message("data.not_saved", path=p, why=reason)) from None
    return backup
