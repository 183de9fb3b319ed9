"""Settings that teach a small set of facts without making the model forget the rest.

Measured with the Evaluate step on the quickstart's Quillmore facts and checked on a second
fact set it was never tuned on (README, "Did it learn?"). The quickstart preset uses exactly
these values; the LoRA and Train tabs suggest them when the data is small.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig

SMALL_DATA_ROWS = 500

# What worked on few hundred rows of facts (the UI shows the reason for each key).
FACT_RECIPE: dict[str, Any] = {
    "train.epochs": 5.0,
    "train.learning_rate": 1e-3,
    "data.replay_ratio": 0.5,
    "lora.r": 16,
    "lora.alpha": 32.0,
    "lora.target_modules": "all-linear",
}


def recipe_last_layers(layers: int | None) -> int | None:
    """Adapters on the top half of the layers: as many facts learned as on all of them, fewer
    general answers lost, and a shorter backward pass. None when the depth is unknown."""
    return layers // 2 if layers and layers >= 4 else None


def small_data_suggestions(config: RunConfig, rows: int, layers: int | None = None
                           ) -> dict[str, Any]:
    """The recipe's values that differ from ``config``, when ``rows`` is small data;
    ``layers`` (the model's depth, when known) adds the top-half-of-the-layers setting."""
    if not 0 < rows < SMALL_DATA_ROWS:
        return {}
    wanted = dict(FACT_RECIPE)
    top = recipe_last_layers(layers)
    if top is not None:
        wanted["lora.last_layers"] = top
    out = {}
    for key, value in wanted.items():
        section, name = key.split(".")
        if getattr(getattr(config, section), name) != value:
            out[key] = value
    return out
