"""Settings that teach a small set of facts without making the model forget the rest.

Measured with the Evaluate step on the quickstart's Quillmore facts and checked on a second
fact set it was never tuned on (README, "Did it learn?"). The quickstart preset uses exactly
these values; the LoRA and Train tabs suggest them when the data is small.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig

SMALL_DATA_ROWS = 500

# Why each setting, in one line (the UI shows the translated text for the same key).
FACT_RECIPE: dict[str, Any] = {
    "train.epochs": 5.0,
    "train.learning_rate": 1e-3,
    "data.replay_ratio": 0.5,
    "lora.r": 16,
    "lora.alpha": 32.0,
    "lora.target_modules": "all-linear",
}


def small_data_suggestions(config: RunConfig, rows: int) -> dict[str, Any]:
    """The recipe's values that differ from ``config``, when ``rows`` is small data."""
    if not 0 < rows < SMALL_DATA_ROWS:
        return {}
    out = {}
    for key, value in FACT_RECIPE.items():
        section, name = key.split(".")
        if getattr(getattr(config, section), name) != value:
            out[key] = value
    return out
