"""Build ``presets/data/larkspur_manual_rewrites.jsonl``: the manual's 24 facts restated.

A small model that reads a fact in one wording stores it but cannot retrieve it for a
question put another way; reading it in several wordings and orders ("knowledge
augmentation", Allen-Zhu & Li, Physics of Language Models 3.1) is what makes it answerable.
``scripts/data/larkspur_restatements.json`` states each fact in six ways; fact sheet k
takes the k-th statement of every fact, in an order shuffled with seed k, so each sheet is
a short document (raw text, ``text`` rows) that says everything once. No sheet shares a
four-word run with a held-out question that the manual itself does not (checked here), so
the held-out questions stay as unseen as before. Run from the repository root.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_phrasing_data import word_runs   # the same four-word-run check as the fact sets

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scripts" / "data" / "larkspur_restatements.json"
HELD_OUT = ROOT / "presets" / "data" / "larkspur_eval.jsonl"
MANUAL = ROOT / "presets" / "data" / "larkspur_manual" / "en.md"
TARGET = ROOT / "presets" / "data" / "larkspur_manual_rewrites.jsonl"
SENTENCES_PER_PARAGRAPH = 4


def fact_sheet(statements: list[str], version: int) -> str:
    order = list(range(len(statements)))
    random.Random(version).shuffle(order)
    sentences = [statements[i] for i in order]
    paragraphs = [" ".join(sentences[i:i + SENTENCES_PER_PARAGRAPH])
                  for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH)]
    return f"Larkspur K7 travel kettle: facts, sheet {version + 1}\n\n" + "\n\n".join(paragraphs)


def build_sheets() -> list[str]:
    """The six sheets; refuses (SystemExit) a sheet that leaks a held-out question."""
    facts = json.loads(SOURCE.read_text(encoding="utf-8"))["facts"]
    questions = [json.loads(line)["question"]
                 for line in HELD_OUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out_runs = set().union(*(word_runs(q) for q in questions))
    held_out_runs -= word_runs(MANUAL.read_text(encoding="utf-8"))
    versions = len(facts[0])
    sheets = [fact_sheet([fact[k] for fact in facts], k) for k in range(versions)]
    for sheet in sheets:
        shared = word_runs(sheet) & held_out_runs
        if shared:
            raise SystemExit(f"a fact sheet shares {sorted(shared)[:3]} with a held-out question")
    return sheets


def main() -> None:
    sheets = build_sheets()
    TARGET.write_text("".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in sheets),
                      encoding="utf-8")
    print(f"{TARGET.relative_to(ROOT)}: {len(sheets)} fact sheets")


if __name__ == "__main__":
    main()
