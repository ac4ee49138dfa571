"""The training-time bad-data policy: replace a sample that fails to load, count, and give up in time.

A training sample that raises :class:`ops.dataset.SampleLoadError` (missing or
undecodable frame, truncated video), or that yields fewer frames than asked,
is replaced by *another sample* of the list -- never by other frames of the
same clip -- drawn with a generator seeded by ``(seed, epoch, index, attempt)``,
so the replacement is the same on every run and after a resume. Each failure
travels with the batch to the main process (:func:`collate_with_reports`),
which logs it to ``bad_samples.tsv`` and feeds :class:`BadSampleMonitor`: the
run stops when more than ``--max-bad-fraction`` of the loads seen failed, or
when ``--max-bad-in-row`` loads in a row failed (the wrapper's ``max_attempts``).

Evaluation never substitutes (see ``test_models.py --skip-bad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ops.dataset import SampleLoadError
from ops.errors import PanError


def _worker_message(cls: type, message: str) -> str:
    """The original message of an exception that a DataLoader worker raised.

    The DataLoader re-raises a worker's exception in the main process as
    ``type(f"Caught X in DataLoader worker ...\nOriginal Traceback ...\nX: message")``;
    this keeps the part after the last ``X: ``.
    """
    marker = f"{cls.__name__}: "
    if message.startswith("Caught ") and marker in message:
        return message.rsplit(marker, 1)[1].rstrip()
    return message


class TooManyBadSamples(PanError, RuntimeError):
    """The bad-data thresholds were crossed; the message says which and how to change them."""

    def __init__(self, message: str):
        super().__init__(_worker_message(TooManyBadSamples, message))


class StrictSampleError(SampleLoadError):
    """A :class:`SampleLoadError` that keeps its message when raised in a DataLoader worker.

    (``SampleLoadError(path, reason)`` cannot be rebuilt from one message, so
    the DataLoader would turn it into a plain ``RuntimeError``.)
    """

    def __init__(self, path: str, reason: str | None = None):
        if reason is None:  # rebuilt by the DataLoader from the worker's message
            path, _, reason = _worker_message(StrictSampleError, path).partition(": ")
        super().__init__(path, reason)


class StrictDataset(Dataset):
    """Wraps an evaluation dataset: a sample that fails to load stops the run naming its file
    (no substitution), also when loaded in a worker process."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except SampleLoadError as err:
            raise StrictSampleError(err.path, err.reason) from None


@dataclass(frozen=True)
class BadSampleReport:
    """One failed load: the sample's index and file, why, and the index tried instead."""

    index: int
    path: str
    reason: str
    replacement: int


class SubstitutingDataset(Dataset):
    """Wraps a training dataset so that items that fail to load are replaced.

    ``__getitem__(i)`` returns ``(x, label, reports)``: ``x`` and ``label`` of
    item ``i`` or of its replacement, and the list of :class:`BadSampleReport`
    for the loads that failed on the way (empty for a good item).

    Args:
        dataset: a map-style dataset returning ``(x [C, H, W], label)`` and
            raising ``SampleLoadError`` for bad samples; ``set_epoch`` is forwarded.
        seed: run seed for the replacement draws.
        max_attempts: failed loads for one item before giving up (raises
            :class:`TooManyBadSamples`); the trainer uses ``--max-bad-in-row``.
        expected_channels: ``C`` of a complete sample (segments x frames x 3);
            a sample with fewer channels counts as bad.
    """

    def __init__(self, dataset: Dataset, seed: int, max_attempts: int = 10, expected_channels: int | None = None):
        self.dataset = dataset
        self.seed = int(seed)
        self.max_attempts = int(max_attempts)
        self.expected_channels = expected_channels
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def replacement(self, index: int, attempt: int) -> int:
        """The item tried after ``attempt`` failed loads for ``index``: any other item, uniformly."""
        n = len(self.dataset)
        if n < 2:
            return index
        rng = np.random.default_rng([self.seed, self.epoch, int(index), int(attempt), 0xBAD])
        pick = int(rng.integers(n - 1))
        return pick + 1 if pick >= index else pick

    def _path_of(self, index: int) -> str:
        records = getattr(self.dataset, "records", None)
        if records is not None:
            return str(getattr(records[index], "path", index))
        return str(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, list[BadSampleReport]]:
        reports: list[BadSampleReport] = []
        current = index
        for attempt in range(self.max_attempts):
            try:
                x, label = self.dataset[current]
                if self.expected_channels is not None and x.shape[0] != self.expected_channels:
                    raise SampleLoadError(
                        self._path_of(current),
                        f"yields {x.shape[0] // 3} frames, {self.expected_channels // 3} were asked for",
                    )
                return x, label, reports
            except SampleLoadError as err:
                nxt = self.replacement(index, attempt)
                reports.append(BadSampleReport(current, err.path, err.reason, nxt))
                current = nxt
        raise TooManyBadSamples(
            f"{self.max_attempts} loads in a row failed for training item {index} and its replacements; "
            "last failures:\n" + "\n".join(f"  {r.path}: {r.reason}" for r in reports[-3:])
            + "\n(raise --max-bad-in-row to tolerate more)"
        )


def collate_with_reports(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[BadSampleReport]]:
    """``[(x, label, reports), ...]`` -> ``(x [B, C, H, W], labels [B], all reports in item order)``."""
    x, labels = default_collate([(item[0], item[1]) for item in batch])
    reports = [r for item in batch for r in item[2]]
    return x, labels, reports


class BadSampleMonitor:
    """Counts sample loads and failures across the run; stops it when too many fail.

    Failures *in a row* are caught where they happen (:class:`SubstitutingDataset`
    gives up after ``max_attempts`` consecutive failed loads, and every item ends
    with a good load); this monitor judges the share of failed loads.

    Args:
        max_fraction: stop when ``bad > max_fraction * seen``, judged once at
            least ``1 / max_fraction`` loads have been seen (so one bad file in
            the first few batches does not end a run); 0 stops at the first bad load.
    """

    def __init__(self, max_fraction: float = 0.001) -> None:
        self.max_fraction = float(max_fraction)
        self.seen = 0
        self.bad = 0

    @property
    def min_seen(self) -> int:
        return math.ceil(1.0 / self.max_fraction) if self.max_fraction > 0 else 0

    def update(self, loads: int, bad: int) -> None:
        """Add ``loads`` sample loads, ``bad`` of which failed (a batch of B items with
        k failures is ``B + k`` loads)."""
        self.seen += int(loads)
        self.bad += int(bad)

    def check(self) -> None:
        """Raise :class:`TooManyBadSamples` when more than the allowed share failed."""
        if self.bad and self.seen >= self.min_seen and self.bad > self.max_fraction * self.seen:
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} training sample loads failed ({100.0 * self.bad / self.seen:.3f}% > "
                f"--max-bad-fraction {self.max_fraction}); see bad_samples.tsv in the run folder. Fix the data "
                "or raise --max-bad-fraction."
            )

    def state_dict(self) -> dict:
        return {"seen": self.seen, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.bad = int(state["seen"]), int(state["bad"])
