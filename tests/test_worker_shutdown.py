"""A process that kept a failed run's DataLoader alive still exits: its workers obey SIGTERM.

Loader workers ignore SIGINT (the trainer handles Ctrl-C), but not SIGTERM, which is how
multiprocessing shuts down worker processes still alive at exit. A test runner keeps the exception
(and with it the loader) of a run that failed mid-epoch until it exits; when the workers ignored
SIGTERM, that exit waited forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.train_support import REPO, make_tiny_dataset, train_argv

KEEP_THE_FAILURE = textwrap.dedent("""
    import sys
    import main
    from ops.train_args import get_args_parser
    try:
        main.main(get_args_parser().parse_args(sys.argv[1:]))
    except Exception as err:  # kept, with its frames and the loader they hold, until the exit
        kept = err
        print("failed as expected:", type(err).__name__)
""")


def test_a_process_holding_a_failed_runs_loader_exits(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=8)
    for jpeg in (data / "frames").glob("train_*/*.jpg"):
        jpeg.write_bytes(b"broken")  # every training sample fails: the run aborts mid-epoch
    argv = train_argv(data, tmp_path, "-j", "2", "--check-data", "off", "--max-bad-in-row", "2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # The timeout guards against the hang this test is about; the run itself takes seconds.
    result = subprocess.run([sys.executable, "-c", KEEP_THE_FAILURE, *argv], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "failed as expected: TooManyBadSamples" in result.stdout, result.stderr[-2000:]
