"""Build the shipped preference data of presets/dpo-quickstart.yaml (run once; the files
are committed). English: the embedded base model answers each question; its own first
sentence led by the label "💡 " is the preferred answer (on-policy, as DPO wants). Chinese:
the base model does not write Chinese, so those answers (one sentence, and a longer one)
were written by hand (scripts/data/short_answer_zh_pairs.json).

One label for both languages: with "Short answer:" and "简短回答：" the 135M model learned the
English label and put it on Chinese answers too (0 of 15 Chinese answers labelled right).

Each question gives minimal pairs, each differing in one thing only, so that DPO's margin
can only come from the behaviour taught: the labelled sentence against the same sentence
without the label, against the labelled answer that goes on for a second sentence (none
where the answer had only one), and against the same sentence with the label written twice
(without that pair some runs answered with the label over and over). The pairs are shuffled
with a fixed seed. DPO then teaches a behaviour anyone can check: a labelled, one-sentence
answer. The questions are in scripts/data/short_answer_prompts.json.
Usage: python scripts/make_short_answer_data.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from finetune_gui.answering import answer_many
from finetune_gui.chat import ChatEngine
from finetune_gui.config import GenerationConfig, RunConfig
from finetune_gui.data import Example, Turn
from finetune_gui.replay import whole_sentences

DATA = Path(__file__).resolve().parents[1] / "presets" / "data"
PROMPTS = Path(__file__).resolve().parent / "data" / "short_answer_prompts.json"
ZH_PAIRS = Path(__file__).resolve().parent / "data" / "short_answer_zh_pairs.json"
LABEL = "💡 "
SENTENCE = r".+?(?:[.!?](?=\s|$)|[。！？])"
FIRST_SENTENCE = re.compile(rf"^({SENTENCE})", re.S)
TWO_SENTENCES = re.compile(rf"^({SENTENCE}(?:\s*{SENTENCE})?)", re.S)
GENERATION = GenerationConfig(max_new_tokens=96, temperature=0.0, repetition_penalty=1.0)


def first_sentence(text: str, pattern=FIRST_SENTENCE) -> str:
    found = pattern.match(text.strip())
    return (found.group(1) if found else text.strip()).strip()


def minimal_pairs(question: str, short: str, longer: str, lang: str) -> list[dict]:
    """The labelled sentence against the same without the label, against the labelled
    longer answer (the same as the labelled sentence where the answer had only one: such
    a pair is dropped after the shuffle), and against the label written twice."""
    chosen = LABEL + short
    return [{"prompt": question, "chosen": chosen, "rejected": rejected, "lang": lang}
            for rejected in (short, LABEL + longer, LABEL.strip() + chosen)]


def main() -> None:
    prompts = json.loads(PROMPTS.read_text(encoding="utf-8"))
    written_by_hand = json.loads(ZH_PAIRS.read_text(encoding="utf-8"))
    engine = ChatEngine.from_config(RunConfig())
    rows = []
    questions = prompts["train_en"]
    answers = answer_many(engine, [Example([Turn(q)]) for q in questions], GENERATION,
                          use_adapter=False)
    for question, answer in zip(questions, answers):
        whole = first_sentence(whole_sentences(answer), TWO_SENTENCES)
        short = first_sentence(whole)
        if short and "\ufffd" not in whole:
            rows += minimal_pairs(question, short, whole, "en")
    for row in written_by_hand:
        rows += minimal_pairs(row["prompt"], row["short"], row["long"], "zh")
    random.Random(0).shuffle(rows)
    rows = [r for r in rows if r["chosen"] != r["rejected"]]  # a one-sentence answer
    (DATA / "short_answer_pref.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    held = [{"question": q, "keywords": [LABEL.strip()], "lang": lang}
            for lang in ("en", "zh") for q in prompts[f"eval_{lang}"]]
    (DATA / "short_answer_eval.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held), encoding="utf-8")
    print(f"{len(rows)} pairs, {len(held)} held-out questions")


if __name__ == "__main__":
    main()
