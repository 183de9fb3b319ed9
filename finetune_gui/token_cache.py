"""Tokenised data kept by content, so that a second run on the same inputs skips
tokenisation.

An entry is a folder of memory-mapped Arrow files (``batching.write_tokens``) under
``cache_root()/tokens``, named by a hash of everything that changes the tokens: the bytes
of the data files (every file of a folder; a Hub dataset's Arrow files), the tokenizer's
vocabulary and settings, the template, the settings that cut, split and pick rows, and
the code that turns rows into tokens. An entry is built in a hidden folder and renamed
into place whole, so a killed run leaves no half entry; one that fails to read or to
match its checksum is removed and built again, never failing the run. The newest ``CACHE_ENTRIES`` are kept,
within ``CACHE_BYTES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import batching, data, data_files, documents, preference, templates
from .hub_data import is_hub_id, load_hub_dataset
from .models import cache_root

CACHE_ENTRIES = 8
CACHE_BYTES = 20 * 2**30
STALE_PARTIAL_S = 24 * 3600  # a hidden folder this old was left by a killed run
META = "meta.json"
READ_BYTES = 1 << 20
# Modules whose code decides the tokens: a change to any of them is a new key.
TOKEN_CODE = (batching, data, data_files, documents, preference, templates)


def tokens_root() -> Path:
    return cache_root() / "tokens"


def token_key(*, sources: list[str], settings: dict, tokenizer) -> str:
    """The hash naming an entry: the content of ``sources`` (files, folders or Hub ids),
    ``settings`` (plain values), the tokenizer and the tokenising code."""
    digest = hashlib.blake2b(digest_size=16)
    for module in TOKEN_CODE:
        digest.update(Path(module.__file__).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(tokenizer_identity(tokenizer))
    for number, source in enumerate(sources):  # by content: a renamed file is the same
        digest.update(f"\0source {number} {'hub ' + source if is_hub_id(source) else ''}\0"
                      .encode())
        if source:
            _hash_source(digest, source)
    return digest.hexdigest()


def tokenizer_identity(tokenizer) -> bytes:
    """The vocabulary, merges and special-token settings of a tokenizer, as bytes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = (backend.to_str() if backend is not None
             else json.dumps(sorted(tokenizer.get_vocab().items())))
    return json.dumps([type(tokenizer).__name__, vocab, tokenizer.chat_template or "",
                       tokenizer.special_tokens_map], sort_keys=True, default=str).encode()


def file_hash(file: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    _hash_file(digest, file)
    return digest.hexdigest()


def _hash_file(digest, file: Path) -> None:
    with file.open("rb") as fh:
        while block := fh.read(READ_BYTES):
            digest.update(block)


def _hash_source(digest, source: str) -> None:
    """The bytes of a file, of every file of a folder (with its name there: the order of
    the documents), or of the Arrow files that ``datasets`` keeps for a Hub dataset."""
    if is_hub_id(source):
        files = [(Path(f["filename"]), "") for f in load_hub_dataset(source).cache_files]
    elif Path(source).is_dir():
        files = [(f, str(f.relative_to(source))) for f in sorted(Path(source).rglob("*"))
                 if f.is_file()]
    else:
        files = [(Path(source), "")]
    for file, name in files:
        digest.update(f"\0file {name} {file.stat().st_size}\0".encode())
        _hash_file(digest, file)


@dataclass
class CachedTokens:
    """The datasets of one entry (memory-mapped) and what was told when it was built."""
    key: str
    parts: dict  # name -> datasets.Dataset, or None for a part that has no rows to give
    meta: dict


class TokenCache:
    def __init__(self, root: Path | None = None, *, entries: int = CACHE_ENTRIES,
                 max_bytes: int = CACHE_BYTES):
        self.root = root or tokens_root()
        self.entries = entries
        self.max_bytes = max_bytes

    def get(self, key: str) -> CachedTokens | None:
        """The entry, or None when there is none or it cannot be read (then it is removed)."""
        folder = self.root / key
        if not folder.is_dir():
            return None
        from datasets import Dataset
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            parts = {}
            for name, info in meta["parts"].items():
                if info is None:
                    parts[name] = None
                    continue
                file = folder / f"{name}.arrow"
                if file_hash(file) != info["hash"]:  # cut short, or changed on the disk
                    raise ValueError(f"{file}: not the file that was written")
                parts[name] = Dataset.from_file(str(file))
                if len(parts[name]) != info["rows"]:
                    raise ValueError(f"{file.name}: {len(parts[name])} rows, not {info['rows']}")
        except Exception:  # anything unreadable (pyarrow, json, a missing file): rebuild
            shutil.rmtree(folder, ignore_errors=True)
            return None
        os.utime(folder / META)  # newest used: kept longest
        return CachedTokens(key, parts, meta)

    def put(self, key: str, build: Callable[[Path], tuple[dict, dict]]) -> CachedTokens:
        """Build an entry with ``build(folder)``, which writes ``<part>.arrow`` files there
        and returns (``{part: Dataset or None}``, extra meta); then moves it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{key}.{uuid.uuid4().hex[:8]}.partial"
        partial.mkdir()
        try:
            parts, extra = build(partial)
            meta = dict(extra, key=key, built=time.time(), parts={
                name: None if ds is None else
                {"rows": len(ds), "hash": file_hash(partial / f"{name}.arrow")}
                for name, ds in parts.items()})
            (partial / META).write_text(json.dumps(meta), encoding="utf-8")
            try:
                os.replace(partial, self.root / key)
            except OSError:  # another process put the same entry first: use theirs
                pass
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self.prune(keep=key)
        found = self.get(key)
        if found is None:
            raise OSError(f"{self.root / key}: the tokenised data just written cannot be read")
        return found

    def prune(self, keep: str = "") -> None:
        """Remove entries beyond the newest ``entries`` or ``max_bytes``, and partial folders
        that a killed run left behind."""
        if not self.root.is_dir():
            return
        now, entries = time.time(), []
        for folder in self.root.iterdir():
            if folder.name.startswith("."):
                if now - folder.stat().st_mtime > STALE_PARTIAL_S:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            meta = folder / META
            stamp = meta.stat().st_mtime if meta.exists() else 0.0
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            entries.append((stamp, size, folder))
        entries.sort(reverse=True)
        total = 0
        for number, (_, size, folder) in enumerate(entries):
            total += size
            if folder.name != keep and (number >= self.entries or total > self.max_bytes):
                shutil.rmtree(folder, ignore_errors=True)
