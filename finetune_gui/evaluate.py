"""Keyword checks of a tuned model: ask held-out questions, count answers naming the fact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .chat import ChatEngine
from .config import GenerationConfig

EVAL_GENERATION = GenerationConfig(max_new_tokens=48, temperature=0.0, repetition_penalty=1.0)


@dataclass
class QuestionResult:
    question: str
    keywords: list[str]
    base: str
    tuned: str

    @property
    def base_hit(self) -> bool:
        return keyword_hit(self.base, self.keywords)

    @property
    def tuned_hit(self) -> bool:
        return keyword_hit(self.tuned, self.keywords)


def keyword_hit(answer: str, keywords: list[str]) -> bool:
    """True when any keyword appears in the answer, ignoring case."""
    low = answer.lower()
    return any(k.lower() in low for k in keywords)


def read_questions(path: str | Path) -> list[dict]:
    """Rows of ``{"question": ..., "keywords": [...]}`` from a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def ask_both(engine: ChatEngine, rows: list[dict],
             params: GenerationConfig = EVAL_GENERATION) -> list[QuestionResult]:
    """Each question to the base model (adapter off) and to the tuned model, greedily."""
    results = []
    for row in rows:
        messages = [{"role": "user", "content": row["question"]}]
        results.append(QuestionResult(
            row["question"], row["keywords"],
            base=engine.answer(messages, params, use_adapter=False),
            tuned=engine.answer(messages, params, use_adapter=True)))
    return results
