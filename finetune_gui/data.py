"""Read instruction data, detect its format, and check every row with its line number.

Rows become ``Example`` objects (an optional system message and user/assistant turns) that
the templates turn into text. Nothing here trains or tokenises.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DataConfig, atomic_write_text
from .errors import DataError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
# Spreadsheets are ZIP (xlsx, ods) or OLE2 (xls) containers: recognise them under any name.
SPREADSHEET_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
SAVE_AS_CSV = "save it as CSV UTF-8 (File > Save As > CSV) and load the .csv"
FORMATS = ("alpaca", "messages", "sharegpt", "preference", "kto")
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

    def with_answer(self, text: str, **changes) -> "Example":
        """The same conversation with ``text`` as the last answer (e.g. a pair's other side)."""
        last = self.turns[-1]
        fields = dict(system=self.system, where=self.where) | changes
        return Example(self.turns[:-1] + [Turn(last.instruction, last.input, text)], **fields)

    def to_row(self) -> dict:
        """The example as a ``messages`` row (keywords kept), e.g. for the saved split."""
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
class RowError:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class DataReport:
    """Everything a check of one file found: good examples, bad rows, warnings."""
    path: str
    format: str
    rows_total: int
    examples: list[Example] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_if_bad(self) -> None:
        if not self.errors:
            return
        more = len(self.errors) - 1
        tail = f" (and {more} more bad rows: run 'python -m finetune_gui validate {self.path}')" \
            if more else ""
        raise DataError(f"{self.path} {self.errors[0]}{tail}")


# ---- reading raw rows -----------------------------------------------------------------

def read_rows(path: str | Path) -> tuple[list[tuple[str, Any]], list[RowError]]:
    """Raw rows with their place in the file (``"line 3"``), and rows that could not be read."""
    p = Path(path)
    if not str(path).strip():
        raise DataError("no data file given (data.path is empty)")
    if not p.exists():
        raise DataError(f"{p}: data file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a data file")
    suffix = p.suffix.lower()
    if suffix in SPREADSHEET_SUFFIXES:
        raise DataError(f"{p}: is a spreadsheet, not a data file: {SAVE_AS_CSV}")
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{p}: unsupported file type '{suffix or '(none)'}' — use "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty")
    if suffix == ".parquet":
        return _read_table(p, "parquet"), []
    raw = p.read_bytes()
    if raw.startswith(SPREADSHEET_MAGIC):
        raise DataError(f"{p}: is a spreadsheet or ZIP archive renamed to {suffix}, not "
                        f"{suffix[1:].upper()} text: {SAVE_AS_CSV}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{p}: is UTF-16 text: save it again as UTF-8")
    if suffix != ".csv" and b"\x00" in raw[:8192]:
        raise DataError(f"{p}: looks like a binary file, not {suffix[1:].upper()} text")
    if suffix == ".csv":
        return _read_table(p, "csv"), []
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if suffix == ".json":
        return _read_json(p, raw)
    return _read_jsonl(raw)


def _read_jsonl(raw: bytes) -> tuple[list[tuple[str, Any]], list[RowError]]:
    rows, errors = [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(RowError(where, f"not UTF-8 text (byte {exc.start + 1})"))
            continue
        try:
            rows.append((where, json.loads(text)))
        except json.JSONDecodeError as exc:
            errors.append(RowError(where, f"invalid JSON: {exc.msg} (column {exc.colno})"))
    return rows, errors


def _read_json(path: Path, raw: bytes) -> tuple[list[tuple[str, Any]], list[RowError]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if "Extra data" in exc.msg and text.lstrip().startswith("{"):
            return _read_jsonl(raw)  # JSON Lines saved as .json
        raise DataError(f"{path} line {exc.lineno}: invalid JSON: {exc.msg} "
                        f"(column {exc.colno})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of rows (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return [(f"item {i}", row) for i, row in enumerate(data, start=1)], []


def _read_table(path: Path, kind: str) -> list[tuple[str, Any]]:
    import pandas as pd
    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except Exception as exc:  # pandas/pyarrow raise many parser types; all mean "unreadable"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = reason.replace(f" '{path}'", "").replace(str(path), "the file")
        if len(reason) > 200:
            reason = reason[:199].rsplit(" ", 1)[0] + "…"
        raise DataError(f"{path}: cannot read {kind.upper()}: {reason}") from None
    offset = 2 if kind == "csv" else 1  # CSV: header is line 1
    label = "line" if kind == "csv" else "row"
    rows = []
    for i, record in enumerate(frame.to_dict(orient="records")):
        rows.append((f"{label} {i + offset}", {k: _plain(v) for k, v in record.items()}))
    return rows


def _plain(value: Any) -> Any:
    """Turn numpy/pyarrow values from a table into plain Python."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
    return None


def row_to_example(row: Any, fmt: str, where: str) -> Example:
    """Convert one row or raise ``ValueError`` with the reason (the caller adds where)."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object with fields, got {type(row).__name__}")
    if fmt in ("preference", "kto"):
        from .preference import row_to_preference_example
        return row_to_preference_example(row, fmt, where)
    if fmt == "alpaca":
        instruction = _text_field(row, "instruction")
        output = _text_field(row, "output")
        extra = row.get("input", "")
        if extra is None:
            extra = ""
        if not isinstance(extra, str):
            raise ValueError(f"field 'input' must be text, got {type(extra).__name__}")
        system = row.get("system") or ""
        if not isinstance(system, str):
            raise ValueError("field 'system' must be text")
        return Example([Turn(instruction, extra, output)], system=system, where=where,
                       keywords=row_keywords(row))
    key, role_key, content_key = (("messages", "role", "content") if fmt == "messages"
                                  else ("conversations", "from", "value"))
    messages = row.get(key)
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)  # CSV cells hold the list as JSON text
        except json.JSONDecodeError:
            raise ValueError(f"field '{key}' is text that is not a JSON list") from None
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field '{key}' must be a non-empty list of messages")
    system, turns, _ = walk_messages(messages, key, role_key, content_key,
                                     roles=SHAREGPT_ROLES if fmt == "sharegpt" else None)
    if not turns:
        raise ValueError(f"'{key}' has no assistant answer to learn from")
    return Example(turns, system=system, where=where, keywords=row_keywords(row))


def walk_messages(messages: list, key: str, role_key: str = "role",
                  content_key: str = "content", roles: dict | None = None
                  ) -> tuple[str, list[Turn], str | None]:
    """(system text, answered turns, a last user message still unanswered) of a message
    list, or ``ValueError`` naming the message. ``roles`` maps other role names (ShareGPT's)."""
    system, turns, pending = "", [], None
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            raise ValueError(f"{key}[{i}] must be an object")
        raw_role = msg.get(role_key)
        role = roles.get(str(raw_role).lower()) if roles is not None else raw_role
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"{key}[{i}]: unknown {role_key} {raw_role!r} "
                             "(expected system, user or assistant)")
        content = msg.get(content_key)
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{key}[{i}]: '{content_key}' is missing or empty")
        if role == "system":
            if turns or pending is not None:
                raise ValueError(f"{key}[{i}]: a system message may only come first")
            system = content
        elif role == "user":
            if pending is not None:
                raise ValueError(f"{key}[{i}]: two user messages in a row")
            pending = content
        else:
            if pending is None:
                raise ValueError(f"{key}[{i}]: assistant message without a user message before it")
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
        raise ValueError("field 'keywords' must be text or a list of texts")
    return [k.strip() for k in value if k.strip()]


def _text_field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise ValueError(f"missing field '{name}'")
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"field '{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field '{name}' is empty")
    return value


def check_file(path: str | Path, fmt: str = "auto") -> DataReport:
    """Read and check every row; never raises for bad rows, only for unreadable files."""
    rows, errors = read_rows(path)
    if not rows and not errors:
        raise DataError(f"{path}: the file has no rows")
    if fmt == "auto":
        found = Counter(f for _, r in rows if (f := detect_row_format(r)))
        if not found:
            if rows and isinstance(rows[0][1], dict):
                cols = ", ".join(map(str, rows[0][1].keys())) or "none"
                raise DataError(f"{path}: cannot tell the format from its fields ({cols}); "
                                "need instruction/output (alpaca), messages, conversations, "
                                "prompt/chosen/rejected (preference) or prompt/completion/label "
                                "(kto)")
            fmt = "alpaca"
        else:
            fmt = found.most_common(1)[0][0]
    report = DataReport(str(path), fmt, len(rows) + len(errors), errors=list(errors))
    if fmt == "alpaca" and str(path).lower().endswith(".csv") and rows:
        cols = set(rows[0][1].keys())
        missing = [c for c in ("instruction", "output") if c not in cols]
        if missing:
            raise DataError(f"{path}: CSV has columns {', '.join(sorted(cols)) or 'none'}; "
                            f"needs {' and '.join(missing)} (alpaca format)")
    seen: dict[str, str] = {}
    for where, row in rows:
        row_fmt = detect_row_format(row)
        if row_fmt is not None and row_fmt != fmt:
            report.errors.append(RowError(where, f"row is in {row_fmt} format but the file is "
                                                 f"{fmt}: one format per file"))
            continue
        try:
            example = row_to_example(row, fmt, where)
        except ValueError as exc:
            report.errors.append(RowError(where, str(exc)))
            continue
        key = json.dumps([example.system, [(t.instruction, t.input, t.output)
                                           for t in example.turns], example.rejected,
                          example.label], ensure_ascii=False)
        if key in seen:
            report.warnings.append(f"{where} duplicates {seen[key]}")
        else:
            seen[key] = where
        report.examples.append(example)
    report.errors.sort(key=lambda e: _where_number(e.where))
    del report.errors[MAX_ERRORS_KEPT:]
    return report


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
    if cfg.val_split <= 0 or len(examples) < 2:
        return DataSplit(examples, [], report)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(examples) * cfg.val_split)))
    val_idx = set(order[:n_val])
    return DataSplit([e for i, e in enumerate(examples) if i not in val_idx],
                     [e for i, e in enumerate(examples) if i in val_idx], report)


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
        raise DataError(f"{p}: could not save ({reason}); the file on disk was left as it "
                        "was and your edits are still here: free some space and save again") \
            from None
    return backup
