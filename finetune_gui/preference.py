"""Preference rows (DPO/ORPO: a prompt with a chosen and a rejected answer; KTO: a prompt
with one answer labelled desirable or not), checked by line, and the text a preference
trainer sees, rendered with the run's own template.

A preference row becomes an ``Example`` whose last turn is the prompt answered with the
chosen text (so the Data step's previews, SFT on chosen answers and the Evaluate step read
it like any other row) and whose ``rejected`` holds the other answer; a KTO row keeps its
answer in the last turn and its verdict in ``label``.
"""

from __future__ import annotations

import json
from typing import Any

from .data import Example, Turn, row_keywords, walk_messages
from .errors import FinetuneError
from .messages import Message
from .templates import TemplateSpec, adds_bos, encode_segments, segments

PREFERENCE_FORMATS = ("preference", "kto")
LABEL_WORDS = {"true": True, "1": True, "yes": True, "good": True, "desirable": True,
               "false": False, "0": False, "no": False, "bad": False, "undesirable": False}


def detect_preference_format(row: dict) -> str | None:
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "completion" in row and "label" in row:
        return "kto"
    return None


def row_to_preference_example(row: dict, fmt: str, where: str) -> Example:
    """One preference or KTO row as an ``Example``, or ``ValueError`` with the reason."""
    system, turns = _prompt(row)
    keywords = row_keywords(row)
    if fmt == "kto":
        completion = _answer(row, "completion")
        turns[-1].output = completion
        return Example(turns, system=system, where=where, keywords=keywords,
                       label=_label(row.get("label")))
    chosen, rejected = _answer(row, "chosen"), _answer(row, "rejected")
    if chosen.strip() == rejected.strip():
        raise ValueError(Message("row.pref_same"))
    turns[-1].output = chosen
    return Example(turns, system=system, where=where, keywords=keywords, rejected=rejected)


def _prompt(row: dict) -> tuple[str, list[Turn]]:
    """The system text and the turns up to the one being answered (its output left empty).
    ``prompt`` is text, or messages in the conversational form ending with the user's."""
    prompt = _json_list(row.get("prompt"), "prompt")
    if prompt is None:
        raise ValueError(Message("row.missing", name="prompt"))
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(Message("row.empty", name="prompt"))
        return "", [Turn(prompt)]
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(Message("row.pref_prompt"))
    system, turns, pending = walk_messages(prompt, "prompt")
    if pending is None:
        raise ValueError(Message("row.pref_prompt_end"))
    return system, turns + [Turn(pending)]


def _answer(row: dict, name: str) -> str:
    """``chosen`` / ``rejected`` / ``completion``: text, or one assistant message."""
    value = _json_list(row.get(name), name)
    if value is None:
        raise ValueError(Message("row.missing", name=name))
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(Message("row.pref_one_message", name=name, n=len(value)))
        message = value[0]
        if not isinstance(message, dict) or message.get("role") != "assistant":
            raise ValueError(Message("row.pref_assistant", at=f"{name}[1]"))
        value = message.get("content")
    if not isinstance(value, str):
        raise ValueError(Message("row.not_text", name=name, kind=type(value).__name__))
    if not value.strip():
        raise ValueError(Message("row.empty", name=name))
    return value


def _json_list(value: Any, name: str) -> Any:
    """CSV cells hold message lists as JSON text."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(Message("row.not_json_list", name=name)) from None
    return value


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    raise ValueError(Message("row.kto_label", got=repr(str(value)[:40])))


# ---- what the trainer sees --------------------------------------------------------------

def trainer_rows(examples: list[Example], method: str, spec: TemplateSpec, tokenizer,
                 max_len: int) -> tuple[list[dict], list[str]]:
    """Rows for TRL (``prompt`` / ``chosen`` / ``rejected``, or ``prompt`` / ``completion``
    / ``label`` for KTO) as text in the run's template, and the rows that do not fit in
    ``max_len`` tokens, named by line.

    The prompt is the template's own rendering up to where the answer starts, the answers
    what the template puts after it (end-of-turn token included), so the pairs are the
    tokens SFT and chat use. A tokenizer that adds its BOS itself gets the text without it.
    """
    rows, too_long = [], []
    bos = tokenizer.bos_token or ""
    for example in examples:
        answers = _answers(example, method)
        pieces = []
        for output in answers:
            parts = segments(example.with_answer(output), spec, tokenizer)
            last = max(i for i, part in enumerate(parts) if part.trained)
            pieces.append(("".join(p.text for p in parts[:last]), parts[last].text))
            if len(encode_segments(parts[:last + 1], tokenizer).input_ids) > max_len:
                too_long.append(example.where or "a row")
                break
        else:
            prompt = pieces[0][0]
            if bos and prompt.startswith(bos) and adds_bos(tokenizer):
                prompt = prompt[len(bos):]
            if method == "kto":
                rows.append({"prompt": prompt, "completion": pieces[0][1],
                             "label": bool(example.label)})
            else:
                rows.append({"prompt": prompt, "chosen": pieces[0][1],
                             "rejected": pieces[1][1]})
    return rows, too_long


def _answers(example: Example, method: str) -> list[str]:
    chosen = example.turns[-1].output
    if method == "kto" or example.rejected is None:
        return [chosen]
    return [chosen, example.rejected]


def kto_rows_from_pairs(examples: list[Example]) -> list[Example]:
    """KTO on paired data: each pair gives a desirable and an undesirable row."""
    out = []
    for ex in examples:
        if ex.rejected is None:
            out.append(ex)
            continue
        out.append(ex.with_answer(ex.turns[-1].output, label=True))
        out.append(ex.with_answer(ex.rejected, label=False))
    return out


def examples_for_method(examples: list[Example], method: str, path: str,
                        log) -> list[Example]:
    """The rows a method trains on, or a clear error when the file cannot serve it: SFT
    learns the chosen (or desirable) answers; DPO and ORPO need pairs; KTO takes labelled
    answers or pairs (each pair gives one good and one bad answer)."""
    pairs = sum(ex.rejected is not None for ex in examples)
    labelled = sum(ex.label is not None for ex in examples)
    if method == "sft":
        if labelled:
            kept = [ex for ex in examples if ex.label is not False]
            log(f"sft on labelled rows: trains the {len(kept)} desirable answers, skips "
                f"{len(examples) - len(kept)} undesirable ones")
            return kept
        return examples
    if method in ("dpo", "orpo") and pairs < len(examples):
        raise FinetuneError(Message("pref.needs_pairs", path=path, method=method,
                                    n=len(examples) - pairs, total=len(examples)))
    if method == "kto":
        if pairs + labelled < len(examples):
            raise FinetuneError(Message("pref.kto_rows", path=path))
        return kto_rows_from_pairs(examples)
    return examples
