"""Per-answer scores: exact match, keyword hit, ROUGE-L and chrF.

ROUGE-L comes from ``rouge-score`` and chrF from ``sacrebleu`` (both offline). ROUGE's own
tokenizer keeps only ``[a-z0-9]`` words, so a Chinese answer would score nothing; here the
same library runs with a tokenizer that keeps every letter-or-digit word and splits CJK text
into single characters, the usual unit for Chinese. chrF already works on characters.
Every score is in 0..1 (chrF divided by 100) so that means over rows read alike.
"""

from __future__ import annotations

import re
import string
import unicodedata

CJK_RANGES = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
              "\U00020000-\U0002ebef")
_CJK_CHAR = re.compile(f"[{CJK_RANGES}]")
_TOKEN = re.compile(f"[{CJK_RANGES}]|[^\\W_]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACE_NEAR_CJK = re.compile(f"(?<=[{CJK_RANGES}])\\s+|\\s+(?=[{CJK_RANGES}])")

METRICS = ("exact_match", "keyword_hit", "rouge_l", "chrf")


def has_cjk(text: str) -> bool:
    return bool(_CJK_CHAR.search(text or ""))


def normalize(text: str) -> str:
    """Case, width, punctuation (ASCII and CJK), English articles and spacing removed."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") or ch in string.punctuation
                   else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    text = " ".join(text.split())
    return _SPACE_NEAR_CJK.sub("", text)


def exact_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def keyword_hit(answer: str, keywords: list[str]) -> float:
    """1 when any keyword occurs in the answer (case and width ignored)."""
    text = unicodedata.normalize("NFKC", answer or "").lower()
    return float(any(unicodedata.normalize("NFKC", k).lower() in text
                     for k in keywords if k.strip()))


class WordsAndCjkCharacters:
    """A rouge-score tokenizer: lower-cased letter/digit words, each CJK character alone."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(unicodedata.normalize("NFKC", text or "").lower())


_scorer = None


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens)."""
    global _scorer
    if _scorer is None:
        from rouge_score.rouge_scorer import RougeScorer
        _scorer = RougeScorer(["rougeL"], tokenizer=WordsAndCjkCharacters())
    return float(_scorer.score(reference or "", answer or "")["rougeL"].fmeasure)


def chrf(answer: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character 6-grams, beta 2), divided by 100."""
    from sacrebleu.metrics import CHRF
    return float(CHRF().sentence_score(answer or "", [reference or ""]).score) / 100.0


def score_answer(answer: str, reference: str | None, keywords: list[str]) -> dict[str, float]:
    """The scores that apply to one row: reference metrics when there is a reference,
    keyword_hit when there are keywords."""
    scores: dict[str, float] = {}
    if reference:
        scores["exact_match"] = exact_match(answer, reference)
    if keywords:
        scores["keyword_hit"] = keyword_hit(answer, keywords)
    if reference:
        scores["rouge_l"] = rouge_l(answer, reference)
        scores["chrf"] = chrf(answer, reference)
    return scores


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the rows that have it."""
    out = {}
    for name in METRICS:
        values = [r[name] for r in rows if name in r]
        if values:
            out[name] = sum(values) / len(values)
    return out
