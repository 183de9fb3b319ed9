"""Build the shipped preference data of presets/dpo-quickstart.yaml (run once; the files
are committed). English: the embedded base model answers each question; the preferred
answer is its own first sentence led by "Short answer:", the rejected one its whole answer
(on-policy pairs, as DPO wants), cut to its first two sentences to keep a CPU run short. Chinese: the base model does not write Chinese, so those
pairs ("简短回答：" + one sentence vs a longer unlabelled answer) were written by hand and
are kept from the existing file. DPO then teaches a behaviour anyone can check: a labelled,
one-sentence answer. The questions are in scripts/data/short_answer_prompts.json.
Usage: python scripts/make_short_answer_data.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from finetune_gui.answering import answer_many
from finetune_gui.chat import ChatEngine
from finetune_gui.config import GenerationConfig, RunConfig
from finetune_gui.data import Example, Turn
from finetune_gui.replay import whole_sentences

DATA = Path(__file__).resolve().parents[1] / "presets" / "data"
PROMPTS = Path(__file__).resolve().parent / "data" / "short_answer_prompts.json"
LABEL = {"en": "Short answer: ", "zh": "简短回答："}
SENTENCE = r".+?(?:[.!?](?=\s|$)|[。！？])"
FIRST_SENTENCE = re.compile(rf"^({SENTENCE})", re.S)
TWO_SENTENCES = re.compile(rf"^({SENTENCE}(?:\s*{SENTENCE})?)", re.S)
GENERATION = GenerationConfig(max_new_tokens=96, temperature=0.0, repetition_penalty=1.0)


def first_sentence(text: str, pattern=FIRST_SENTENCE) -> str:
    found = pattern.match(text.strip())
    return (found.group(1) if found else text.strip()).strip()


def main() -> None:
    prompts = json.loads(PROMPTS.read_text(encoding="utf-8"))
    pairs_file = DATA / "short_answer_pref.jsonl"
    written_by_hand = [row for line in pairs_file.read_text(encoding="utf-8").splitlines()
                       if line.strip() and (row := json.loads(line))["lang"] == "zh"]
    for row in written_by_hand:
        row["rejected"] = first_sentence(row["rejected"], TWO_SENTENCES)
    engine = ChatEngine.from_config(RunConfig())
    rows = []
    questions = prompts["train_en"]
    answers = answer_many(engine, [Example([Turn(q)]) for q in questions], GENERATION,
                          use_adapter=False)
    for question, answer in zip(questions, answers):
        whole = first_sentence(whole_sentences(answer), TWO_SENTENCES)
        short = first_sentence(whole)
        if short and "\ufffd" not in whole:
            rows.append({"prompt": question, "chosen": LABEL["en"] + short, "rejected": whole,
                         "lang": "en"})
    rows += written_by_hand
    pairs_file.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    held = [{"question": q, "keywords": [LABEL[lang].strip(" ：:")], "lang": lang}
            for lang in ("en", "zh") for q in prompts[f"eval_{lang}"]]
    (DATA / "short_answer_eval.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held), encoding="utf-8")
    print(f"{len(rows)} pairs, {len(held)} held-out questions")


if __name__ == "__main__":
    main()
