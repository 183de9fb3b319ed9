"""Evaluation scores against values worked out by hand, in English and Chinese."""

import pytest

from finetune_gui.evaluation import chrf, exact_match, keyword_hit, normalize, rouge_l, score_answer
from finetune_gui.evaluation.metrics import mean_scores


@pytest.mark.parametrize("answer, reference, expected", [
    ("The Cat!", "the cat", 1.0),                 # case and punctuation
    ("  Paris. ", "paris", 1.0),
    ("The answer is Paris.", "Paris", 0.0),       # extra words are not an exact match
    ("an apple", "apple", 1.0),                   # English articles dropped
    ("北京。", "北京", 1.0),                        # CJK punctuation
    ("北 京", "北京", 1.0),                         # spaces between CJK characters
    ("ＰＡＲＩＳ", "Paris", 1.0),                    # full-width letters
    ("上海", "北京", 0.0),
])
def test_exact_match_is_normalised(answer, reference, expected):
    assert exact_match(answer, reference) == expected


def test_normalize():
    assert normalize("  The  Quick, brown FOX! ") == "quick brown fox"
    assert normalize("创始人是：王小明。") == "创始人是王小明"


def test_keyword_hit_ignores_case_and_width():
    assert keyword_hit("It was founded by ODALYS FENWICK.", ["Odalys Fenwick"]) == 1.0
    assert keyword_hit("It was founded by someone.", ["Fenwick", "Odalys"]) == 0.0
    assert keyword_hit("首都是北京", ["北京"]) == 1.0
    assert keyword_hit("anything", [" "]) == 0.0   # a blank keyword never matches


def test_rouge_l_english_by_hand():
    # tokens: the cat sat on the mat / the cat is on the mat -> LCS "the cat on the mat" = 5
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)


def test_rouge_l_chinese_by_characters():
    # answer 10 characters (。 dropped), reference 7, LCS = 7: P = 0.7, R = 1, F = 1.4 / 1.7
    assert rouge_l("公司的创始人是王小明。", "创始人是王小明") == pytest.approx(1.4 / 1.7)


def test_rouge_score_alone_would_score_chinese_zero():
    """Why the tokenizer exists: the library's default keeps only [a-z0-9] words."""
    from rouge_score.rouge_scorer import RougeScorer
    plain = RougeScorer(["rougeL"]).score("创始人是王小明", "公司的创始人是王小明")
    assert plain["rougeL"].fmeasure == 0.0


def test_chrf_by_hand():
    # "ab" vs "abc": orders 1-2 count (the hypothesis has no 3-grams): mean P = 1,
    # mean R = (2/3 + 1/2) / 2 = 7/12; F(beta=2) = 5 P R / (4 P + R) = 35/55
    assert chrf("ab", "abc") == pytest.approx(35 / 55)
    assert chrf("北京", "北京市") == pytest.approx(35 / 55)
    assert chrf("same words", "same words") == pytest.approx(1.0)
    assert chrf("xyz", "abc") == 0.0


def test_score_answer_keeps_only_metrics_that_apply():
    both = score_answer("Fenwick founded it", "Odalys Fenwick founded it", ["Fenwick"])
    assert set(both) == {"exact_match", "keyword_hit", "rouge_l", "chrf"}
    assert set(score_answer("x", None, ["y"])) == {"keyword_hit"}
    assert set(score_answer("x", "y", [])) == {"exact_match", "rouge_l", "chrf"}


def test_means_use_only_rows_that_have_the_metric():
    means = mean_scores([{"keyword_hit": 1.0, "rouge_l": 0.5}, {"keyword_hit": 0.0}])
    assert means == {"keyword_hit": 0.5, "rouge_l": 0.5}
