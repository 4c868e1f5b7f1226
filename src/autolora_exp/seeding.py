"""One seed covers Python, NumPy, torch, the data splits and the data order; parts of a run
that must not depend on what ran before them (one rank of the grid) get a seed derived from it."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derived_seed(seed: int, *keys: int) -> int:
    """The seed of one part of a run, e.g. rank r of the grid: ``derived_seed(seed, r)``.

    NumPy's ``SeedSequence([seed, *keys])`` hashes the run's seed and the part's keys into a
    stream independent of every other part's; its first word, cut to 31 bits (what every RNG
    here accepts), is the part's seed. The same (seed, keys) always give the same seed, so a
    part resumed alone starts exactly as it did in an uninterrupted run.
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] >> 1)
