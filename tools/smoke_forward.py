"""A forward pass of every PAN variant on random frames (random init, CPU): a first check of an install."""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.models import PAN  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    for modality in ("RGB", "PA", "Lite"):
        model = PAN(10, 8, modality, "resnet18", pretrain=None, is_shift=True, has_VAP=True).eval()
        x = torch.randn(2, 8 * model.new_length * 3, 112, 112)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(x)
        print(f"PAN {modality:<4} resnet18: input {tuple(x.shape)} -> {tuple(out.shape)} "
              f"in {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
