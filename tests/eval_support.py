"""Support for the evaluation tests: a tiny frame dataset and tiny checkpoints (no tests here).

The dataset is registered as ``something`` (its frame template ``{:05d}.jpg``
and its category file) but lives in a tmp folder with its own class count, so
``test_models.py`` runs on it with ``--root_path``, ``--test_list`` and
``--num_class``. The models are resnet18 PANs with TSM and VAP (the released
layout) at random init, with a classifier scaled up so that the classes are
well apart and a prediction does not flip on rounding differences.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import test_models
from ops.models import PAN

NUM_CLASS = 3
NUM_SEGMENTS = 4
NUM_FRAMES = 10
SIZE = 32
CATEGORIES = ["pushing", "pulling", "spinning"]




def make_dataset(root: Path, num_videos: int = 4) -> Path:
    """``num_videos`` folders of ``NUM_FRAMES`` noisy 32x32 JPEGs, ``val.txt`` and ``category.txt``."""
    rows = []
    for v in range(num_videos):
        folder = root / "frames" / f"video{v}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(v)
        base = rng.integers(0, 255, (SIZE + NUM_FRAMES, SIZE + NUM_FRAMES, 3), dtype=np.uint8)
        for i in range(NUM_FRAMES):
            # A texture sliding one pixel per frame: PA sees motion.
            Image.fromarray(base[i:i + SIZE, i:i + SIZE]).save(folder / f"{i + 1:05d}.jpg", quality=95)
        rows.append(f"frames/video{v} {NUM_FRAMES} {v % NUM_CLASS}\n")
    (root / "val.txt").write_text("".join(rows))
    (root / "category.txt").write_text("\n".join(CATEGORIES) + "\n")
    return root


def tiny_model(modality: str, seed: int = 0, num_class: int = NUM_CLASS, num_segments: int = NUM_SEGMENTS) -> PAN:
    """A resnet18 PAN with the released head layout (shift 8 blockres, VAP), eval mode."""
    torch.manual_seed(seed)
    model = PAN(num_class, num_segments, modality, base_model="resnet18", pretrain=None, is_shift=True,
                has_VAP=True, partial_bn=False, dropout=0.5)
    with torch.no_grad():
        model.base_model.fc.pred.weight.normal_(0.0, 1.0)
        if model.spec.uses_pa:
            model.PA.shallow_conv.weight.normal_(0.0, 0.1)
    return model.eval()


def save_ours(path: Path, model: PAN) -> Path:
    """Our training format (what main.py writes, minus optimizer state)."""
    torch.save({"epoch": 3, "arch": model.arch, "modality": model.modality, "num_segments": model.num_segments,
                "model_config": model.config(), "state_dict": model.state_dict(), "best_prec1": 12.5}, path)
    return path


def save_released(folder: Path, model: PAN, dataset: str = "something") -> Path:
    """The released format: DataParallel keys (``module.``), no configuration, the published file name."""
    name = (f"PAN_{model.modality}_{dataset}_{model.arch}_shift8_blockres_avg_"
            f"segment{model.num_segments}_e80.pth.tar")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 80, "arch": model.arch, "state_dict": state, "optimizer": {}, "best_prec1": 48.0},
               folder / name)
    return folder / name


def eval_args(root: Path, weights, out: Path, *extra: str) -> argparse.Namespace:
    """test_models.py's arguments for the tiny dataset, CPU, no workers."""
    if isinstance(weights, (list, tuple)):
        weights = ",".join(str(w) for w in weights)
    argv = ["something", f"--weights={weights!s}", "--root_path", str(root), "--test_list", "val.txt",
            "--num_class", str(NUM_CLASS), "--input_size", str(SIZE), "-j", "0", "--batch_size", "2",
            "--device", "cpu", "--output_dir", str(out), *extra]
    return test_models.get_args_parser().parse_args(argv)


def run_eval(root: Path, weights, out: Path, *extra: str) -> tuple[dict, dict]:
    """Run test_models.main in-process; returns its metrics and the arrays of ``scores.npz``."""
    metrics = test_models.main(eval_args(root, weights, out, *extra))
    with np.load(out / "scores.npz") as saved:
        arrays = {k: saved[k] for k in saved.files}
    return metrics, arrays
