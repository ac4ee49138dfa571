"""--zero_init_residual: from scratch, every ResNet residual block starts as the identity (main.build_model)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

import main
from ops.errors import UsageError
from ops.train_args import get_args_parser

SCRATCH = ["synthetic", "Lite", "--pretrain", "none", "--num_segments", "2"]


def build(*flags: str):
    torch.manual_seed(0)
    return main.build_model(get_args_parser().parse_args([*SCRATCH, *flags]), 5)


@pytest.mark.parametrize("arch, block, last", [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")])
def test_the_last_batchnorm_of_every_residual_block_starts_at_zero_and_nothing_else_changes(arch, block, last):
    plain, zeroed = build("--arch", arch), build("--arch", arch, "--zero_init_residual")
    blocks = [m for m in zeroed.base_model.modules() if isinstance(m, block)]
    assert blocks and all(torch.count_nonzero(getattr(b, last).weight) == 0 for b in blocks)
    zero_names = {f"{name}.{last}.weight" for name, m in zeroed.base_model.named_modules() if isinstance(m, block)}
    for (name, a), b in zip(plain.base_model.state_dict().items(), zeroed.base_model.state_dict().values()):
        if name not in zero_names:
            assert torch.equal(a, b), name
    assert plain.state_dict().keys() == zeroed.state_dict().keys()


def test_off_by_default():
    assert get_args_parser().parse_args(SCRATCH).zero_init_residual is False
    model = build("--arch", "resnet18")
    assert all(torch.count_nonzero(m.bn2.weight) > 0 for m in model.base_model.modules() if isinstance(m, BasicBlock))


def test_refused_with_imagenet_weights_and_without_residual_blocks():
    args = get_args_parser().parse_args(["synthetic", "Lite", "--zero_init_residual"])  # --pretrain imagenet
    with pytest.raises(UsageError, match="--zero_init_residual is for training from scratch"):
        main.build_model(args, 5)
    with pytest.raises(UsageError, match="--arch mobilenet_v2 has no ResNet residual blocks"):
        build("--arch", "mobilenet_v2", "--zero_init_residual")
