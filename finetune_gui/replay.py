"""Replay: keep the base model's own behaviour on general questions while tuning.

Tuning a small model on a few dozen facts teaches it that every question is about those
facts: asked who painted the Mona Lisa, the quickstart once answered with the fictional
company's mascot. Rows where a general question gets the base's own (greedy) answer show
it where the new knowledge ends, so it keeps what it knew. The questions come from
``presets/data/replay_prompts.jsonl`` (none of them is in the general probe that measures
forgetting); the answers are the base model's own, whole (less a sentence cut off by the
length limit), cached per base model, and saved with the run (``replay.jsonl``).

Training on those greedy answers alone is not neutral: measured, five epochs of the base
model on nothing but its own greedy answers lost 6 of 40 general answers it got right,
because it makes the base's most likely answer certain, and the new habits spread to other
questions. So replay rows are trained towards the base's whole next-token distribution
(its top ``SOFT_TOP_K`` probabilities at every answer token, computed once before the
adapters are attached): that loss is lowest when the tuned model answers these questions
exactly as the base did, neither more nor less sure. The rows are the base's own cached
answers, so the same distributions would be computed again by every run on the same base
(20 s of the quickstart's 150 on a 2-core CPU): ``SoftTargetCache`` keeps them per row.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .answering import BaseAnswerCache, JsonCacheFile, answer_many, model_key
from .config import GenerationConfig, ModelConfig, RunConfig
from .data import Example, Turn
from .evaluation.metrics import has_cjk
from .models import cache_root

REPLAY_PROMPTS = Path(__file__).resolve().parents[1] / "presets" / "data" / "replay_prompts.jsonl"
REPLAY_FILE = "replay.jsonl"
REPLAY_GENERATION = GenerationConfig(max_new_tokens=96, temperature=0.0, repetition_penalty=1.0)
SOFT_TOP_K = 16
# A full stop ends a sentence only before a space or the end (not inside "3.7 kg").
_SENTENCE_END = re.compile(r"[.!?][\"')”’]*(?=\s|$)|[。！？][”’」]*")


def read_prompts(path: Path = REPLAY_PROMPTS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def pick_prompts(n: int, train: list[Example], seed: int) -> list[str]:
    """``n`` questions, Chinese and English in the proportion of the training rows."""
    prompts = read_prompts()
    zh_share = sum(has_cjk(e.text[:2000] if e.text is not None  # a document
                           else e.turns[0].instruction + e.turns[0].output)
                   for e in train) / max(1, len(train))
    pools = {lang: [p["prompt"] for p in prompts if p.get("lang") == lang] for lang in ("en", "zh")}
    rng = random.Random(seed)
    for pool in pools.values():
        rng.shuffle(pool)
    n_zh = min(len(pools["zh"]), round(n * zh_share))
    n_en = min(len(pools["en"]), n - n_zh)
    return pools["zh"][:n_zh] + pools["en"][:n_en]


def whole_sentences(text: str) -> str:
    """The answer as the base gave it, less a sentence cut off by the length limit (the
    model must not learn to stop mid-sentence, nor to stop earlier than it used to)."""
    text = text.strip()
    ends = list(_SENTENCE_END.finditer(text))
    if not ends or ends[-1].end() == len(text):
        return text
    return text[:ends[-1].end()]


def replay_examples(engine, config: RunConfig, train: list[Example]) -> list[Example]:
    """The replay rows for a run: ``data.replay_ratio`` x training rows (at most the number
    of shipped questions), answered by the base model ``engine`` (no adapter attached)."""
    n = round(config.data.replay_ratio * len(train))
    if n <= 0:
        return []
    prompts = pick_prompts(n, train, config.train.seed)
    asked = [Example([Turn(p, "", "")]) for p in prompts]
    answers = answer_many(engine, asked, REPLAY_GENERATION, use_adapter=False,
                          cache=BaseAnswerCache(config.model))
    return [Example([Turn(p, "", whole_sentences(a))], where=f"replay {i}")
            for i, (p, a) in enumerate(zip(prompts, answers or []), start=1) if a.strip()]


@dataclass
class SoftTargets:
    """The base's top-k next tokens at each position of one encoded replay row (aligned
    with its ``input_ids``: position t holds the distribution that predicted token t; -1
    ids where nothing is trained)."""
    ids: list[list[int]]
    logp: list[list[float]]


class SoftTargetCache(JsonCacheFile):
    """The base's soft targets of replay rows, on disk for one base model and top-k:
    ``row key -> {"at": trained positions, "ids", "logp"}``; an entry that does not fit
    its row (damaged or edited) is computed again."""

    MAX_ROWS = 1000   # the shipped questions are 154; about 20 KB a row

    def __init__(self, cfg: ModelConfig, k: int, folder: Path | None = None):
        super().__init__((folder or cache_root() / "replay")
                         / f"soft-targets-{model_key(cfg)}-k{k}.json", self.MAX_ROWS)
        self.k = k

    @staticmethod
    def key(enc) -> str:
        return hashlib.sha256(json.dumps([enc.input_ids, enc.labels]).encode()).hexdigest()[:32]

    def get(self, key: str, enc, vocab_size: int) -> SoftTargets | None:
        """The entry for the encoded row ``enc``, if it is whole and fits that row."""
        from .templates import IGNORE_INDEX
        entry = self.entries.get(key)
        if entry is None:
            return None
        trained = [t for t in range(1, len(enc.input_ids)) if enc.labels[t] != IGNORE_INDEX]
        try:
            at, ids, logp = entry["at"], entry["ids"], entry["logp"]
            if at != trained or len(ids) != len(at) or len(logp) != len(at):
                return None
            if not all(len(i) == self.k and len(v) == self.k
                       and all(isinstance(x, int) and 0 <= x < vocab_size for x in i)
                       and all(isinstance(x, (int, float)) and x <= 0 for x in v)
                       for i, v in zip(ids, logp)):
                return None
        except (TypeError, KeyError):
            return None
        target = SoftTargets([[-1] * self.k for _ in enc.input_ids],
                             [[0.0] * self.k for _ in enc.input_ids])
        for t, i, v in zip(at, ids, logp):
            target.ids[t], target.logp[t] = list(i), [float(x) for x in v]
        return target

    def put_targets(self, found: dict[str, SoftTargets]) -> None:
        entries = {}
        for key, target in found.items():
            at = [t for t, ids in enumerate(target.ids) if ids[0] >= 0]
            entries[key] = {"at": at, "ids": [target.ids[t] for t in at],
                            "logp": [target.logp[t] for t in at]}
        self.put_all(entries)


def soft_targets(model, tokenizer, spec, examples: list[Example], max_len: int,
                 k: int = SOFT_TOP_K, batch_size: int = 8,
                 cache: SoftTargetCache | None = None) -> list[SoftTargets]:
    """The base model's next-token distributions over each example's answer tokens; with
    ``cache`` (of this base and ``k``), rows computed before are read, new ones kept."""
    from .batching import forward_in_batches
    from .templates import IGNORE_INDEX, encode_example
    encoded = [encode_example(e, spec, tokenizer, max_len) for e in examples]
    keys = [SoftTargetCache.key(enc) for enc in encoded] if cache else []
    vocab_size = model.get_output_embeddings().weight.shape[0]
    out: list[SoftTargets | None] = ([cache.get(key, enc, vocab_size)
                                      for key, enc in zip(keys, encoded)]
                                     if cache else [None] * len(encoded))
    todo = sorted((i for i, target in enumerate(out) if target is None),
                  key=lambda i: len(encoded[i].input_ids))   # batches of similar length
    done = iter(todo)
    for rows, _, logits in forward_in_batches(model, [encoded[i] for i in todo],
                                              tokenizer.pad_token_id or 0, batch_size):
        top = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
        for row, enc in enumerate(rows):
            ids = [[-1] * k for _ in enc.input_ids]
            logp = [[0.0] * k for _ in enc.input_ids]
            for t in range(1, len(enc.input_ids)):
                if enc.labels[t] != IGNORE_INDEX:   # predicted from position t - 1
                    ids[t] = top.indices[row, t - 1].tolist()
                    logp[t] = [round(v, 4) for v in top.values[row, t - 1].tolist()]
            out[next(done)] = SoftTargets(ids, logp)
    if cache:
        cache.put_targets({keys[i]: out[i] for i in todo})
    return out


def replay_for_model(model, tokenizer, config: RunConfig, train: list[Example]
                     ) -> tuple[list[Example], list[SoftTargets]]:
    """Replay rows and their soft targets from a base model loaded for training (no adapter
    attached yet; put back in training mode afterwards)."""
    from .chat import ChatEngine
    engine = ChatEngine(model, tokenizer, config, has_adapter=False,
                        source=config.model.name_or_path)
    try:
        rows = replay_examples(engine, config, train)
        return rows, soft_targets(model, tokenizer, engine.spec, rows, config.train.max_seq_len,
                                  cache=SoftTargetCache(config.model, SOFT_TOP_K))
    finally:
        model.train()
