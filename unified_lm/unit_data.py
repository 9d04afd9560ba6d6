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
import os
import random
import sys
from array import array
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence, overload

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .corpus.manifest import UnitRecord, iter_unit_manifest
from .errors import ConfigError, DataError
from .tasks import TASKS, TaskConfig, TaskMixture, TokenSequence, collate
from .vocab import UnifiedVocab


class PackedUnits:
    """A unit manifest held compactly: every record's units in one array (2 bytes a unit
    while ids fit in 16 bits) with offsets, strings interned where they repeat. A Python list
    of ints costs ~36 bytes a unit: a million LibriSpeech-length records took ~13 GiB per
    rank as lists, and take well under one packed. ``packed[i]`` rebuilds record ``i``."""

    def __init__(self, records: Iterator[UnitRecord]):
        units, durations, ends, duration_ends = _Ints(), _Ints(), array("q", [0]), array("q", [0])
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.speakers: list[str] = []
        self.subsets: list[str | None] = []
        self.tokenizers: list[dict[str, str]] = []
        shared: dict[tuple, dict[str, str]] = {}  # one dict per tokenizer identity, not per record
        for r in records:
            if r.durations is not None and len(r.durations) != len(r.units):
                raise ValueError(f"utterance {r.id!r}: {len(r.durations)} durations for {len(r.units)} units")
            units.extend(r.units)
            durations.extend(r.durations or [])
            ends.append(len(units))
            duration_ends.append(len(durations))
            self.ids.append(r.id)
            self.texts.append(r.text)
            self.speakers.append(sys.intern(r.speaker))
            self.subsets.append(None if r.subset is None else sys.intern(r.subset))
            self.tokenizers.append(shared.setdefault(tuple(sorted(r.tokenizer.items())), r.tokenizer))
        self.offsets, self.duration_offsets = np.frombuffer(ends, np.int64), np.frombuffer(duration_ends, np.int64)
        self.units, self.durations = units.array(), durations.array()

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> UnitRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[UnitRecord]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a, b = self.offsets[i], self.offsets[i + 1]
        da, db = self.duration_offsets[i], self.duration_offsets[i + 1]
        return UnitRecord(
            self.ids[i],
            self.texts[i],
            self.speakers[i],
            self.units[a:b].tolist(),
            self.tokenizers[i],
            self.durations[da:db].tolist() if db > da else None,
            self.subsets[i],
        )

    def __iter__(self) -> Iterator[UnitRecord]:
        return (self[i] for i in range(len(self)))


class _Ints:
    """A growing int array, 16-bit until a value needs 32 (no per-record objects kept)."""

    def __init__(self):
        self.buf = array("h")

    def extend(self, values: Sequence[int]) -> None:
        try:
            self.buf.extend(values)
        except OverflowError:
            if self.buf.typecode == "q":
                raise
            self.buf = array("i" if self.buf.typecode == "h" else "q", self.buf)
            self.extend(values)

    def __len__(self) -> int:
        return len(self.buf)

    def array(self) -> np.ndarray:
        return np.frombuffer(self.buf, {"h": np.int16, "i": np.int32, "q": np.int64}[self.buf.typecode])


def read_checked_manifest(path: str | Path, vocab: UnifiedVocab) -> PackedUnits:
    """Reads a unit manifest into ``PackedUnits``, checking as it goes that every record's
    units come from a tokenizer of ``vocab`` and lie in its range."""
    path = Path(path)
    records = PackedUnits(_checked(path, iter_unit_manifest(path), vocab))
    if not len(records):
        raise DataError(path, "the unit manifest is empty")
    return records


def _checked(path: Path, records: Iterator[UnitRecord], vocab: UnifiedVocab) -> Iterator[UnitRecord]:
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
        yield record


class UnitDataset(Dataset):
    """Utterances of a unit manifest, each turned into the sequence of a task drawn from the
    mixture, then ``texts`` (sentences without speech), each a ``text_lm`` sequence.

    The task drawn for item ``i`` depends only on (seed, epoch, i); call ``set_epoch`` at
    the start of every epoch.
    """

    def __init__(
        self, manifest: str | Path, vocab: UnifiedVocab, tasks: TaskConfig, seed: int = 0, texts: Sequence[str] = ()
    ):
        self.path = Path(manifest)
        self.records = read_checked_manifest(self.path, vocab)
        self.texts = list(texts)
        self.vocab = vocab
        self.tasks = tasks
        self.mixture = TaskMixture(tasks, vocab)
        self.seed = seed
        self.epoch = 0
        speech = (self._max_length(r, tasks) for r in self.records)
        text = (len(self._text_item(i)) for i in range(len(self.texts)))
        self.lengths = np.fromiter(itertools.chain(speech, text), np.int32, len(self))

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
        return len(self.records) + len(self.texts)

    def __getitem__(self, index: int) -> TokenSequence:
        if index >= len(self.records):
            return self._text_item(index - len(self.records))
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        return self.mixture.sample(self.records[index], rng)

    def _text_item(self, i: int) -> TokenSequence:
        # text_lm reads only the record's text.
        record = UnitRecord(id=f"text-{i}", text=self.texts[i], speaker="", units=[], tokenizer={})
        return TASKS.get("text_lm")(record, self.vocab, self.tasks)


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
        if len(lengths) == 0:
            raise ConfigError("cannot batch an empty dataset")
        longest = int(max(lengths))
        if longest > max_tokens:
            raise ConfigError(
                f"data.max_tokens={max_tokens} is below the longest sequence ({longest} tokens); "
                "raise it or cut speech with tasks.max_speech_tokens"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.lengths = np.asarray(lengths, np.int64)
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
        shuffled = np.asarray(order, np.int64)
        # Stable: ties keep their shuffled order.
        order = shuffled[np.argsort(self.lengths[shuffled], kind="stable")].tolist()
        lengths = self.lengths.tolist()
        batches: list[list[int]] = []
        batch: list[int] = []
        for i in order:
            # Sorted ascending, so the new example is the batch's longest.
            if batch and (len(batch) + 1) * lengths[i] > self.max_tokens:
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


def default_workers() -> int:
    """Loader workers when the config leaves them open: a few beside a GPU, none on CPUs only."""
    return min(4, os.cpu_count() or 1) if torch.cuda.is_available() else 0


def make_loader(dataset: UnitDataset, sampler: BucketBatchSampler, num_workers: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler``'s batches, collated with right padding;
    the same batches whatever ``num_workers`` (None: ``default_workers``)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=partial(collate, pad_id=dataset.vocab.pad_id),
        num_workers=default_workers() if num_workers is None else num_workers,
        # A private generator: otherwise every new iterator draws its base seed from the
        # global torch RNG, and a run resumed mid-epoch would shift the dropout masks.
        generator=torch.Generator(),
    )
