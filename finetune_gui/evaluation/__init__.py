"""Did it learn? Held-out answers scored, base vs tuned, and what the tuning forgot."""

from .metrics import METRICS, chrf, exact_match, keyword_hit, normalize, rouge_l, score_answer
from .rows import EvalRow, read_eval_rows, row_to_eval_row
from .runner import (EVAL_DIR, HELDOUT_FILE, EvalOptions, Progress, evaluate_engine,
                     evaluate_run, rows_source, saved_results)

__all__ = ["METRICS", "EVAL_DIR", "HELDOUT_FILE", "EvalOptions", "EvalRow", "Progress",
           "chrf", "evaluate_engine", "evaluate_run", "exact_match", "keyword_hit",
           "normalize", "read_eval_rows", "rouge_l", "row_to_eval_row", "rows_source",
           "saved_results", "score_answer"]
