"""Training curves of one or several runs, overlaid, in one PNG: loss, top-1, top-5 and learning rate.

    python tools/plot_run.py runs/quickstart/log/pan_lite --out curves.png
    python tools/plot_run.py runs/compare/log/{tsn,tsm,pa,lite} --out runs/compare/curves.png

Each RUN_FOLDER is a ``main.py`` run folder (``<root_log>/<store_name>``). Its
``metrics.jsonl`` gives, per validation, the validation loss, top-1 and top-5
and the epoch's training loss, top-1 and top-5 and learning rate (lines of
older runs without the training figures draw the validation only); its
``steps.tsv``, when present, gives the training loss and the learning rate of
every optimizer step, drawn over fractional epochs (the loss as a running mean
over a tenth of an epoch). The x axis counts finished epochs: the validation
after epoch ``e`` (0-based) is drawn at ``e + 1``. A run resumed after a crash
wrote some lines twice: the last one of an epoch or step wins.

Colours tell the runs apart; solid lines are validation, dashed lines training;
the loss is drawn on a log scale (runs from scratch can spike early).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.files import atomic_write  # noqa: E402

logger = logging.getLogger("plot_run")


class RunDataError(ValueError):
    """A run folder without the records to draw; the message names it."""


@dataclass
class RunCurves:
    """What one run folder holds, by epoch (``epochs`` finished, 1-based) and by step (fractional epochs)."""

    name: str
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val: dict = field(default_factory=dict)      # loss, top1, top5 -> values per epoch
    train: dict = field(default_factory=dict)    # loss, top1, top5 -> values per epoch (NaN where absent)
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    step_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    step_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    step_lr: np.ndarray = field(default_factory=lambda: np.zeros(0))


def read_run(folder: str, name: str | None = None) -> RunCurves:
    """Read ``metrics.jsonl`` (required) and ``steps.tsv`` (optional) of a run folder."""
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        raise RunDataError(f"{folder} has no metrics.jsonl: is it a main.py run folder (<root_log>/<store_name>) "
                           f"that validated at least once?")
    by_epoch: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                by_epoch[int(record["epoch"])] = record
            except (ValueError, KeyError, TypeError):
                raise RunDataError(f"{path}:{number}: not a metrics line with an epoch") from None
    if not by_epoch:
        raise RunDataError(f"{path} is empty: the run has not validated yet")
    epochs = sorted(by_epoch)
    records = [by_epoch[e] for e in epochs]

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) is not None else np.nan for r in records])

    run = RunCurves(name or os.path.basename(os.path.normpath(folder)), np.array(epochs, float) + 1)
    run.val = {k: column(k) for k in ("loss", "top1", "top5")}
    run.train = {k: column(f"train_{k}") for k in ("loss", "top1", "top5")}
    run.lr = column("lr")
    steps_path = os.path.join(folder, "steps.tsv")
    if os.path.isfile(steps_path):
        steps: dict[tuple[int, int], tuple[float, float]] = {}
        with open(steps_path, encoding="utf-8") as f:
            for line in f.read().splitlines()[1:]:
                parts = line.split("\t")
                if len(parts) == 4:
                    steps[(int(parts[0]), int(parts[1]))] = (float(parts[2]), float(parts[3]))
        if steps:
            keys = sorted(steps)
            per_epoch: dict[int, int] = {}
            for epoch, step in keys:
                per_epoch[epoch] = max(per_epoch.get(epoch, 0), step + 1)
            run.step_x = np.array([e + (s + 1) / per_epoch[e] for e, s in keys])
            run.step_loss = np.array([steps[k][0] for k in keys])
            run.step_lr = np.array([steps[k][1] for k in keys])
    return run


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def draw(runs: list[RunCurves], title: str | None = None):
    """A matplotlib Figure (no pyplot) with four panels: loss, top-1, top-5, learning rate."""
    from ops.pictures import require_matplotlib  # here, not at the top: --help need not import torch

    require_matplotlib("tools/plot_run.py")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(12, 8.5), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    panels = ((axes[0, 0], "loss", "loss (cross-entropy)"), (axes[0, 1], "top1", "top-1 accuracy (%)"),
              (axes[1, 0], "top5", "top-5 accuracy (%)"))
    for run, colour in zip(runs, colours):
        for ax, key, _ in panels:
            if key == "loss" and len(run.step_x):
                per_epoch = max(1, int(round(len(run.step_x) / max(run.step_x.max(), 1e-9))))
                ax.plot(run.step_x, running_mean(run.step_loss, max(1, per_epoch // 10)), color=colour,
                        linestyle="--", linewidth=1.0, alpha=0.8)
            elif np.isfinite(run.train[key]).any():
                ax.plot(run.epochs, run.train[key], color=colour, linestyle="--", linewidth=1.2)
            ax.plot(run.epochs, run.val[key], color=colour, linestyle="-", marker="o", markersize=3, linewidth=1.6)
        if len(run.step_x):
            axes[1, 1].plot(run.step_x, run.step_lr, color=colour, linewidth=1.4)
        elif np.isfinite(run.lr).any():
            axes[1, 1].plot(run.epochs, run.lr, color=colour, marker="o", markersize=3, linewidth=1.4)
    for ax, _, label in panels:
        ax.set_ylabel(label)
    # Runs from scratch can spike by orders of magnitude in the first epochs: a log scale keeps the rest legible.
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel("loss (cross-entropy, log scale)")
    axes[1, 1].set_ylabel("learning rate")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
    for ax in (axes[0, 1], axes[1, 0]):
        ax.set_ylim(0, 101)
    handles = [Line2D([], [], color=c, linewidth=2, label=run.name) for run, c in zip(runs, colours)]
    handles += [Line2D([], [], color="grey", linestyle="-", marker="o", markersize=3, label="validation"),
                Line2D([], [], color="grey", linestyle="--", label="training")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False)
    fig.suptitle(title or "training curves: " + ", ".join(run.name for run in runs))
    return fig


def plot_runs(folders: list[str], out: str, names: list[str] | None = None, title: str | None = None) -> list[RunCurves]:
    """Read the run folders and write the PNG to ``out`` (atomically); returns what was read."""
    if names and len(names) != len(folders):
        raise RunDataError(f"{len(names)} --name values for {len(folders)} run folders")
    runs = [read_run(folder, name) for folder, name in zip(folders, names or [None] * len(folders))]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(runs, title)
    FigureCanvasAgg(fig)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write(os.path.abspath(out), lambda f: fig.savefig(f, format="png"))
    return runs


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Draw training curves (loss, top-1, top-5, learning rate) of "
                                                 "main.py run folders into one PNG, runs overlaid.", formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_FOLDER", help="main.py run folders (<root_log>/<store_name>)")
    parser.add_argument("--out", required=True, help="PNG file to write (its folder is created)")
    parser.add_argument("--name", action="append", default=None,
                        help="legend name of each run, in order (repeat; default: the folder names)")
    parser.add_argument("--title", default=None, help="title of the picture (default: the runs' names)")
    return add_aliases(parser, {"--output": "--out"})


def main(args: argparse.Namespace) -> int:
    try:
        runs = plot_runs(args.runs, args.out, args.name, args.title)
    except (RunDataError, ImportError, OSError) as err:
        logger.error("%s", err)
        return 2
    logger.info("wrote %s (%d run(s), %s epochs)", args.out, len(runs),
                "/".join(str(int(r.epochs.max())) for r in runs))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
