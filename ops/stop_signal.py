"""A graceful stop on SIGTERM and SIGINT, as cluster schedulers and Ctrl-C ask for one.

Schedulers send SIGTERM some time before they kill a job (pre-emption, time
limit). On the first SIGTERM or SIGINT the trainer finishes the step it is in,
saves a resumable mid-epoch checkpoint, logs it and exits with status
``128 + signal number`` (143 for SIGTERM, 130 for SIGINT, the shell's
convention). The first signal puts the default handlers back, so a second one
stops the process at once. Data-loading workers ignore SIGINT: a terminal's
Ctrl-C reaches the whole process group, and a worker that died of it would fail
the step the trainer is finishing. They keep the default SIGTERM, which is how
their parent shuts them down (workers that ignored it kept a finished run from
exiting); send SIGTERM to the trainer itself (``torchrun`` does; so do
``kill <pid>`` and schedulers that signal the job's main process).
"""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving; ``exit_status`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class StopRequest:
    """Records the first SIGTERM/SIGINT while installed; ``signum`` is 0 until one arrives.

    Use as a context manager around the training loop (main thread only; elsewhere,
    e.g. in a thread of a test, nothing is installed and ``signum`` stays 0).
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        for sig in STOP_SIGNALS:  # a second signal stops the process at once
            signal.signal(sig, signal.SIG_DFL)
        logger.warning("received %s: finishing the current step, then saving a resumable checkpoint "
                       "(send it again to stop at once)", signal.Signals(signum).name)


def ignore_interrupt() -> None:
    """For data-loading workers: a terminal's Ctrl-C is the main process's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
