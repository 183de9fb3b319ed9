"""Evaluate a finished run: answer held-out questions with the tuned model (and its base),
score every answer, measure what it forgot, and save the result in the run folder.

``evaluate_run`` is the one entry point for the CLI and the Evaluate tab. It reports
progress through a callback and stops between batches when asked; a stopped evaluation
returns (and saves) what it had, marked ``"stopped": true``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import runs
from ..config import GenerationConfig, RunConfig, atomic_write_text
from ..errors import FinetuneError
from ..messages import Message
from ..answering import BaseAnswerCache, answer_many
from .loss import answer_loss, perplexity
from .metrics import keyword_hit, mean_scores, score_answer
from .rows import EvalRow, read_eval_rows

HELDOUT_FILE = "heldout.jsonl"
EVAL_DIR = "eval"
GENERAL_PROBE = Path(__file__).resolve().parents[2] / "presets" / "data" / "general_probe.jsonl"
KEYWORD_ONLY_TOKENS = 48
MAX_AUTO_TOKENS = 256


@dataclass
class EvalOptions:
    data: str = ""              # a data file; empty = data.eval_path, else the held-out split
    base: bool = False          # answer with the base model too
    general: bool = True        # the general-knowledge probe ("general answers kept")
    limit: int = 0              # first N rows only (0 = all)
    max_new_tokens: int = 0     # 0 = from the longest reference answer
    batch_size: int = 32


@dataclass
class Progress:
    done: int
    total: int
    phase: str
    elapsed: float

    @property
    def eta(self) -> float | None:
        if not self.done or self.done >= self.total:
            return None if not self.done else 0.0
        return self.elapsed / self.done * (self.total - self.done)


@dataclass
class _Tracker:
    total: int
    report: Callable[[Progress], None] | None
    should_stop: Callable[[], bool]
    started: float = field(default_factory=time.time)
    done: int = 0

    def step(self, n: int, phase: str) -> None:
        self.done += n
        if self.report:
            self.report(Progress(self.done, self.total, phase, time.time() - self.started))


def rows_source(run_root: Path, config: RunConfig, data: str = "") -> str:
    """Which file an evaluation asks: the one given, the run's data.eval_path, or the
    run's own held-out split (saved at training time, exactly the rows not trained on)."""
    if data.strip():
        return data
    if config.data.eval_path.strip():
        return config.data.eval_path
    heldout = run_root / HELDOUT_FILE
    if heldout.is_file():
        return str(heldout)
    raise FinetuneError(Message("eval.nothing_held_out", path=run_root))


def generation_for(rows: list[EvalRow], tokenizer, max_new_tokens: int) -> GenerationConfig:
    """Greedy, no repetition penalty; long enough for the longest reference answer."""
    if not max_new_tokens:
        longest = max((len(tokenizer.encode(r.reference, add_special_tokens=False))
                       for r in rows if r.reference), default=0)
        max_new_tokens = min(MAX_AUTO_TOKENS, max(KEYWORD_ONLY_TOKENS, int(longest * 1.5) + 8))
    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                            repetition_penalty=1.0)


def _answer_all(engine, rows: list[EvalRow], params, use_adapter: bool, batch_size: int,
                tracker: _Tracker, phase: str, cache=None) -> list[str] | None:
    return answer_many(engine, [r.example for r in rows], params, use_adapter=use_adapter,
                       batch_size=batch_size, cache=cache,
                       on_batch=lambda n: tracker.step(n, phase),
                       should_stop=tracker.should_stop)


def _summary(scores: list[dict], loss: float | None) -> dict:
    out: dict = {**mean_scores(scores), "n": len(scores)}
    if loss is not None:
        out["eval_loss"] = loss
        out["perplexity"] = perplexity(loss)
    return out


def general_kept(base: list[str], tuned: list[str], rows: list[EvalRow]) -> dict:
    """Of the probe questions the base model answers right, the share the tuned still does."""
    base_hits = [bool(keyword_hit(a, r.keywords)) for a, r in zip(base, rows)]
    tuned_hits = [bool(keyword_hit(a, r.keywords)) for a, r in zip(tuned, rows)]
    kept = [i for i, hit in enumerate(base_hits) if hit and tuned_hits[i]]
    base_right = sum(base_hits)
    return {"kept": len(kept) / base_right if base_right else None,
            "base_right": base_right, "kept_right": len(kept),
            "n": len(rows),
            "lost": [{"prompt": rows[i].prompt, "base_answer": base[i], "answer": tuned[i]}
                     for i, hit in enumerate(base_hits) if hit and not tuned_hits[i]]}


def _probe(engine, probe: list[EvalRow], options: EvalOptions, tracker: _Tracker,
           cache) -> dict | None:
    """General answers kept: the base answers the probe (cached), the tuned model is asked
    only the questions the base got right. None if stopped."""
    params = generation_for(probe, engine.tokenizer, 0)
    base = _answer_all(engine, probe, params, False, options.batch_size, tracker,
                       "general questions, base", cache)
    if base is None:
        return None
    right = [i for i, r in enumerate(probe) if keyword_hit(base[i], r.keywords)]
    tracker.step(len(probe) - len(right), "general questions")
    asked = _answer_all(engine, [probe[i] for i in right], params, True, options.batch_size,
                        tracker, "general questions, tuned")
    if asked is None:
        return None
    return general_kept([base[i] for i in right], asked, [probe[i] for i in right]) | {
        "n": len(probe)}


def evaluate_engine(engine, rows: list[EvalRow], options: EvalOptions, *,
                    max_len: int = 512, progress=None, should_stop=lambda: False,
                    cache=None) -> dict:
    """Score ``engine`` (a ChatEngine with an adapter) on ``rows``; see ``evaluate_run``."""
    if options.limit:
        rows = rows[:options.limit]
    probe = read_eval_rows(GENERAL_PROBE) if options.general and engine.has_adapter else []
    base_needed = options.base and engine.has_adapter
    params = generation_for(rows, engine.tokenizer, options.max_new_tokens)
    with_ref = sum(1 for r in rows if r.reference)
    batches = math.ceil(with_ref / 8) if with_ref else 0
    total = len(rows) * (1 + base_needed) + 2 * len(probe) + batches * (1 + base_needed)
    tracker = _Tracker(total, progress, should_stop)
    started = time.time()
    result: dict = {"stopped": False}

    tuned = _answer_all(engine, rows, params, True, options.batch_size, tracker,
                        "tuned answers")
    base = None
    if tuned is not None and base_needed:
        base = _answer_all(engine, rows, params, False, options.batch_size, tracker,
                           "base answers", cache)
    if tuned is None or (base_needed and base is None):
        result["stopped"] = True
    losses = {}
    if not result["stopped"]:
        for key, on in (("tuned", True), ("base", False))[: 1 + base_needed]:
            losses[key] = answer_loss(engine, [r.example for r in rows], use_adapter=on,
                                      max_len=max_len, should_stop=should_stop)
            tracker.step(batches, f"{key} eval loss")
    if probe and not result["stopped"]:
        general = _probe(engine, probe, options, tracker, cache)
        if general is None:
            result["stopped"] = True
        else:
            result["general"] = general

    tuned = tuned or []
    out_rows, tuned_scores, base_scores = [], [], []
    for i, answer in enumerate(tuned):
        row = rows[i]
        scores = score_answer(answer, row.reference or None, row.keywords)
        tuned_scores.append(scores)
        item = {"where": row.where, "prompt": row.prompt, "reference": row.reference,
                "keywords": row.keywords, "answer": answer, "metrics": scores,
                "language": row.language}
        if base:
            item["base_answer"] = base[i]
            item["base_metrics"] = score_answer(base[i], row.reference or None, row.keywords)
            base_scores.append(item["base_metrics"])
        out_rows.append(item)
    summary = {"tuned": _summary(tuned_scores, losses.get("tuned"))}
    if base:
        summary["base"] = _summary(base_scores, losses.get("base"))
    if "general" in result and result["general"]["kept"] is not None:
        summary["tuned"]["general_kept"] = result["general"]["kept"]
    result.update(summary=summary, rows=out_rows, seconds=round(time.time() - started, 2),
                  generation={"max_new_tokens": params.max_new_tokens, "greedy": True})
    return result


def evaluate_run(run_dir: str | Path, options: EvalOptions | None = None, *, engine=None,
                 progress=None, should_stop=lambda: False, save: bool = True) -> dict:
    """Evaluate a finished run and save the result as ``<run>/eval/<data name>.json``.

    The result: ``{"summary": {"tuned": {metric: mean, "n", "eval_loss", ...}, "base": ...},
    "rows": [{"prompt", "reference", "answer", "base_answer", "metrics", ...}],
    "general": {"kept", ...}, "data", "run", "stopped", "seconds"}``.
    """
    from ..chat import ChatEngine
    options = options or EvalOptions()
    paths, config = runs.find_run(run_dir)
    source = rows_source(paths.root, config, options.data)
    rows = read_eval_rows(source)
    engine = engine or ChatEngine.from_run(paths.root)
    result = evaluate_engine(engine, rows, options, max_len=config.train.max_seq_len,
                             progress=progress, should_stop=should_stop,
                             cache=BaseAnswerCache(config.model))
    result = {"run": str(paths.root), "data": str(source), "created": time.strftime(
        "%Y-%m-%d %H:%M:%S"), **result}
    if save:
        result["saved_to"] = str(save_result(paths, source, result))
    return result


def result_name(source: str) -> str:
    return Path(source).stem or "eval"


def save_result(paths: runs.RunPaths, source: str, result: dict) -> Path:
    target = paths.root / EVAL_DIR / f"{result_name(source)}.json"
    atomic_write_text(target, json.dumps(result, ensure_ascii=False, indent=1))
    return target


def saved_results(run_root: str | Path) -> dict[str, dict]:
    """The evaluations saved in a run folder, by data name (unreadable files skipped)."""
    found = {}
    for path in sorted((Path(run_root) / EVAL_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("summary"), dict):
            found[path.stem] = data
    return found
