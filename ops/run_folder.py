"""The run's output folders and the plain-text records written into them.

``<root_log>/<store_name>/`` (the run folder) holds

* ``args.json``        -- the command line as plain data (earlier invocations
  of a resumed run are kept as ``args.1.json``, ``args.2.json``...),
* ``log.txt``          -- the text log (written by :func:`ops.runtime.setup_logging`),
* ``steps.tsv``        -- one line per optimizer step: epoch, step, loss, lr
  (losses written exactly, so runs can be compared bit for bit; a resumed run
  appends the steps it redoes again, the last line of a step wins),
* ``metrics.jsonl``    -- one JSON line per validation,
* ``bad_samples.tsv``  -- every training sample that failed to load and its replacement,
* tensorboardX event files (``train/*``, ``val/*`` scalars; at each validation the
  ``val/confusion_matrix`` picture and ``val/pa_maps/<n>`` of a few clips, see
  :func:`ops.pictures.validation_pa_picture` and :mod:`ops.report`).

``<root_model>/<store_name>/`` holds the checkpoints (:mod:`ops.checkpoint_files`).
Only the main process writes; both folders are checked for writability before
any data is read, so a typo in ``--root_model`` fails in seconds, not after
the first epoch. Both are then owned by the run until it ends
(:func:`lock_run_folders`, ``run.lock``; see :mod:`ops.run_lock`): a second run
started on the same folders is refused before it writes anything, its log line
included.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping

from ops.files import OutputFolderError, write_text_atomic
from ops.run_lock import RunLock, RunLockError

logger = logging.getLogger(__name__)

BAD_SAMPLES_NAME = "bad_samples.tsv"
STEPS_NAME = "steps.tsv"
METRICS_NAME = "metrics.jsonl"
ARGS_NAME = "args.json"


class RunFolderInUse(OutputFolderError):
    """Another run holds the run folder; the message names it (host, pid, start, command)."""


def lock_run_folders(*folders: str) -> RunLock:
    """Take ``run.lock`` in every folder for this run (release with :meth:`RunLock.release`).

    Raises :class:`RunFolderInUse` naming the holder when another live run (or one on
    another host, which cannot be checked) holds one of them; a dead holder's lock is
    replaced with a warning.
    """
    try:
        return RunLock.acquire(folders)
    except RunLockError as err:
        raise RunFolderInUse(str(err)) from None


def warn_if_low_space(folder: str, needed_bytes: int) -> None:
    """Log a warning when ``folder``'s file system has less than ``needed_bytes`` free."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        logger.warning(
            "only %.1f MiB free in %s; saving checkpoints needs about %.1f MiB (the run stops with a "
            "clear error if a save fails, keeping the previous checkpoint)",
            free / 2**20, folder, needed_bytes / 2**20,
        )



class RunFolder:
    """Writers of the run folder's records. Methods are no-ops on non-main processes.

    Args:
        path: the run folder (``<root_log>/<store_name>``); must exist.
        is_main: True on the process that writes (rank 0).
        tensorboard: create a tensorboardX writer.
    """

    def __init__(self, path: str, is_main: bool = True, tensorboard: bool = True) -> None:
        self.path = path
        self.is_main = is_main
        self._writer = None
        if is_main and tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save_args(self, args: Mapping) -> None:
        """Write ``args.json``; an earlier, different one is kept as ``args.<n>.json``."""
        if not self.is_main:
            return
        text = json.dumps(dict(args), indent=2, sort_keys=True) + "\n"
        path = self.file(ARGS_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
            if old != text:
                n = 1
                while os.path.exists(self.file(f"args.{n}.json")):
                    n += 1
                os.replace(path, self.file(f"args.{n}.json"))
        write_text_atomic(path, text)

    def _append(self, name: str, line: str, header: str | None = None) -> None:
        path = self.file(name)
        new = not os.path.exists(path)
        with open(path, "a", encoding="utf-8") as f:
            if new and header:
                f.write(header + "\n")
            f.write(line + "\n")

    def log_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        """One optimizer step in ``steps.tsv`` (``repr`` keeps every bit of the floats)."""
        if self.is_main:
            self._append(STEPS_NAME, f"{epoch}\t{step}\t{loss!r}\t{lr!r}", "epoch\tstep\tloss\tlr")

    def log_metrics(self, record: Mapping) -> None:
        if self.is_main:
            self._append(METRICS_NAME, json.dumps(dict(record), sort_keys=True))

    def log_bad_sample(self, epoch: int, step: int, index: int, path: str, reason: str, replacement: int) -> None:
        """One failed sample in ``bad_samples.tsv``; tabs and newlines in the reason become spaces."""
        if not self.is_main:
            return
        clean = " ".join(str(reason).split())
        self._append(
            BAD_SAMPLES_NAME,
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{epoch}\t{step}\t{index}\t{path}\t{clean}\t{replacement}",
            "time\tepoch\tstep\tindex\tpath\treason\treplacement_index",
        )

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    @property
    def has_tensorboard(self) -> bool:
        """True on the process that writes TensorBoard events (pictures are drawn only there)."""
        return self._writer is not None

    def image(self, tag: str, image, step: int) -> None:
        """A picture into TensorBoard: ``uint8 [H, W, 3]`` (numpy) or a PIL image."""
        if self._writer is not None:
            import numpy as np

            self._writer.add_image(tag, np.asarray(image, dtype=np.uint8), step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
