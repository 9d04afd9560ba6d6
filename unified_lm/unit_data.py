"""Training data: a unit-manifest dataset, a length-bucketed token-budget batch sampler, sharding.

Batches are built the fairseq way rather than the reference recipe's (every example padded
to a 1024-token block): examples are sorted by length, packed greedily into batches whose
*padded* size (examples x longest example) stays within ``max_tokens``, and the batches
are shuffled. Short utterances then cost what they are, not a full block.

Everything random is a pure function of (seed, epoch[, index]), so a resumed run replays
exactly the batches and task draws of an uninterrupted one.
"""

from __future__ import annotations

import itertools
import math
import random
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .corpus.manifest import UnitRecord, read_unit_manifest
from .errors import ConfigError, DataError
from .tasks import TASKS, TaskConfig, TaskMixture, TokenSequence, collate
from .vocab import UnifiedVocab


def read_checked_manifest(path: str | Path, vocab: UnifiedVocab) -> list[UnitRecord]:
    """Reads a unit manifest and checks that every record's units come from a tokenizer of
    ``vocab`` and lie in its range."""
    path = Path(path)
    records = read_unit_manifest(path)
    if not records:
        raise DataError(path, "the unit manifest is empty")
    for record in records:
        try:
            vocab.encode_units(record.units, record.tokenizer)
        except ConfigError as e:
            raise DataError(
                path,
                f"utterance {record.id!r}: {e}. The manifest and the vocabulary (model) must come from the "
                "same tokenizer fit: re-run `unified-lm discretize apply` with that tokenizer",
            ) from None
        except ValueError as e:  # a unit outside the tokenizer's range
            raise DataError(path, f"utterance {record.id!r}: {e}") from None
    return records


class UnitDataset(Dataset):
    """Utterances of a unit manifest, each turned into the sequence of a task drawn from the mixture.

    The task drawn for item ``i`` depends only on (seed, epoch, i); call ``set_epoch`` at
    the start of every epoch.
    """

    def __init__(self, manifest: str | Path, vocab: UnifiedVocab, tasks: TaskConfig, seed: int = 0):
        self.path = Path(manifest)
        self.records = read_checked_manifest(self.path, vocab)
        self.vocab = vocab
        self.mixture = TaskMixture(tasks, vocab)
        self.seed = seed
        self.epoch = 0
        self.lengths = [self._max_length(r, tasks) for r in self.records]

    def _max_length(self, record: UnitRecord, tasks: TaskConfig) -> int:
        # The batch sampler must know lengths before the task is drawn: take the longest
        # sequence any task of the mixture could make (this also checks every record once, up front).
        try:
            return max(len(TASKS.get(name)(record, self.vocab, tasks)) for name in self.mixture.names)
        except (ConfigError, ValueError) as e:
            raise DataError(self.path, str(e)) from None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> TokenSequence:
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        return self.mixture.sample(self.records[index], rng)


class BucketBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches under a token budget, sharded across data-parallel ranks.

    - every batch satisfies ``len(batch) * max(lengths in batch) <= max_tokens`` (the
      padded size, which is what the model computes on);
    - with ``shuffle``, examples of equal length are shuffled before sorting and the batch
      order is shuffled, both with an RNG seeded by (seed, epoch);
    - rank ``r`` of ``R`` takes batches ``r, r+R, ...``; when the batch count is not a
      multiple of R the first batches are repeated, so every rank runs the same number of
      steps (as torch's DistributedSampler does) and no example is dropped.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if not lengths:
            raise ConfigError("cannot batch an empty dataset")
        longest = max(lengths)
        if longest > max_tokens:
            raise ConfigError(
                f"data.max_tokens={max_tokens} is below the longest sequence ({longest} tokens); "
                "raise it or cut speech with tasks.max_speech_tokens"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.skip = 0
        self.num_batches = len(self.epoch_batches(0))  # the same every epoch: lengths fix the packing

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Selects the epoch; ``skip`` batches of this rank are left out (resuming mid-epoch)."""
        self.epoch = epoch
        self.skip = skip

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch``, in order, before sharding."""
        rng = random.Random(f"{self.seed}/{epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        order.sort(key=self.lengths.__getitem__)  # stable: ties keep their shuffled order
        batches: list[list[int]] = []
        batch: list[int] = []
        for i in order:
            # Sorted ascending, so the new example is the batch's longest.
            if batch and (len(batch) + 1) * self.lengths[i] > self.max_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        batches = list(itertools.islice(itertools.cycle(batches), len(self) * self.num_replicas))
        yield from batches[self.rank :: self.num_replicas][self.skip :]

    def __len__(self) -> int:
        """Batches per epoch on each rank (before ``skip``)."""
        return math.ceil(self.num_batches / self.num_replicas)


def make_loader(dataset: UnitDataset, sampler: BucketBatchSampler, num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler``'s batches, collated with right padding."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=partial(collate, pad_id=dataset.vocab.pad_id),
        num_workers=num_workers,
        # A private generator: otherwise every new iterator draws its base seed from the
        # global torch RNG, and a run resumed mid-epoch would shift the dropout masks.
        generator=torch.Generator(),
    )
