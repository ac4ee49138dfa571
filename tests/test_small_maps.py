"""Convolutions that skip the taps meeting only padding compute the same convolution (ops/small_maps.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ops.models import PAN
from ops.small_maps import reachable_taps, trim_small_maps
from ops.train_args import get_args_parser


def test_a_3x3_convolution_on_a_1x1_map_keeps_its_centre_tap_only():
    assert reachable_taps(1, 3, 1, 1, 1) == (1, 1, 0, 0)
    assert reachable_taps(2, 3, 2, 1, 1) == (1, 2, 0, 0)  # layer4's downsampling 3x3 on a 2x2 map
    assert reachable_taps(7, 3, 1, 1, 1) == (0, 2, 1, 1)  # every tap meets the input: unchanged


@pytest.mark.parametrize("size, kernel, stride, padding, dilation",
                         [(n, k, s, p, d) for n, k, s, p, d in itertools.product((1, 2, 3, 5), (3, 5, 7), (1, 2),
                                                                                  (0, 1, 3), (1, 2))
                          if n + 2 * p >= d * (k - 1) + 1])  # at least one output
def test_outputs_and_gradients_equal_the_plain_convolution(size, kernel, stride, padding, dilation):
    torch.manual_seed(size * 100 + kernel * 10 + stride + padding)
    conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation).double()
    x = torch.randn(2, 3, size, size + 1, dtype=torch.double, requires_grad=True)
    plain = conv(x)
    grad = torch.randn_like(plain)
    expected = torch.autograd.grad(plain, (x, conv.weight, conv.bias), grad)
    assert trim_small_maps(conv) == 1
    trimmed = conv(x)
    got = torch.autograd.grad(trimmed, (x, conv.weight, conv.bias), grad)
    assert trimmed.shape == plain.shape
    torch.testing.assert_close(trimmed, plain, atol=1e-12, rtol=0)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# layer3's 3x3 on 2x2 maps (every tap meets the input); layer4's 3x3 on 1x1 maps (one tap) and its stride-2
# 3x3 from 2x2 to 1x1 (four taps, four pixels).
@pytest.mark.parametrize("size, stride", [(2, 1), (1, 1), (2, 2)])
def test_a_map_with_no_more_pixels_than_kernel_taps_is_one_matrix_product_not_a_convolution(monkeypatch, size,
                                                                                             stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, stride=stride, padding=1).double()
    x = torch.randn(5, 8, size, size, dtype=torch.double, requires_grad=True)
    expected = conv(x)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, conv.weight, conv.bias), grad)
    trim_small_maps(conv)

    def no_convolution(*args, **kwargs):
        raise AssertionError("F.conv2d called on a 2x2 map")

    monkeypatch.setattr("ops.small_maps.F.conv2d", no_convolution)
    got = conv(x)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(got, (x, conv.weight, conv.bias), grad), expected_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_grouped_convolutions_on_small_maps_equal_the_plain_convolution(size):
    torch.manual_seed(size)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6).double()  # mobilenet_v2's depthwise 3x3
    x = torch.randn(2, 6, size, size, dtype=torch.double, requires_grad=True)
    plain = conv(x)
    expected = torch.autograd.grad(plain.square().sum(), (x, conv.weight))
    trim_small_maps(conv)
    trimmed = conv(x)
    torch.testing.assert_close(trimmed, plain, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(trimmed.square().sum(), (x, conv.weight)), expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def pan(seed: int = 0) -> PAN:
    torch.manual_seed(seed)
    return PAN(5, 4, "Lite", base_model="resnet18", pretrain=None, is_shift=True, has_VAP=True, partial_bn=False,
               dropout=0.0)  # no random mask: the two models see the same computation


def test_the_quickstarts_model_at_28x28_gives_the_same_logits_gradients_and_state_dict():
    plain, trimmed = pan(), pan()
    assert trim_small_maps(trimmed) > 10 and trimmed.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 4 * 4 * 3, 28, 28)
    out_plain, out_trimmed = plain(x), trimmed(x)
    torch.testing.assert_close(out_trimmed, out_plain, atol=1e-5, rtol=1e-5)
    out_plain.square().sum().backward()
    out_trimmed.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), trimmed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_nothing_changes_where_every_tap_meets_the_input():
    plain, trimmed = pan().eval(), pan().eval()
    trim_small_maps(trimmed)
    x = torch.randn(1, 4 * 4 * 3, 112, 112)  # layer4 at 4x4: every tap of every 3x3 reaches the map
    with torch.no_grad():
        assert torch.equal(trimmed(x), plain(x))


def test_main_takes_the_flag_off_by_default():
    assert get_args_parser().parse_args(["x", "Lite"]).trim_small_maps is False
    assert get_args_parser().parse_args(["x", "Lite", "--trim_small_maps"]).trim_small_maps is True
