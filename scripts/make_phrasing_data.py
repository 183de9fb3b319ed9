"""Build the fact sets with about nine phrasings per fact (``*_train_9ways.jsonl``).

Each shipped training set asks every fact in five ways; ``scripts/data/more_phrasings.json``
holds five more questions per fact (with their answers). A new question is kept only if it
is no closer to a held-out question of its fact than the five shipped ones already are
(difflib ratio, lower-cased) and shares no four-word run with such a question that they do
not share: the held-out questions stay as unseen as before, so a better score means the
model generalised better, not that it saw the test. Run from the repository root; writes
``presets/data/quillmore_train_9ways.jsonl`` and ``presets/data/harrowgate_train_9ways.jsonl``.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "presets" / "data"
SHIPPED_PHRASINGS = 5


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def word_runs(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def leaks(question: str, shipped: list[str], held_out: list[str]) -> bool:
    """Closer to a held-out question than every shipped phrasing, or sharing a new run."""
    for other in held_out:
        if similarity(question, other) > max(similarity(s, other) for s in shipped):
            return True
        shared = set().union(*(word_runs(s) & word_runs(other) for s in shipped))
        if (word_runs(question) & word_runs(other)) - shared:
            return True
    return False


def build(name: str, facts: list[dict]) -> tuple[int, int]:
    train = read_jsonl(DATA / f"{name}_train.jsonl")
    held = read_jsonl(DATA / f"{name}_eval.jsonl")
    assert len(train) == SHIPPED_PHRASINGS * len(facts), name
    rows, dropped = [], 0
    for number, fact in enumerate(facts, start=1):
        shipped = train[SHIPPED_PHRASINGS * (number - 1):SHIPPED_PHRASINGS * number]
        assert all(fact["keyword"].lower() in r["output"].lower() for r in shipped), fact
        held_out = [r["question"] for r in held if r["fact_id"] == number]
        rows += shipped
        for question, answer in fact["phrasings"]:
            assert fact["keyword"].lower() in answer.lower(), (fact["keyword"], answer)
            if leaks(question, [r["instruction"] for r in shipped], held_out):
                dropped += 1
                continue
            rows.append({"instruction": question, "input": "", "output": answer})
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (DATA / f"{name}_train_9ways.jsonl").write_text(text, encoding="utf-8")
    return len(rows), dropped


def main() -> None:
    more = json.loads((ROOT / "scripts" / "data" / "more_phrasings.json")
                      .read_text(encoding="utf-8"))
    for name, facts in more.items():
        rows, dropped = build(name, facts)
        print(f"{name}: {rows} rows ({dropped} new phrasings dropped as too close to a "
              "held-out question)")


if __name__ == "__main__":
    main()
