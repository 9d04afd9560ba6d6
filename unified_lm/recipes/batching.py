"""Resumable batch streams for the recipes: seeds and shuffles that depend only on their
keys (so a resumed run draws what an uninterrupted one would have), and sharding."""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Sequence

from accelerate import Accelerator


def step_seed(*keys: Any) -> int:
    """A seed that depends only on ``keys`` (str seeding of random.Random is stable across runs)."""
    return random.Random("/".join(map(str, keys))).getrandbits(63)


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The shuffling RNG of one epoch: the same on every rank and on every rerun."""
    return random.Random(f"{seed}/{epoch}")


def shard(groups: Sequence[Any], accelerator: Accelerator, skip: int, collate: Callable[[Any], Any]) -> Iterator[Any]:
    """This rank's share of an epoch's batch ``groups`` (every ``num_processes``-th), the
    first ``skip`` left out, collated one at a time."""
    for group in list(groups[accelerator.process_index :: accelerator.num_processes])[skip:]:
        yield collate(group)


def per_rank(num_batches: int, accelerator: Accelerator) -> int:
    return math.ceil(num_batches / accelerator.num_processes)
