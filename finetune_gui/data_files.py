"""Reading data files into raw rows, each with its place in the file (``"line 3"``).

JSON Lines, the format of large datasets, is read as a stream: one line at a time from the
file, so checking a file larger than memory keeps memory flat. JSON, CSV and Parquet are
read whole (pandas/pyarrow); a Hub dataset id through ``datasets`` (see ``hub_data``).
File-level problems (a spreadsheet, UTF-16, a binary file) raise ``DataError`` before any
row; a row that cannot be read is a ``RowError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import DataError
from .messages import Message

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
# Spreadsheets are ZIP (xlsx, ods) or OLE2 (xls) containers: recognise them under any name.
SPREADSHEET_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
PROGRESS_EVERY_LINES = 20_000

Progress = Callable[[int, int], None]  # (bytes read, file size)


@dataclass
class RowError:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_rows(path: str | Path) -> tuple[list[tuple[str, Any]], list[RowError]]:
    """Every raw row with its place in the file, and the rows that could not be read."""
    rows, errors = [], []
    for where, row in iter_rows(path):
        if isinstance(row, RowError):
            errors.append(row)
        else:
            rows.append((where, row))
    return rows, errors


def iter_rows(path: str | Path, progress: Progress | None = None
              ) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of the file, or (where, ``RowError``) for one that could
    not be read; JSON Lines streamed from the disk, ``progress`` told as it goes. A Hub
    dataset id (``org/name[:split]``, see ``hub_data``) is read through ``datasets``."""
    from .hub_data import hub_rows, is_hub_id
    if is_hub_id(str(path)):
        yield from hub_rows(str(path))
        return
    p = _checked_path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        yield from _stream_parquet(p, progress)
        return
    with p.open("rb") as file:
        head = file.read(8192)
    if head.startswith(SPREADSHEET_MAGIC):
        raise DataError(Message("file.renamed_archive", path=p, suffix=suffix,
                                kind=suffix[1:].upper(), remedy=Message("file.save_as_csv")))
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(Message("file.utf16", path=p))
    if suffix != ".csv" and b"\x00" in head:
        raise DataError(Message("file.binary", path=p, kind=suffix[1:].upper()))
    if suffix == ".csv":
        yield from _read_csv(p)
    elif suffix == ".json":
        yield from _read_json(p, _without_bom(p.read_bytes()))
    else:
        yield from _stream_jsonl(p, progress)


def _checked_path(path: str | Path) -> Path:
    p = Path(path)
    if not str(path).strip():
        raise DataError(Message("file.no_path"))
    if not p.exists():
        raise DataError(Message("file.not_found", path=p))
    if p.is_dir():
        raise DataError(Message("file.folder", path=p))
    suffix = p.suffix.lower()
    if suffix in SPREADSHEET_SUFFIXES:
        raise DataError(Message("file.spreadsheet", path=p, remedy=Message("file.save_as_csv")))
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(Message("file.unsupported", path=p, suffix=suffix or "(none)",
                                supported=", ".join(SUPPORTED_SUFFIXES)))
    if p.stat().st_size == 0:
        raise DataError(Message("file.empty", path=p))
    return p


def _without_bom(raw: bytes) -> bytes:
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw


def _stream_jsonl(path: Path, progress: Progress | None) -> Iterator[tuple[str, Any]]:
    size = path.stat().st_size
    with path.open("rb") as file:
        lines = (_without_bom(line) if number == 1 else line
                 for number, line in enumerate(file, start=1))
        for count, item in enumerate(_jsonl_rows(lines), start=1):
            if progress is not None and count % PROGRESS_EVERY_LINES == 0:
                progress(file.tell(), size)
            yield item
    if progress is not None:
        progress(size, size)


def _stream_parquet(path: Path, progress: Progress | None) -> Iterator[tuple[str, Any]]:
    """Parquet one row group's batch at a time (pyarrow), so a large file stays on disk."""
    import pyarrow.parquet as pq
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types; all mean "unreadable"
        raise DataError(Message("file.unreadable", path=path, kind="PARQUET",
                                why=_short_reason(exc, path))) from None
    number, total = 0, file.metadata.num_rows
    for batch in file.iter_batches(batch_size=PROGRESS_EVERY_LINES):
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", row
        if progress is not None:
            progress(number, total)


def _jsonl_rows(lines: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\n")  # a file's lines keep their end; the column counts without
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, RowError(where, Message("file.row_not_utf8", byte=exc.start + 1))
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as exc:
            yield where, RowError(where, Message("file.row_json", why=exc.msg, column=exc.colno))


def _read_json(path: Path, raw: bytes) -> list[tuple[str, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(Message("file.line_not_utf8", path=path, where=f"line {line}")) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if "Extra data" in exc.msg and text.lstrip().startswith("{"):
            return list(_jsonl_rows(raw.split(b"\n")))  # JSON Lines saved as .json
        raise DataError(Message("file.line_json", path=path, where=f"line {exc.lineno}",
                                why=exc.msg, column=exc.colno)) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(Message("file.json_one_list", path=path))
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(Message("file.json_not_list", path=path, kind=type(data).__name__))
    return [(f"item {i}", row) for i, row in enumerate(data, start=1)]


def _read_csv(path: Path) -> list[tuple[str, Any]]:
    import pandas as pd
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(Message("file.not_utf8", path=path)) from None
    except Exception as exc:  # pandas raises many parser types; all mean "unreadable"
        raise DataError(Message("file.unreadable", path=path, kind="CSV",
                                why=_short_reason(exc, path))) from None
    return [(f"line {i + 2}", {k: _plain(v) for k, v in record.items()})  # line 1: header
            for i, record in enumerate(frame.to_dict(orient="records"))]


def _short_reason(exc: BaseException, path: Path) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = reason.replace(f" '{path}'", "").replace(str(path), "the file")
    return reason if len(reason) <= 200 else reason[:199].rsplit(" ", 1)[0] + "…"


def _plain(value: Any) -> Any:
    """Turn numpy/pyarrow values from a table into plain Python."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
