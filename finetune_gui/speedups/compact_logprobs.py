"""Preference methods on a CPU: TRL's fused head scores the answer positions only.

TRL's DPO, ORPO and KTO get each answer token's log-probability from a chunked head
(``trl.trainer.utils.add_fused_lm_head``). Where Triton runs (CUDA) it scores only the
positions that carry a label; everywhere else it scores every position — prompt and padding
included, projected onto the whole vocabulary in fp32 — because on XLA devices a changing
number of positions would recompile. A CPU in eager mode has no such cost, yet there that
head was ~40% of a DPO step (py-spy, the DPO quickstart). Here it scores only the labelled
positions, as on CUDA: the same log-probabilities (the rest are zero either way).

Reference path: TRL's every-position scoring (speed-up off); the DPO loss is checked against
the formula by hand both ways (tests/test_preference.py). It replaces TRL's private
``_use_triton`` name inside ``trl.trainer.utils`` only (the kernels keep theirs), so it is
guarded by the TRL versions it was read on.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

TRL_READ_ON = ("1.16.",)


def enable_compact_logprobs() -> str | None:
    """Score only labelled positions on a CPU too; None when on, else why it is not."""
    try:
        trl_version = version("trl")
        from trl.trainer import utils
    except (PackageNotFoundError, ImportError):
        return "TRL is not installed"
    if not trl_version.startswith(TRL_READ_ON):
        return f"TRL {trl_version} is not a version this was checked on ({TRL_READ_ON[0]}x)"
    original = getattr(utils, "_use_triton", None)
    if original is None:
        return f"TRL {trl_version} decides its head's positions elsewhere"
    if getattr(original, "trl_original", None):
        return None

    def compact_also_on_cpu(device) -> bool:
        return bool(original(device)) or device.type == "cpu"
    compact_also_on_cpu.trl_original = original
    utils._use_triton = compact_also_on_cpu
    return None


def disable_compact_logprobs() -> None:
    """TRL's own choice again (a run with the speed-up off after one with it on)."""
    utils = sys.modules.get("trl.trainer.utils")
    original = getattr(getattr(utils, "_use_triton", None), "trl_original", None)
    if original is not None:
        utils._use_triton = original
