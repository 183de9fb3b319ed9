"""The execution plan and the memory estimate as tables (LoRA and Train tabs)."""

from __future__ import annotations

from ..config import RunConfig
from ..errors import FinetuneError
from .common import friendly
from .locale import say, t

GIB = 1024 ** 3


def memory_table(report, lang: str) -> str:
    """The estimate's parts, largest first, with readable names and a bar each."""
    parts = sorted(((k, v) for k, v in (report.breakdown or {}).items() if v > 0),
                   key=lambda kv: -kv[1])
    if not parts:
        return ""
    top = parts[0][1]
    rows = [f"| {t('lora.memory_part', lang)} | {t('lora.memory_size', lang)} | |",
            "|---|---:|---|"]
    for key, size in parts:
        bar = "█" * max(1, round(12 * size / top))
        rows.append(f"| {t('mem.' + key, lang)} | {size / GIB:.2f} | {bar} |")
    return "\n".join(rows)


def plan_table(plan_rows: list[tuple[str, str]], lang: str) -> str:
    """The execution plan (finetune_gui.plan) as a two-column table."""
    rows = [f"**{t('plan.title', lang)}**", "", "| | |", "|---|---|"]
    rows += [f"| {t('plan.' + name, lang)} | `{value}` |" for name, value in plan_rows]
    return "\n".join(rows)


def plan_text(config: RunConfig, lang: str) -> str:
    """The plan a Start would follow now, with its notes (why 4-bit is kept, and so on)."""
    from ..plan import resolve_plan
    try:
        plan = resolve_plan(config)
    except FinetuneError as exc:
        return f"⚠️ {friendly(exc, lang)}"
    lines = [plan_table(plan.rows(), lang)]
    lines += [f"- {say(note, lang)}" for note in plan.notes]
    return "\n\n".join(lines)
