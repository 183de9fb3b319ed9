"""What a run trains on, tokenised: its rows (plus replay and mixed-in files) for
supervised methods, or the pairs TRL reads for preference methods.

Split from ``training`` (the job) so that the job's recipe reads as its steps; the data
steps report through the job's log and phase callbacks.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .batching import tokenize_examples, with_soft_columns, write_tokens
from .config import RunConfig, parse_mix
from .data import check_file, write_examples
from .errors import FinetuneError
from .messages import Message
from .mixing import mix_counts, pick_rows
from .preference import trainer_rows
from .token_cache import CachedTokens, TokenCache, token_key


class TrainingData:
    def __init__(self, config: RunConfig, *, log: Callable[[str], None],
                 phase: Callable[[str], None], run_root: Path, writes: bool):
        self._config = config
        self._log = log
        self._phase = phase
        self._run_root = run_root
        self._writes = writes  # only the main process writes the run folder

    def sft(self, split, spec, model, tokenizer):
        """Token ids and labels of the training rows (plus replay) and the held-out rows."""
        from datasets import concatenate_datasets
        cfg = self._config
        replay, soft = self._replay(model, tokenizer, split.train)
        self._phase("tokenising")
        tokens = self._main_tokens(split, spec, tokenizer)
        train_ds, eval_ds = tokens.parts["train"], tokens.parts["eval"]
        truncated, dropped = tokens.meta["truncated"], tokens.meta["dropped"]
        if replay:  # never cached: the base model's answers, tokenised beside the rows
            replay_ds, cut, lost = tokenize_examples(replay, spec, tokenizer,
                                                     cfg.train.max_seq_len, soft=soft,
                                                     overlap=cfg.data.chunk_overlap)
            train_ds = concatenate_datasets([with_soft_columns(train_ds, replay_ds.features),
                                             replay_ds])
            truncated, dropped = truncated + cut, dropped + lost
        if split.report.format == "text":
            self._log(f"raw text: {len(split.train)} documents in {len(train_ds) - len(replay)} "
                      f"chunks of up to {cfg.train.max_seq_len} tokens, loss on every token")
        if cfg.data.mix:
            train_ds = self._mixed(train_ds, spec, tokenizer)
        if len(train_ds) == 0:
            raise FinetuneError(Message("train.all_too_long", most=cfg.train.max_seq_len))
        if truncated:
            self._log(f"{truncated} examples were longer than max_seq_len and were cut")
        if dropped:
            self._log(f"{dropped} examples dropped: their answer starts after max_seq_len")
        return train_ds, eval_ds, truncated, dropped

    def _main_tokens(self, split, spec, tokenizer) -> CachedTokens:
        """data.path's training and held-out rows as tokens, cached by content."""
        cfg = self._config
        random_split = cfg.data.val_split > 0 and not cfg.data.val_path
        settings = dict(part="main", format=cfg.data.format, max_rows=cfg.data.max_rows,
                        val_split=cfg.data.val_split, method=cfg.train.method,
                        seed=cfg.train.seed if random_split else None)

        def build(folder: Path):
            train, cut, lost = self._write(split.train, folder / "train.arrow", spec, tokenizer)
            held = (self._write(split.validation, folder / "eval.arrow", spec, tokenizer)[0]
                    if split.validation else None)
            return {"train": train, "eval": held}, {"truncated": cut, "dropped": lost}
        return self._cached([cfg.data.path, cfg.data.val_path], settings, spec, tokenizer,
                            build, cfg.data.path)

    def _mixed(self, train_ds, spec, tokenizer):
        """data.path's sequences plus each data.mix file's share of the whole."""
        from datasets import concatenate_datasets
        cfg = self._config
        mix = parse_mix(cfg.data.mix)
        counts = mix_counts(len(train_ds), [share for _, share in mix])
        parts, told = [train_ds], [f"{len(train_ds)} from {cfg.data.path}"]
        for number, ((path, share), wanted) in enumerate(zip(mix, counts), start=1):
            source = self._mix_tokens(path, spec, tokenizer)
            if "soft_ids" in train_ds.column_names:
                source = with_soft_columns(source, train_ds.features)
            parts.append(source.select(pick_rows(len(source), wanted, cfg.train.seed + number)))
            told.append(f"{wanted} from {path} ({share:.0%}, {len(source)} available)")
        self._log("data mix: " + ", ".join(told))
        return concatenate_datasets(parts)

    def _mix_tokens(self, path: str, spec, tokenizer):
        """One data.mix file as tokens, cached by content (a hit skips reading it: it was
        checked when it was cached)."""
        def build(folder: Path):
            report = check_file(path)
            report.raise_if_bad()
            if report.format in ("preference", "kto"):
                raise FinetuneError(Message("train.mix_format", path=path, fmt=report.format))
            source, _, _ = self._write(report.examples, folder / "train.arrow", spec,
                                       tokenizer)
            if len(source) == 0:
                raise FinetuneError(Message("train.mix_too_long", path=path))
            return {"train": source}, {}
        return self._cached([path], dict(part="mix"), spec, tokenizer, build,
                            path).parts["train"]

    def _cached(self, sources: list[str], settings: dict, spec, tokenizer, build,
                what: str) -> CachedTokens:
        """The cache's entry for these sources and settings, built when there is none."""
        cfg = self._config
        key = token_key(sources=sources, tokenizer=tokenizer, settings=dict(
            settings, spec=asdict(spec), max_seq_len=cfg.train.max_seq_len,
            chunk_overlap=cfg.data.chunk_overlap))
        cache = TokenCache()
        found = cache.get(key)
        if found is not None:
            self._log(f"tokens of {what}: from the cache ({len(found.parts['train'])} "
                      f"sequences, key {key[:16]}): tokenisation skipped")
            return found
        started = time.time()
        made = cache.put(key, build)
        self._log(f"tokens of {what}: {len(made.parts['train'])} sequences in "
                  f"{time.time() - started:.1f}s, cached (key {key[:16]}) for the next run "
                  "on the same data and settings")
        return made

    def _write(self, examples, file: Path, spec, tokenizer):
        """``write_tokens`` with its progress shown as the job's phase."""
        total = len(examples)

        def progress(done: int) -> None:
            self._phase(f"tokenising {file.stem}: {done:,} of {total:,} rows")
        return write_tokens(examples, file, spec, tokenizer, self._config.train.max_seq_len,
                            self._config.data.chunk_overlap, progress=progress)

    def preference(self, split, spec, tokenizer) -> tuple[list[dict], list[dict]]:
        """Training and held-out rows as TRL reads them; a pair that does not fit in
        max_seq_len is a bad row, named by line (cutting it would compare half answers)."""
        cfg = self._config
        if cfg.data.replay_ratio:
            self._log("data.replay_ratio is for sft: preference methods keep the base through "
                      "their reference model, so replay is skipped")
        if cfg.train.packing:
            self._log("train.packing is for sft: preference pairs are batched as TRL does")
        if cfg.data.mix:
            raise FinetuneError(Message("train.mix_sft_only"))
        rows, too_long = trainer_rows(split.train, cfg.train.method, spec, tokenizer,
                                      cfg.train.max_seq_len)
        held, held_long = trainer_rows(split.validation, cfg.train.method, spec, tokenizer,
                                       cfg.train.max_seq_len)
        if too_long or held_long:
            where = too_long + held_long
            raise FinetuneError(Message("train.pairs_too_long", path=cfg.data.path, n=len(where),
                                        most=cfg.train.max_seq_len,
                                        rows=", ".join(where[:5]) + (", ..." if len(where) > 5
                                                                      else "")))
        return rows, held

    def _replay(self, model, tokenizer, train) -> tuple[list, list]:
        """The base model's own answers to general questions (data.replay_ratio) and its
        next-token distributions over them, taken before any adapter is attached; the rows
        are saved as replay.jsonl beside the run."""
        if not self._config.data.replay_ratio:
            return [], []
        from .replay import REPLAY_FILE, replay_for_model
        self._phase("answering replay questions")
        started = time.time()
        rows, soft = replay_for_model(model, tokenizer, self._config, train)
        if self._writes:
            write_examples(self._run_root / REPLAY_FILE, rows)
        self._log(f"replay: {len(rows)} general questions answered by the base model, trained "
                  f"towards its own next-token distributions ({time.time() - started:.0f}s), "
                  f"beside the {len(train)} training rows so that tuning keeps what it knew "
                  f"({REPLAY_FILE})")
        return rows, soft
