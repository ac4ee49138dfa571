"""The Markdown results table of scripts/compare.sh: TSN, TSM, PAN PA, PAN Lite and PAN Full.

Reads each model's evaluation folder (``scores.npz`` of ``test_models.py``)
and training run folder (``log.txt`` of ``main.py``), and writes a table
with, per model:

* top-1 over the 12 classes;
* **pair accuracy**: the predicted class is in the right mirror pair (the
  right kind of motion, whatever its direction), so a frame-level model can
  score high here;
* **direction accuracy**: among the videos whose pair is right, the share
  whose direction is right too. A model that cannot see the order of frames
  is at chance, 50%, on every pair;
* direction accuracy per pair, in a second table;
* training time (wall clock, from the training log).

    python tools/compare_models.py --out runs/compare/results.md \\
        --model "TSN=runs/compare/eval/tsn:runs/compare/log/tsn" ... --model "PAN Full=runs/compare/eval/full"

The mirror pairs are the synthetic dataset's: classes ``2k`` and ``2k + 1``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.files import write_text_atomic  # noqa: E402

logger = logging.getLogger("compare_models")

#: Format of the timestamps that start every line of a main.py log.
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class PairScores:
    """Accuracies (in %) of one model's predictions against mirror-pair labels."""

    top1: float
    pair: float
    direction: float
    #: Direction accuracy of each pair ``k`` (classes ``2k``, ``2k + 1``), NaN when no video of it
    #: was put in the right pair.
    per_pair: list[float]
    num_videos: int


def pair_scores(predicted: np.ndarray, labels: np.ndarray, num_class: int) -> PairScores:
    """Top-1, pair and direction accuracy of ``predicted`` classes (``[N]``) against ``labels`` (``[N]``).

    Example: labels ``[0, 1, 2, 3]``, predictions ``[1, 1, 2, 5]`` -> top-1 50%, pair 75% (the last
    video is put in pair 2, not 1), direction 66.7% (2 of the 3 videos in the right pair).
    """
    if num_class % 2:
        raise ValueError(f"mirror pairs need an even class count, got {num_class}")
    right_pair = predicted // 2 == labels // 2
    right = predicted == labels
    per_pair = []
    for k in range(num_class // 2):
        in_pair = right_pair & (labels // 2 == k)
        per_pair.append(100.0 * right[in_pair].mean() if in_pair.any() else float("nan"))
    direction = 100.0 * right[right_pair].mean() if right_pair.any() else float("nan")
    return PairScores(100.0 * right.mean(), 100.0 * right_pair.mean(), direction, per_pair, len(labels))


def load_predictions(eval_dir: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(predicted classes, labels, class count)`` from a ``test_models.py`` output folder's ``scores.npz``."""
    path = os.path.join(eval_dir, "scores.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no scores (did test_models.py run with --output_dir {eval_dir}?)")
    with np.load(path) as npz:
        scores = npz["scores"]
        return scores.argmax(axis=1), npz["labels"], scores.shape[1]


def training_seconds(log_dir: str) -> float | None:
    """Wall-clock seconds between the first and the last line of a main.py ``log.txt`` (None if unknown).

    A run resumed after an interruption counts the pause too; the table says so in its notes.
    """
    path = os.path.join(log_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    stamps = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                stamps.append(datetime.datetime.strptime(line[:19], LOG_TIME_FORMAT))
            except ValueError:
                continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.1f}"


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def results_markdown(rows: list[tuple[str, PairScores, float | None]], class_names: list[str] | None,
                     notes: list[str]) -> str:
    """The two tables (summary, then direction accuracy per pair) and the notes, as Markdown."""
    lines = [
        "| model | top-1 (%) | pair accuracy (%) | direction accuracy within the pair (%) | training time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s, seconds in rows:
        lines.append(f"| {name} | {_pct(s.top1)} | {_pct(s.pair)} | {_pct(s.direction)} | {_minutes(seconds)} |")
    pairs = len(rows[0][1].per_pair) if rows else 0
    if class_names and len(class_names) >= 2 * pairs:
        headers = [f"{class_names[2 * k]} / {class_names[2 * k + 1]}" for k in range(pairs)]
    else:
        headers = [f"pair {2 * k}/{2 * k + 1}" for k in range(pairs)]
    lines += ["", "Direction accuracy within each mirror pair (%):", "",
              "| model | " + " | ".join(headers) + " |", "|---|" + "---:|" * pairs]
    for name, s, _ in rows:
        lines.append(f"| {name} | " + " | ".join(_pct(v) for v in s.per_pair) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


#: The lines between which ``--readme`` puts the table (both must be in the file, in this order).
README_BEGIN = "<!-- compare-results:begin (written by scripts/compare.sh) -->"
README_END = "<!-- compare-results:end -->"


def replace_marked_block(document: str, block: str, path: str) -> str:
    """``document`` with the text between :data:`README_BEGIN` and :data:`README_END` replaced by ``block``.

    Raises:
        ValueError: a marker is missing, repeated or out of order (naming ``path``).
    """
    begin, end = document.find(README_BEGIN), document.find(README_END)
    if begin < 0 or end < 0 or end < begin or document.count(README_BEGIN) > 1 or document.count(README_END) > 1:
        raise ValueError(f"{path}: needs exactly one line {README_BEGIN!r} followed by one line {README_END!r} "
                         "to put the results table between them")
    head = document[: begin + len(README_BEGIN)]
    return f"{head}\n{block.rstrip()}\n{document[end:]}"


def parse_model(text: str) -> tuple[str, str, str | None]:
    """``NAME=EVAL_DIR[:LOG_DIR]`` -> ``(name, eval_dir, log_dir or None)``."""
    name, sep, dirs = text.partition("=")
    if not sep or not name.strip() or not dirs:
        raise argparse.ArgumentTypeError(f"--model {text!r}: expected NAME=EVAL_DIR[:LOG_DIR]")
    eval_dir, _, log_dir = dirs.partition(":")
    return name.strip(), eval_dir, log_dir or None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write the Markdown table of the TSN/TSM/PAN comparison.", formatter_class=HelpFormatter)
    parser.add_argument("--model", action="append", type=parse_model, required=True,
                        help="NAME=EVAL_DIR[:LOG_DIR], once per row in table order; EVAL_DIR is a "
                             "test_models.py --output_dir, LOG_DIR a main.py run folder (for the training time)")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    parser.add_argument("--categories", default=None,
                        help="class names (category.txt) for the per-pair table's headers (default: pair numbers)")
    parser.add_argument("--note", action="append", default=[], help="a line added under the tables (repeatable)")
    parser.add_argument("--readme", default=None,
                        help=f"also put the tables into this Markdown file, between its lines {README_BEGIN!r} "
                             f"and {README_END!r} (default: only --out)")
    return add_aliases(parser, {"--output": "--out"})


def main(args: argparse.Namespace) -> int:
    rows = []
    try:
        for name, eval_dir, log_dir in args.model:
            predicted, labels, num_class = load_predictions(eval_dir)
            scores = pair_scores(predicted, labels, num_class)
            rows.append((name, scores, training_seconds(log_dir) if log_dir else None))
        class_names = None
        if args.categories:
            with open(args.categories, encoding="utf-8") as f:
                class_names = [line.strip() for line in f if line.strip()]
        text = results_markdown(rows, class_names, args.note)
        readme = None
        if args.readme:  # checked before anything is written
            with open(args.readme, encoding="utf-8") as f:
                readme = replace_marked_block(f.read(), text, args.readme)
    except (OSError, KeyError, ValueError) as e:
        logger.error("%s", e)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_text_atomic(args.out, text)
    logger.info("wrote %s", args.out)
    if readme is not None:
        write_text_atomic(args.readme, readme)
        logger.info("wrote the tables into %s", args.readme)
    print(text, end="")
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    from ops.runtime import setup_logging  # after the arguments: --help need not import torch

    setup_logging(True)
    sys.exit(main(parsed))
