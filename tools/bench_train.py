"""Training throughput (clips/s) of main.py's model with and without the fast flags, in one process.

The model, optimizer and parameter groups are built from a ``main.py``
command line, exactly as ``main.py`` builds them; the default is the
quickstart's configuration (``scripts/quickstart.sh``: PAN Lite, resnet18 from
scratch, 4 segments x 4 frames, crop 24, batch 32). Each variant trains its
own copy of the same initial model on the same fixed batch; every repeat runs
each variant for ``--steps`` optimizer steps in turn, so a change of machine
load hits them alike, and the report gives the median clips/s of each and its
ratio to the first (the plain path). Data loading is left out: this measures
the step (forward, loss, backward, clipping, SGD), which is what the flags
change.

    python tools/bench_train.py                                    # the quickstart's configuration
    python tools/bench_train.py --variant plain --variant amp,channels_last
    python tools/bench_train.py --main-args "synthetic Lite --arch resnet50 --crop_size 224 -b 4 --pretrain none"

A variant is ``plain`` or a comma list of main.py's fast-path flags without
their dashes: ``amp``, ``channels_last``, ``compile``, ``trim_small_maps`` (compile time is
excluded: the warm-up steps include it).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shlex
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from main import build_model  # noqa: E402
from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset_config import get_dataset_config  # noqa: E402
from ops.engine import StepSettings, backward, forward_loss, optimizer_step  # noqa: E402
from ops.lr_schedule import build_param_groups  # noqa: E402
from ops.runtime import resolve_device, setup_logging  # noqa: E402
from ops.train_args import get_args_parser as main_args_parser  # noqa: E402
from ops.small_maps import trim_small_maps  # noqa: E402
from ops.machine import machine_description  # noqa: E402

#: The quickstart's training command line (scripts/quickstart.sh, full mode), less the run folders.
QUICKSTART_ARGS = ("synthetic Lite --arch resnet18 --num_segments 4 --crop_size 24 --scale_size 28 -b 32 "
                   "--lr 0.04 --dropout 0.2 --zero_init_residual --no-fc_lr5 --shift --shift_div 8 "
                   "--shift_place blockres --VAP --pretrain none --seed 0")
DEFAULT_VARIANTS = ("plain", "channels_last", "amp", "amp,channels_last", "compile")
FAST_FLAGS = ("amp", "channels_last", "compile", "trim_small_maps")


def parse_variant(text: str) -> tuple[str, ...]:
    """``"amp,channels_last"`` -> ``("--amp", "--channels_last")``, ``"plain"`` -> ``()``.

    Other words are an error naming them.
    """
    words = [w.strip() for w in text.split(",") if w.strip() and w.strip() != "plain"]
    unknown = [w for w in words if w not in FAST_FLAGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown word(s) {unknown} in variant {text!r}; use plain or a comma "
                                         f"list of {', '.join(FAST_FLAGS)}")
    return tuple(f"--{w}" for w in words)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--main-args", default=QUICKSTART_ARGS,
                        help="main.py's command line for the model and optimizer (default: the quickstart's, "
                             f"{QUICKSTART_ARGS!r})")
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        help="flags to time: plain, or a comma list of amp, channels_last, compile; repeatable, "
                             "the first is the baseline (default: " + " ".join(DEFAULT_VARIANTS) + ")")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per variant and repeat (default: 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default: 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: PyTorch's choice, usually the core count)")
    return add_aliases(parser)


class Trainer:
    """One variant: its own copy of the model, its SGD with main.py's parameter groups, one step at a time."""

    def __init__(self, model: nn.Module, main_args: argparse.Namespace, flags: tuple[str, ...],
                 device: torch.device) -> None:
        self.settings = StepSettings(amp="--amp" in flags, channels_last="--channels_last" in flags,
                                     clip_gradient=main_args.clip_gradient)
        model = copy.deepcopy(model).to(device).train()
        if self.settings.channels_last:
            model.to(memory_format=torch.channels_last)
        if "--trim_small_maps" in flags:
            trim_small_maps(model)
        self.optimizer = torch.optim.SGD(
            build_param_groups(model.get_optim_policies(), main_args.lr, main_args.weight_decay),
            lr=main_args.lr, momentum=main_args.momentum, weight_decay=main_args.weight_decay)
        self.model = torch.compile(model, dynamic=False) if "--compile" in flags else model
        self.device = device
        self.criterion = nn.CrossEntropyLoss()

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """One training step with ops.engine's own pieces (on ``device``); returns the loss."""
        _, loss = forward_loss(self.model, self.criterion, x, labels, self.device, self.settings)
        backward(loss, None, 1)
        optimizer_step(self.model, self.optimizer, None, self.settings.clip_gradient)
        return float(loss.detach())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(args: argparse.Namespace) -> dict[str, float]:
    setup_logging(True)
    quiet = logging.getLogger("ops")  # the timed steps' per-step logging, not the benchmark's figures
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return _run(args)
    finally:
        quiet.setLevel(level)  # an in-process caller (the tests) keeps its logging


def _run(args: argparse.Namespace) -> dict[str, float]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    main_args = main_args_parser().parse_args(shlex.split(args.main_args))
    num_class = main_args.num_class or get_dataset_config(main_args.dataset, "/unused").num_class
    torch.manual_seed(main_args.seed)
    model = build_model(main_args, num_class)
    variants = args.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    names = [" ".join(v) or "plain" for v in variants]
    trainers = {name: Trainer(model, main_args, flags, device) for name, flags in zip(names, variants)}

    generator = torch.Generator().manual_seed(main_args.seed)
    channels = main_args.num_segments * model.new_length * 3
    size = main_args.crop_size
    x = torch.randn(main_args.batch_size, channels, size, size, generator=generator).to(device)
    labels = torch.randint(num_class, (main_args.batch_size,), generator=generator).to(device)

    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step(x, labels)
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.repeats):
        for name, trainer in trainers.items():
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(x, labels)
            _synchronize(device)
            rates[name].append(args.steps * main_args.batch_size / (time.perf_counter() - start))

    print(f"main.py {args.main_args}")
    print(f"PAN {model.modality} {main_args.arch}, {main_args.num_segments} segments x {model.new_length} frames, "
          f"{size}x{size}, batch {main_args.batch_size}; {args.repeats} repeats of {args.steps} steps")
    print(f"machine: {machine_description(device)}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    baseline = statistics.median(rates[names[0]])
    print(f"\n{'flags':<32} {'clips/s':>9} {'min':>8} {'speed-up':>9}")
    medians = {}
    for name, samples in rates.items():
        medians[name] = statistics.median(samples)
        print(f"{name:<32} {medians[name]:9.1f} {min(samples):8.1f} {medians[name] / baseline:8.2f}x")
    return medians


if __name__ == "__main__":
    main(get_args_parser().parse_args())
