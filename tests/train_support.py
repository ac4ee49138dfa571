"""Shared pieces of the training tests (no tests here): a tiny dataset and the command lines.

The dataset: ``n`` videos of a few 40x32 JPEG frames with a per-video texture,
in TSN layout (``frames/vid_000/img_00001.jpg``, ``train_list.txt``,
``val_list.txt``), labels cycling over ``num_class``. Models are resnet18 at
32x32 with 2 segments and random init, so a training step takes milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def make_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 5, frames: int = 6, num_class: int = 3,
                      size: tuple[int, int] = (40, 32)) -> Path:
    """Write the frames and the two list files under ``root``; returns ``root``."""
    w, h = size
    rows = {"train": [], "val": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            vid = f"frames/{split}_{i:03d}"
            folder = root / vid
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([7, len(split), i])
            base = rng.integers(0, 255, (h, w, 3))
            for f in range(1, frames + 1):
                arr = (np.roll(base, f * (i % 3 + 1), axis=1) + f * 5) % 256
                Image.fromarray(arr.astype(np.uint8)).save(folder / f"img_{f:05d}.jpg", quality=90)
            rows[split].append(f"{vid} {frames} {i % num_class}\n")
    (root / "train_list.txt").write_text("".join(rows["train"]))
    (root / "val_list.txt").write_text("".join(rows["val"]))
    return root


def train_argv(data: Path, out: Path, *extra: str, modality: str = "RGB", num_class: int = 3) -> list[str]:
    """A complete ``main.py`` command line (after the program name) for the tiny dataset."""
    return [
        "tiny", modality, "--root_path", str(data), "--train_list", str(data / "train_list.txt"),
        "--val_list", str(data / "val_list.txt"), "--num_class", str(num_class),
        "--arch", "mobilenet_v2", "--num_segments", "2", "--pretrain", "none", "--crop_size", "32",
        "-b", "2", "-j", "0", "--epochs", "2", "--eval-freq", "1", "--lr", "0.01", "--lr_steps", "1",
        "--root_log", str(out / "log"), "--root_model", str(out / "ckpt"), "--store_name", "run",
        "--print-freq", "0", "--no-tensorboard", "--device", "cpu", "--check-data", "quick", *extra,
    ]


def run_main(argv: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python main.py argv`` in a subprocess (for signals, limits and exit codes)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *argv], env=full_env, cwd=REPO,
                          capture_output=True, text=True, timeout=kwargs.pop("timeout", 300), **kwargs)


def read_steps(run_dir: Path) -> dict[tuple[int, int], tuple[float, float]]:
    """``steps.tsv`` as ``{(epoch, step): (loss, lr)}``; a step logged twice (redone after a resume) keeps its last line."""
    steps = {}
    for line in (run_dir / "steps.tsv").read_text().splitlines()[1:]:
        epoch, step, loss, lr = line.split("\t")
        steps[(int(epoch), int(step))] = (float(loss), float(lr))
    return steps


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]




def train(data: Path, out: Path, *extra: str, modality: str = "RGB", num_class: int = 3) -> dict:
    """``main.main`` in this process with :func:`train_argv`'s command line plus ``extra``."""
    import main
    from ops.train_args import get_args_parser

    return main.main(get_args_parser().parse_args(train_argv(data, out, *extra, modality=modality,
                                                              num_class=num_class)))
