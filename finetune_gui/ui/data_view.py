"""Pure helpers behind the Data tab: rows <-> table, checks, token preview and statistics.

No Gradio here, so the tests can call them directly. Row numbers are 1-based like the
table shows them; a row's number is also its line in the saved JSONL file.
"""

from __future__ import annotations

import bisect
import json
import statistics
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..data import DataReport, Example, check_file, save_rows
from ..data_files import read_rows
from ..documents import chunk_ids, is_document_source, read_documents
from ..errors import DataError
from ..hub_data import is_hub_id
from ..messages import Message, reason_of
from ..templates import IGNORE_INDEX, TemplateSpec, encode_example, example_spans
from .locale import say, t

NUMBER = "#"
ALPACA_COLUMNS = ["instruction", "input", "output"]
STATS_ROW_LIMIT = 2000
MAX_EDIT_BYTES = 20_000_000   # about 100k instruction rows: what a page can edit and redraw


def load_rows(path: str | Path) -> list[dict]:
    """Every row of a data file as a dict, for editing in the page; unreadable lines raise
    with their number. A file too big to edit in a page is refused before it is read (it
    would hold gigabytes and stall every other visitor): training reads it as it is."""
    if is_hub_id(str(path)):
        raise DataError(Message("ui.hub_no_edit", path=path))
    p = Path(path)
    size = p.stat().st_size if p.is_file() else 0
    if size > MAX_EDIT_BYTES:
        raise DataError(Message("ui.too_big_to_edit", path=path, mb=f"{size / 1e6:,.1f}",
                                most=MAX_EDIT_BYTES // 1_000_000))
    if is_document_source(p):  # raw text: a row per document, saved as JSONL 'text' rows
        report = read_documents(p)
        if report.errors:
            first = report.errors[0]
            raise DataError(Message("ui.edit_bad_document", path=path, where=first.where,
                                    reason=first.reason, n=len(report.errors)))
        return [{"text": e.text, "source": e.where} for e in report.examples]
    rows, errors = read_rows(path)
    if errors:
        raise DataError(Message("ui.edit_bad_line", path=path, where=errors[0].where,
                                reason=errors[0].reason, n=len(errors)))
    bad = [(where, row) for where, row in rows if not isinstance(row, dict)]
    if bad:
        where, row = bad[0]
        raise DataError(Message("data.bad_row", path=path, where=where,
                                reason=Message("row.not_object", kind=type(row).__name__)))
    return [row for _, row in rows]


def columns_for(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    if not cols or any(c in cols for c in ("instruction", "output")):
        cols = ALPACA_COLUMNS + [c for c in cols if c not in ALPACA_COLUMNS]
    return cols


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    cols = columns_for(rows)
    data = [[str(i)] + [_cell(row.get(c)) for c in cols] for i, row in enumerate(rows, start=1)]
    return pd.DataFrame(data, columns=[NUMBER] + cols)


def _parse_cell(text: str, old):
    """Table text back to the row's value: JSON where the row held a list/object."""
    if isinstance(old, (list, dict)) or (old is None and text.strip()[:1] in ("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text            # kept as typed; the check reports the bad field
    return text


def apply_frame(rows: list[dict], frame: pd.DataFrame) -> list[dict]:
    """Merge an edited table into ``rows``: numbered rows update, unnumbered rows are new.

    Rows missing from the table are kept (a filtered view never deletes anything).
    """
    out = [dict(r) for r in rows]
    cols = [c for c in frame.columns if c != NUMBER]
    for record in frame.to_dict(orient="records"):
        number = str(record.get(NUMBER, "") or "").strip()
        cells = {c: "" if record.get(c) is None else str(record.get(c)) for c in cols}
        if number.isdigit() and 1 <= int(number) <= len(out):
            row = out[int(number) - 1]
            for c, text in cells.items():
                if text == _cell(row.get(c)):
                    continue
                if c not in row and not text:
                    continue
                row[c] = _parse_cell(text, row.get(c))
        elif any(v.strip() for v in cells.values()):
            out.append({c: _parse_cell(v, None) for c, v in cells.items() if v.strip()
                        or c in ALPACA_COLUMNS})
    return out


def new_row(rows: list[dict], fmt: str) -> dict:
    if fmt == "messages":
        return {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": ""}]}
    if fmt == "preference":
        return {"prompt": "", "chosen": "", "rejected": ""}
    if fmt == "kto":
        return {"prompt": "", "completion": "", "label": True}
    return {"instruction": "", "input": "", "output": ""}


def _naming_the_table(said: str, path: str) -> str:
    """A file check's sentence about the edited rows' temporary file, naming the table."""
    if isinstance(said, Message):
        return Message(said.key, **{k: Message("ui.the_table") if str(v) == path else v
                                    for k, v in said.values.items()})
    return said.replace(path, "table")


def check_rows(rows: list[dict], fmt: str = "auto") -> DataReport:
    """The core's file check run on the rows being edited (row N = line N)."""
    if not rows:
        raise DataError(Message("ui.table_empty"))
    with tempfile.TemporaryDirectory(prefix="finetune-gui-check-") as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
        try:
            report = check_file(path, fmt)
        except DataError as exc:  # name the table, not this temporary file
            raise DataError(_naming_the_table(reason_of(exc), str(path))) from None
    report.path = "table"
    return report


def row_number(where: str) -> int:
    tail = where.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def error_table(report: DataReport, lang: str = "en") -> pd.DataFrame:
    data = [[row_number(e.where), say(e.reason, lang)] for e in report.errors]
    data += [[row_number(w.split(" duplicates")[0]), w.split(" ", 2)[-1]]
             for w in report.warnings if " duplicates " in w]
    return pd.DataFrame(data, columns=[t("data.row", lang), t("data.problem", lang)])


def example_for_row(report: DataReport, number: int):
    for example in report.examples:
        if row_number(example.where) == number:
            return example
    return None


def rejected_side(example: Example) -> Example:
    """A preference row with its rejected answer in place of the chosen one."""
    return example.with_answer(example.rejected)


def preview_spans(example, spec: TemplateSpec, tokenizer, max_len: int,
                  labels: dict[str, str]) -> list[tuple[str, str]]:
    """Merged (text, label) runs of trained / masked / cut tokens, for HighlightedText."""
    spans = example_spans(example, spec, tokenizer, max_len)
    merged: list[list] = []
    for text, kind in spans:
        if merged and merged[-1][1] == kind:
            merged[-1][0] += text
        else:
            merged.append([text, kind])
    return [(text, labels[kind]) for text, kind in merged]


@dataclass
class TokenStats:
    rows: int
    lengths: list[int] = field(default_factory=list)
    trained: int = 0
    truncated: int = 0
    dropped: int = 0
    limited: bool = False
    documents: int = 0  # raw text: documents, and the chunks they make (in ``lengths``)
    chunks: int = 0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.lengths) if self.lengths else 0.0

    @property
    def longest(self) -> int:
        return max(self.lengths, default=0)


# (tokenizer, template, example) -> (length, positions of trained tokens). Every render
# of the Data tab needs the whole file's statistics; with this cache only rows that changed
# are tokenised again, and sessions that load the same file share the work.
_ENCODED: OrderedDict = OrderedDict()
_ENCODED_LOCK = threading.Lock()
_ENCODED_LIMIT = 200_000


def _tokenizer_identity(tokenizer) -> tuple:
    """Equal for the per-session copies of one tokenizer (see ``models.load_tokenizer``)."""
    return (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
            tokenizer.bos_token, tokenizer.eos_token)


def _length_and_trained(example, spec: TemplateSpec, tokenizer) -> tuple[int, tuple[int, ...]]:
    key = (_tokenizer_identity(tokenizer), repr(spec), example.system,
           repr(example.turns), example.text)  # not .where: rows move when one is deleted
    with _ENCODED_LOCK:
        if key in _ENCODED:
            _ENCODED.move_to_end(key)
            return _ENCODED[key]
    enc = encode_example(example, spec, tokenizer)
    value = (len(enc.input_ids),
             tuple(i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX))
    with _ENCODED_LOCK:
        _ENCODED[key] = value
        while len(_ENCODED) > _ENCODED_LIMIT:
            _ENCODED.popitem(last=False)
    return value


def token_stats(examples, spec: TemplateSpec, tokenizer, max_len: int,
                overlap: int = 0) -> TokenStats:
    """Lengths before truncation, and what survives cutting at ``max_len`` (a prefix cut,
    as training does). A document counts its chunks' lengths instead: it is never cut."""
    limited = len(examples) > STATS_ROW_LIMIT
    stats = TokenStats(rows=len(examples), limited=limited)
    for example in examples[:STATS_ROW_LIMIT]:
        length, trained_at = _length_and_trained(example, spec, tokenizer)
        if example.text is not None:
            chunks = chunk_ids(list(range(length)), max_len, overlap)
            stats.lengths += [len(piece) for piece, _ in chunks]
            stats.trained += len(trained_at) - 1
            stats.documents += 1
            stats.chunks += len(chunks)
            continue
        kept = bisect.bisect_left(trained_at, max_len)
        stats.lengths.append(length)
        stats.trained += kept
        stats.truncated += length > max_len
        stats.dropped += kept == 0
    return stats


def histogram(lengths: list[int], max_len: int, bins: int = 12) -> pd.DataFrame:
    """Rows per token-length bin; bins past max_seq_len are marked 'cut'."""
    if not lengths:
        return pd.DataFrame({"tokens": [], "rows": [], "part": []})
    low, top = min(lengths), max(max(lengths), 1)
    width = max(1, -(-(top - low + 1) // bins))
    first = low // width
    counts: dict[int, int] = {}
    for n in lengths:
        counts[n // width] = counts.get(n // width, 0) + 1
    starts = range(first, (top // width) + 1)
    return pd.DataFrame({
        "tokens": [f"{b * width}–{(b + 1) * width - 1}" for b in starts],
        "rows": [counts.get(b, 0) for b in starts],
        "part": ["cut" if (b + 1) * width > max_len else "kept" for b in starts],
    })


def save_table(path: str | Path, rows: list[dict]) -> tuple[Path, Path | None]:
    """Save rows as JSONL (atomic, previous file backed up); non-JSONL paths get a
    ``.jsonl`` sibling so the original file is never overwritten in another format."""
    p = Path(path)
    if p.suffix.lower() != ".jsonl":
        p = p.with_suffix(".jsonl")
    backup = save_rows(p, rows)
    return p, backup
