"""Reading an evaluation result: the summary with base-vs-tuned differences, rows worst first."""

from __future__ import annotations

from .metrics import METRICS

LABELS = {"exact_match": "exact match", "keyword_hit": "keyword hits", "rouge_l": "ROUGE-L",
          "chrf": "chrF", "eval_loss": "eval loss", "perplexity": "perplexity",
          "general_kept": "general answers kept"}
LOWER_IS_BETTER = {"eval_loss", "perplexity"}
SUMMARY_KEYS = (*METRICS, "eval_loss", "perplexity")


def summary_table(result: dict) -> list[dict]:
    """One entry per metric: ``{"metric", "tuned", "base", "delta", "better"}`` where
    ``better`` says whether the tuned model is better than its base on it (None: no base)."""
    tuned = result["summary"].get("tuned", {})
    base = result["summary"].get("base", {})
    table = []
    for key in SUMMARY_KEYS:
        if key not in tuned:
            continue
        entry = {"metric": key, "tuned": tuned[key], "base": base.get(key), "delta": None,
                 "better": None}
        if entry["base"] is not None:
            entry["delta"] = tuned[key] - base[key]
            if entry["delta"]:
                entry["better"] = (entry["delta"] < 0) == (key in LOWER_IS_BETTER)
        table.append(entry)
    return table


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric in ("eval_loss",):
        return f"{value:.3f}"
    if metric == "perplexity":
        return f"{value:,.1f}"
    return f"{value:.1%}"


def keyword_counts(result: dict, side: str = "tuned") -> tuple[int, int] | None:
    """(rows whose answer names a keyword, rows with keywords)."""
    key = "metrics" if side == "tuned" else "base_metrics"
    hits = [r[key]["keyword_hit"] for r in result["rows"] if "keyword_hit" in r.get(key, {})]
    return (int(sum(hits)), len(hits)) if hits else None


def summary_lines(result: dict) -> list[str]:
    """The summary as plain text lines (the CLI's report)."""
    n = result["summary"]["tuned"].get("n", 0)
    lines = [f"{n} rows from {result['data']}" + (" (stopped early)" if result["stopped"] else "")
             + f", {result['seconds']:.1f} s"]
    has_base = "base" in result["summary"]
    lines.append(f"{'metric':<22}{'tuned':>10}" + (f"{'base':>10}{'change':>10}" if has_base
                                                    else ""))
    for e in summary_table(result):
        line = f"{LABELS[e['metric']]:<22}{format_value(e['metric'], e['tuned']):>10}"
        if has_base:
            delta = "–" if e["delta"] is None else (
                f"{e['delta']:+.3f}" if e["metric"] in LOWER_IS_BETTER else f"{e['delta']:+.1%}")
            line += f"{format_value(e['metric'], e['base']):>10}{delta:>10}"
        lines.append(line)
    for side in ("tuned", "base"):
        counts = keyword_counts(result, side)
        if counts:
            lines.append(f"keyword hits ({side}): {counts[0]}/{counts[1]}")
    general = result.get("general")
    if general:
        kept = general["kept"]
        lines.append("general answers kept: " + (
            f"{kept:.0%} ({general['kept_right']} of the {general['base_right']} probe "
            f"questions the base answers right)" if kept is not None else
            "– (the base model answers none of the probe questions right)"))
    return lines


def row_score(row: dict, side: str = "metrics") -> float:
    """One number per row to sort by: keyword hit first, then ROUGE-L, then chrF."""
    m = row.get(side, {})
    return (m.get("keyword_hit", 0.0) * 2 + m.get("rouge_l", 0.0) + m.get("chrf", 0.0)
            + m.get("exact_match", 0.0))


def worse_than_base(row: dict) -> bool:
    return "base_metrics" in row and row_score(row) < row_score(row, "base_metrics")


def rows_worst_first(result: dict, only_worse: bool = False) -> list[dict]:
    rows = [r for r in result["rows"] if not only_worse or worse_than_base(r)]
    return sorted(rows, key=row_score)


def compare_evaluations(results_by_run: dict[str, dict[str, dict]]) -> list[list]:
    """Rows ``[questions, metric, value per run...]`` for the runs' saved evaluations
    (``{run label: {data name: result}}``), so Compare runs can set them side by side.
    A run without an evaluation of a question set shows "–" there."""
    labels = list(results_by_run)
    names = sorted({name for results in results_by_run.values() for name in results})
    table = []
    for name in names:
        summaries = [results_by_run[label].get(name, {}).get("summary", {}).get("tuned", {})
                     for label in labels]
        generals = [results_by_run[label].get(name, {}).get("summary", {}) for label in labels]
        for key in (*SUMMARY_KEYS, "general_kept"):
            values = [s.get(key) for s in summaries]
            if all(v is None for v in values):
                continue
            table.append([name, LABELS[key], *(format_value(key, v) for v in values)])
        base = [g.get("base", {}).get("keyword_hit") for g in generals]
        if any(v is not None for v in base):
            table.append([name, "keyword hits (base)", *(format_value("keyword_hit", v)
                                                         for v in base)])
    return table
