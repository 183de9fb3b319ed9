"""Raw text for continued pre-training: documents in, token chunks out.

A ``.txt``/``.md`` file, a folder of them, or rows whose only text is a ``text`` field are
documents. A document is tokenised whole, without any template (the template is for
instruction rows), ends with the end-of-text token, and is cut into ``max_seq_len`` chunks
that never cross into another document. Every token after a document's first is trained
exactly once: a chunk after the first starts with ``overlap`` tokens (at least one) of the
chunk before as context, masked so that they are not trained twice.
"""

from __future__ import annotations

from pathlib import Path

from .data import DataReport, Example
from .data_files import RowError
from .errors import DataError
from .messages import Message, reason_of
from .templates import IGNORE_INDEX, encode_example, TemplateSpec

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
MAX_DOCUMENT_FILES = 100_000
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024  # one file read whole; larger belongs in JSONL rows


def is_document_source(path: str | Path) -> bool:
    """A folder, or a file whose name says it is plain text or Markdown."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in TEXT_SUFFIXES


def document_files(path: Path) -> list[Path]:
    """The text files of a folder (all levels, hidden ones skipped, in name order)."""
    if not path.is_dir():
        return [path]
    found = []
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path).parts
        if any(part.startswith(".") for part in relative):
            continue
        if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES:
            found.append(file)
            if len(found) > MAX_DOCUMENT_FILES:
                raise DataError(Message("doc.too_many", path=path, most=f"{MAX_DOCUMENT_FILES:,}"))
    if not found:
        raise DataError(Message("doc.no_text_files", path=path))
    return found


def read_documents(path: str | Path) -> DataReport:
    """Every document of a text file or folder; unreadable files are bad rows by name."""
    root = Path(path)
    if not root.exists():
        raise DataError(Message("file.not_found", path=root))
    files = document_files(root)
    report = DataReport(str(root), "text", len(files))
    for file in files:
        where = file.name if file == root else str(file.relative_to(root))
        try:
            size = file.stat().st_size
            if size > MAX_DOCUMENT_BYTES:
                raise ValueError(Message("doc.too_large", mib=f"{size / 2**20:.0f}"))
            raw = file.read_bytes()
            if b"\x00" in raw[:8192]:
                raise ValueError(Message("doc.binary"))
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            report.errors.append(RowError(where, Message("file.row_not_utf8", byte=exc.start + 1)))
            continue
        except (ValueError, OSError) as exc:
            report.errors.append(RowError(where, reason_of(exc)))
            continue
        if not text.strip():
            report.warnings.append(f"{where} is empty: skipped")
            continue
        report.examples.append(Example([], where=where, text=text))
    if not report.examples and not report.errors:
        raise DataError(Message("doc.all_empty", path=root))
    report.good_rows, report.bad_rows = len(report.examples), len(report.errors)
    return report


def chunk_ids(ids: list[int], max_len: int, overlap: int = 0
              ) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each chunk of one document. The first token of a chunk has
    nothing to be predicted from, so a later chunk repeats at least one token of the one
    before as unlabelled context; ``overlap`` repeats more (more context, same labels)."""
    if max_len < 2:
        raise DataError(Message("doc.seq_len"))
    context = max(1, min(overlap, max_len // 2))
    chunks = []
    start, end, trained_from = 0, min(len(ids), max_len), 1
    while True:
        piece = ids[start:end]
        chunks.append((piece, [IGNORE_INDEX] * trained_from + piece[trained_from:]))
        if end >= len(ids):
            return chunks
        start = end - context
        end = min(len(ids), start + max_len)
        trained_from = context


def document_chunks(example: Example, tokenizer, max_len: int, overlap: int = 0
                    ) -> list[tuple[list[int], list[int]]]:
    """The chunks of one document. Its tokens come from the templates' own encoder (a
    document is one trained piece), so BOS/EOS follow the model as everywhere else."""
    ids = encode_example(example, TemplateSpec(), tokenizer).input_ids
    return chunk_ids(ids, max_len, overlap)
