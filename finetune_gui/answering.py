"""Answering many questions at once, and base-model answers kept on disk.

``answer_many`` asks a ``ChatEngine`` in left-padded batches of similar prompt length. The
base never changes, so asking it the same question twice is waste: ``BaseAnswerCache``
keeps its answers. Evaluation (base answers, the general probe) and replay (the base's own
answers mixed into training) both read and fill it.

The cache is keyed by what decides a greedy answer: the model's files (location, size and time of its
weights), its loading settings, and the exact prompt tokens (which already hold the
template and system prompt) with the generation settings. Evaluating a second run of the
same base, or the general probe after every run, then costs only the tuned answers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from typing import Callable

from .config import ModelConfig, atomic_write_text
from .models import cache_root, resolve_source

_LOCK = threading.Lock()
MAX_ENTRIES = 20_000


def model_key(cfg: ModelConfig) -> str:
    source = resolve_source(cfg.name_or_path)
    stamp = []
    folder = Path(source.location)
    if source.is_local and folder.is_dir():
        stamp = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                       for f in folder.glob("*.safetensors"))
    text = json.dumps([source.location, stamp, cfg.quantization, cfg.compute_dtype, cfg.device])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class JsonCacheFile:
    """One JSON object of ``key -> entry`` on disk: read as untrusted (anything but an
    object is an empty cache), written whole and best effort (a cache must never fail a
    run), keeping its newest ``max_entries``."""

    def __init__(self, path: Path, max_entries: int):
        self.path, self.max_entries = path, max_entries
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        self.entries: dict = entries if isinstance(entries, dict) else {}

    def put_all(self, found: dict) -> None:
        if not found:
            return
        with _LOCK:
            self.entries.update(found)
            if len(self.entries) > self.max_entries:
                self.entries = dict(list(self.entries.items())[-self.max_entries:])
            try:
                atomic_write_text(self.path, json.dumps(self.entries, ensure_ascii=False))
            except OSError:
                pass


class BaseAnswerCache(JsonCacheFile):
    """A JSON file of ``prompt key -> answer`` for one base model."""

    def __init__(self, cfg: ModelConfig, folder: Path | None = None):
        super().__init__((folder or cache_root() / "eval") / f"base-answers-{model_key(cfg)}.json",
                         MAX_ENTRIES)

    @staticmethod
    def key(prompt_ids: list[int], params) -> str:
        text = json.dumps([prompt_ids, params.max_new_tokens, params.repetition_penalty])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str) -> str | None:
        value = self.entries.get(key)
        return value if isinstance(value, str) else None


def answer_many(engine, examples: list, params, *, use_adapter: bool = True,
                batch_size: int = 32, cache: BaseAnswerCache | None = None,
                on_batch: Callable[[int], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> list[str] | None:
    """Answer every example's open last turn; None if ``should_stop`` said so between
    batches. With ``cache`` (base answers only) known answers are reused and new ones kept;
    ``on_batch(n)`` hears how many answers each step produced."""
    answers: list[str | None] = [None] * len(examples)
    keys: list[str] = []
    if cache is not None:
        keys = [cache.key(engine.example_prompt_ids(e), params) for e in examples]
        answers = [cache.get(k) for k in keys]
        known = sum(a is not None for a in answers)
        if known and on_batch:
            on_batch(known)
    todo = sorted((i for i, a in enumerate(answers) if a is None),
                  key=lambda i: len(examples[i].turns[-1].instruction))
    for start in range(0, len(todo), batch_size):
        if should_stop():
            return None
        chunk = todo[start:start + batch_size]
        got = engine.answer_examples([examples[i] for i in chunk], params,
                                     use_adapter=use_adapter)
        for i, text in zip(chunk, got):
            answers[i] = text
        if cache is not None:
            cache.put_all({keys[i]: answers[i] for i in chunk})
        if on_batch:
            on_batch(len(chunk))
    return [a or "" for a in answers]
