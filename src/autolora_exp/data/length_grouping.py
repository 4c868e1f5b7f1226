"""Length-grouped batches (``train.group_by_length``), as HF Trainer's ``LengthGroupedSampler``.

Padding is per batch, so a batch of similar lengths wastes little compute on pads. Per epoch:

    perm        = a seeded random permutation of the rows
    megabatches = perm cut into runs of ``mega_factor * batch_size`` rows (HF Trainer: 50)
    each megabatch sorted by length, longest first, then cut into batches
    the batch order is shuffled (seeded): long and short batches alternate over the epoch

Every batch holds rows of similar length while the epoch stays random. Unlike HF Trainer the
batch order is shuffled too (HF keeps the longest batch first for early out-of-memory errors;
here the longest batch is moved to the front as well, for the same reason). The randomness
comes from the loader's ``generator``, which :func:`autolora_exp.train.epoch_batches` reseeds
from (seed, epoch): any epoch's batches are reproducible on their own, so a resumed run sees
the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches (lists of row indices) of similar lengths in a seeded random order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 mega_factor: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.mega = mega_factor * batch_size

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(perm), self.mega):
            mega = sorted(perm[start:start + self.mega], key=lambda i: -self.lengths[i])
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        batches = [batches[i] for i in order]
        if batches:  # the longest batch first: an out-of-memory error shows at the first step
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter(batches)
