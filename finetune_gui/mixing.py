"""Several data files in one run, each giving a fixed share of the training sequences.

``data.mix`` names the extra files with their shares (``PATH@SHARE``); ``data.path`` gives
the rest. Shares count training sequences (rows, or a document's chunks) after
tokenisation, so 20% instruction rows beside a manual means 20% of what the model sees.
A source with fewer rows than its share repeats them; one with more is sampled, seeded.
"""

from __future__ import annotations

import random


def mix_counts(main_rows: int, shares: list[float]) -> list[int]:
    """Rows to take from each extra source so that it is its share of the whole."""
    main_share = 1.0 - sum(shares)
    return [max(1, round(main_rows * share / main_share)) for share in shares]


def pick_rows(available: int, wanted: int, seed: int) -> list[int]:
    """``wanted`` row indices out of ``available``: a seeded shuffle, repeated whole as
    often as needed (each row used as evenly as possible)."""
    rng = random.Random(seed)
    picked: list[int] = []
    while len(picked) < wanted:
        order = list(range(available))
        rng.shuffle(order)
        picked += order[:wanted - len(picked)]
    return picked
