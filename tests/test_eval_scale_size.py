"""test_models.py --scale_size: the evaluation resizes as the training run's validation did.

Published evaluation resizes the shorter side to 256/224 of the crop; a run trained with its own
--scale_size (the quickstart: crop 24 of frames resized to 28, where 256/224 would give 27) is
evaluated on the pixels of its own validation only when the same resize is given.
"""

from __future__ import annotations

import pytest

import test_models
from ops.dataset_config import get_dataset_config
from ops.errors import UsageError
from ops.evaluation import build_dataset
from ops.models import PAN


def plan(*extra: str) -> dict:
    argv = ["synthetic", "--weights", "missing_Lite_resnet18.pth", "--test_segments", "4", "--arch", "resnet18",
            "--modality", "Lite", "--input_size", "24", *extra, "--dry-run"]
    return test_models.main(test_models.get_args_parser().parse_args(argv))


def test_the_default_resize_is_the_published_256_of_224():
    assert plan()["models"][0]["scale_size"] == 24 * 256 // 224 == 27


def test_scale_size_sets_the_resize():
    assert plan("--scale_size", "28")["models"][0]["scale_size"] == 28


def test_a_resize_below_the_crop_is_refused():
    with pytest.raises(UsageError, match="--scale_size 20 is below the crop size 24"):
        plan("--scale_size", "20")


def test_the_dataset_transform_uses_it(tmp_path):
    model = PAN(12, 4, "Lite", base_model="resnet18", pretrain=None)
    cfg = get_dataset_config("synthetic", str(tmp_path), training=False)
    with open(cfg.val_list, "w") as f:
        f.write("frames/a 16 0\n")
    assert build_dataset(model, cfg, 4, input_size=24, scale_size=28).transform.scale_size == 28
    assert build_dataset(model, cfg, 4, input_size=24).transform.scale_size in (None, 27)
