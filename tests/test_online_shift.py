"""The one-way (online) temporal shift: causal in time, recorded in the configuration and checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ops.inference import load_checkpoint_model
from ops.model_config import ModelConfig
from ops.models import PAN
from ops.temporal_shift import SHIFT_MODES, TemporalShift, temporal_shift
from ops.train_args import get_args_parser


def test_online_shift_takes_one_slot_from_the_previous_segment_only():
    torch.manual_seed(0)
    n, t, c = 2, 5, 16
    x = torch.randn(n * t, c, 3, 3)
    out = temporal_shift(x, t, fold_div=8, mode="online").reshape(n, t, c, 3, 3)
    clips = x.reshape(n, t, c, 3, 3)
    fold = c // 8
    assert torch.equal(out[:, :, :fold], clips[:, :, :fold])  # not shifted
    assert torch.equal(out[:, 1:, fold:2 * fold], clips[:, :-1, fold:2 * fold])  # from t - 1
    assert torch.equal(out[:, 0, fold:2 * fold], torch.zeros_like(out[:, 0, fold:2 * fold]))
    assert torch.equal(out[:, :, 2 * fold:], clips[:, :, 2 * fold:])


def test_bidirectional_shift_is_unchanged_by_default():
    torch.manual_seed(0)
    x = torch.randn(8, 16, 2, 2)
    clips = x.reshape(2, 4, 16, 2, 2)
    out = temporal_shift(x, 4).reshape(2, 4, 16, 2, 2)
    assert torch.equal(out[:, :-1, :2], clips[:, 1:, :2]) and torch.equal(out[:, -1, :2], torch.zeros(2, 2, 2, 2))
    assert torch.equal(out[:, 1:, 2:4], clips[:, :-1, 2:4])
    assert torch.equal(temporal_shift(x, 4), temporal_shift(x, 4, 8, "bidirectional"))
    assert SHIFT_MODES == ("bidirectional", "online")
    with pytest.raises(ValueError, match="unknown shift mode 'left'"):
        TemporalShift(nn.Identity(), 4, 8, "left")


def _features(model: PAN, x: torch.Tensor) -> torch.Tensor:
    """Per-segment backbone features ``[T, D]`` of a one-clip input."""
    backbone = copy.deepcopy(model.base_model)
    setattr(backbone, "fc" if model.arch.startswith("resnet") else "classifier", nn.Identity())
    with torch.no_grad():
        return backbone(model.segment_inputs(x))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_an_online_model_is_causal_and_a_bidirectional_one_is_not(arch):
    torch.manual_seed(0)
    t, m = 4, 4
    x = torch.randn(1, t * m * 3, 32, 32)
    later = x.clone()
    later[:, 2 * m * 3:] += torch.randn_like(later[:, 2 * m * 3:])  # segments 2 and 3 change
    for mode, causal in (("online", True), ("bidirectional", False)):
        model = PAN(5, t, "Lite", base_model=arch, pretrain=None, is_shift=True, shift_mode=mode, has_VAP=True,
                    partial_bn=False).eval()
        a, b = _features(model, x), _features(model, later)
        assert torch.equal(a[:2], b[:2]) == causal, mode
        assert not torch.equal(a[2:], b[2:])
        assert model.shift_mode == mode and model.config()["shift_mode"] == mode


def test_temporal_pool_cannot_be_online():
    with pytest.raises(ValueError, match="temporal_pool .* shift_mode='online'"):
        PAN(3, 4, "RGB", base_model="resnet18", pretrain=None, is_shift=True, temporal_pool=True, shift_mode="online")


def test_the_flag_the_configuration_and_the_checkpoint_record_the_mode(tmp_path):
    parser = get_args_parser()
    base = ["something", "Lite", "--arch", "resnet18", "--num_segments", "4", "--pretrain", "none"]
    assert parser.parse_args(base).shift_mode == "bidirectional"
    args = parser.parse_args(base + ["--shift_mode", "online"])
    args.shift = True
    config = ModelConfig.from_args(args, 5)
    assert config.shift_mode == "online" and config.to_dict()["shift_mode"] == "online"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--shift_mode", "left"])

    model = PAN.from_config(config, pretrain=None, partial_bn=False).eval()
    path = tmp_path / "online.pth.tar"
    torch.save({"epoch": 1, "model_config": model.config(), "state_dict": model.state_dict()}, path)
    loaded, resolved, _ = load_checkpoint_model(str(path))
    assert loaded.shift_mode == "online" and resolved.config["shift_mode"] == "online"
    x = torch.randn(1, 4 * 4 * 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

    # A checkpoint written before the field existed is the published two-way shift.
    old = {k: v for k, v in model.config().items() if k != "shift_mode"}
    assert ModelConfig.from_dict(old).shift_mode == "bidirectional"
    path_old = tmp_path / "old.pth.tar"
    torch.save({"epoch": 1, "model_config": old, "state_dict": model.state_dict()}, path_old)
    loaded_old, _, _ = load_checkpoint_model(str(path_old))
    assert loaded_old.shift_mode == "bidirectional"
