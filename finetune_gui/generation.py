"""The run's generation settings as ``generate()`` arguments: one mapping, used by chat,
evaluation and the merged export's ``generation_config.json``, so they decode alike."""

from __future__ import annotations

from .config import GenerationConfig


def sampling_kwargs(params: GenerationConfig) -> dict:
    """Greedy when temperature is 0 (the sampling knobs cleared, so a model's own
    generation_config cannot switch sampling back on), else sampling with the run's knobs."""
    kwargs = dict(max_new_tokens=params.max_new_tokens,
                  repetition_penalty=params.repetition_penalty)
    if params.temperature > 0:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs
