"""Temporal shift: direction, zero padding at the clip's ends, placement in ResNets."""

import pytest
import torch
import torchvision

from ops.temporal_shift import TemporalShift, insert_temporal_pool, insert_temporal_shift, temporal_pool, temporal_shift


def reference_shift(x, n_segment, fold_div):
    """The published formulation, with slice assignment."""
    nt, c, h, w = x.shape
    x = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def test_segment_t_takes_the_first_fold_from_t_plus_1_and_the_second_from_t_minus_1():
    n_segment, channels = 4, 8
    # value = segment index + 1, so zeros stand out.
    x = (torch.arange(n_segment).float() + 1).reshape(1, n_segment, 1, 1, 1).expand(1, n_segment, channels, 1, 1)
    out = temporal_shift(x.reshape(n_segment, channels, 1, 1), n_segment, fold_div=4).reshape(n_segment, channels)
    fold = 2
    assert out[:, :fold].tolist() == [[2, 2], [3, 3], [4, 4], [0, 0]]
    assert out[:, fold : 2 * fold].tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert out[:, 2 * fold :].tolist() == [[t + 1] * 4 for t in range(4)]


@pytest.mark.parametrize("n_segment, channels, fold_div", [(8, 64, 8), (3, 10, 3), (2, 7, 8)])
def test_shift_equals_the_published_slice_assignment(n_segment, channels, fold_div):
    x = torch.randn(2 * n_segment, channels, 3, 5)
    assert torch.equal(temporal_shift(x, n_segment, fold_div), reference_shift(x, n_segment, fold_div))


def test_shift_has_gradients_and_keeps_the_wrapped_names():
    conv = torch.nn.Conv2d(16, 4, 1)
    shift = TemporalShift(conv, n_segment=4, n_div=8)
    assert list(shift.state_dict()) == ["net.weight", "net.bias"]
    x = torch.randn(8, 16, 2, 2, requires_grad=True)
    shift(x).sum().backward()
    assert x.grad is not None


def test_shift_exports():
    shift = TemporalShift(torch.nn.Identity(), n_segment=4, n_div=4)
    x = torch.randn(8, 8, 2, 2)
    exported = torch.export.export(shift, (x,))
    assert torch.equal(exported.module()(x), shift(x))


def shifted_blocks(net):
    return [
        f"layer{i}.{j}"
        for i, stage in enumerate([net.layer1, net.layer2, net.layer3, net.layer4], 1)
        for j, block in enumerate(stage)
        if isinstance(block.conv1, TemporalShift)
    ]


def test_blockres_shifts_every_block_of_resnet50():
    net = torchvision.models.resnet50()
    insert_temporal_shift(net, 8, 8, "blockres")
    assert len(shifted_blocks(net)) == 3 + 4 + 6 + 3


def test_blockres_shifts_every_other_block_of_resnet101():
    net = torchvision.models.resnet101()
    insert_temporal_shift(net, 8, 8, "blockres")
    blocks = shifted_blocks(net)
    assert blocks[:3] == ["layer1.0", "layer1.2", "layer2.0"]
    assert len(blocks) == 2 + 2 + 12 + 2


def test_block_place_wraps_whole_blocks():
    net = torchvision.models.resnet18()
    insert_temporal_shift(net, 4, 8, "block")
    assert all(isinstance(b, TemporalShift) for b in net.layer1)
    with pytest.raises(ValueError, match="shift place"):
        insert_temporal_shift(torchvision.models.resnet18(), 4, 8, "somewhere")


def test_temporal_pool_halves_the_segments_with_kernel_3_stride_2():
    x = torch.arange(8.0).reshape(8, 1, 1, 1)  # one clip of 8 segments
    assert temporal_pool(x, 8).flatten().tolist() == [1.0, 3.0, 5.0, 7.0]
    net = torchvision.models.resnet18()
    insert_temporal_shift(net, 8, 8, "blockres", temporal_pool=True)
    insert_temporal_pool(net, 8)
    assert net.layer2.net[0].conv1.n_segment == 4 and net.layer1[0].conv1.n_segment == 8
