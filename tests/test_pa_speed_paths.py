"""The fast PA path gives the plain path's numbers: maps and gradients, any shape, any mode.

No timing here: ``tools/bench_pa.py`` measures speed; these tests pin down that
the speed costs nothing in accuracy.
"""

import pytest
import torch
from torch import nn

from ops.PAN_modules import PA, PA_EPS, pa_maps
from ops import pa_fast
from ops.pa_fast import CPU_CHUNK_BYTES, frame_differences, groups_per_chunk, pa_maps_fast

from tests.helpers import DATA_DIR

SHAPES = [(2, 7, 9), (3, 5, 6), (4, 20, 24), (5, 13, 1), (4, 1, 11)]  # (m, H, W): odd sizes, m = 2..5


def published_pa(frames: torch.Tensor, conv: nn.Conv2d, n_length: int) -> torch.Tensor:
    """The released PA, written out here (not imported from the code or tools under test).

    The shallow conv with its bias on every frame; then, for each pair of neighbouring
    frames of a group of ``n_length``, the per-pixel distance of ``nn.PairwiseDistance(p=2)``
    (eps 1e-6 added to the difference) over the conv's channels.
    """
    features = conv(frames)  # [G*m, C', H, W]
    groups = features.shape[0] // n_length
    maps = torch.empty(groups, n_length - 1, *features.shape[-2:])
    for g in range(groups):
        for i in range(n_length - 1):
            a, b = features[g * n_length + i], features[g * n_length + i + 1]
            maps[g, i] = ((a - b + 1e-6) ** 2).sum(dim=0).sqrt()
    return maps


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Within ``rtol`` of the largest magnitude: rounding of sums, not of single entries."""
    return (actual - expected).abs().max().item() <= rtol * max(expected.abs().max().item(), 1.0)


def frames_and_weight(m: int, height: int, width: int, groups: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(groups * m, 3, height, width, generator=generator)
    # Weights of std 1, far larger than PA's init (0.001): large maps make a strict check.
    weight = torch.randn(8, 3, 7, 7, generator=generator)
    return frames, weight


def maps_and_grads(fn, frames, weight, seed=1):
    """``fn(frames, weight)`` and the gradients of frames and weight under a random upstream gradient."""
    x = frames.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    maps = fn(x, w)
    maps.backward(torch.randn(maps.shape, generator=torch.Generator().manual_seed(seed)))
    return maps.detach(), x.grad, w.grad


def test_fast_pa_matches_the_released_numbers():
    reference = torch.load(DATA_DIR / "pa_vap_vectors.pt", weights_only=True)
    pa = PA(n_length=4, fast=True)
    pa.load_state_dict(reference["pa_state_dict"])
    for mode in (pa.train, pa.eval):
        mode()
        assert (pa(reference["pa_input"]) - reference["pa_output"]).abs().max() <= 1e-6  # the README's figure
        with torch.no_grad():
            assert (pa(reference["pa_input"]) - reference["pa_output"]).abs().max() <= 1e-6


@pytest.mark.parametrize("m, height, width", SHAPES)
def test_fast_maps_equal_the_plain_and_the_published_maps(m, height, width):
    frames, weight = frames_and_weight(m, height, width)
    conv = nn.Conv2d(3, 8, 7, padding=3)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.normal_()  # cancels in the difference of two frames
        fast = pa_maps_fast(frames, weight, m, PA_EPS)
        assert fast.shape == (3, m - 1, height, width)
        assert fast.is_contiguous()
        assert close(fast, pa_maps(frames, weight, m))
        assert close(fast, published_pa(frames, conv, m))


@pytest.mark.parametrize("m, height, width", SHAPES)
def test_fast_gradients_equal_the_plain_gradients(m, height, width):
    frames, weight = frames_and_weight(m, height, width)
    plain_maps, plain_dx, plain_dw = maps_and_grads(lambda x, w: pa_maps(x, w, m), frames, weight)
    fast_maps, fast_dx, fast_dw = maps_and_grads(lambda x, w: pa_maps_fast(x, w, m, PA_EPS), frames, weight)
    assert close(fast_maps, plain_maps)
    assert fast_dx.shape == frames.shape and fast_dw.shape == weight.shape
    assert close(fast_dx, plain_dx)
    assert close(fast_dw, plain_dw)


def test_module_fast_and_plain_agree_in_train_and_eval_with_parameter_gradients():
    torch.manual_seed(0)
    fast, plain = PA(4, fast=True), PA(4, fast=False)
    with torch.no_grad():
        fast.shallow_conv.weight.normal_()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 12, 15, 17)  # the TSN layout [N*T, m*3, H, W]
    for train in (True, False):
        fast.train(train)
        plain.train(train)
        fast.zero_grad()
        plain.zero_grad()
        out_fast, out_plain = fast(x), plain(x)
        assert close(out_fast, out_plain)
        (out_fast * torch.arange(out_fast.numel()).view_as(out_fast)).sum().backward()
        (out_plain * torch.arange(out_plain.numel()).view_as(out_plain)).sum().backward()
        assert close(fast.shallow_conv.weight.grad, plain.shallow_conv.weight.grad)
        assert fast.shallow_conv.bias.grad is None and plain.shallow_conv.bias.grad is None


def test_only_the_gradients_asked_for_are_computed():
    frames, weight = frames_and_weight(4, 9, 8)
    w = weight.clone().requires_grad_(True)
    pa_maps_fast(frames, w, 4, PA_EPS).sum().backward()  # frames are data: no gradient for them
    assert w.grad is not None and frames.grad is None
    x = frames.clone().requires_grad_(True)
    pa_maps_fast(x, weight, 4, PA_EPS).sum().backward()  # a frozen conv
    assert x.grad is not None
    x_plain = frames.clone().requires_grad_(True)
    pa_maps(x_plain, weight, 4).sum().backward()
    assert close(x.grad, x_plain.grad)


def test_no_grad_and_grad_paths_give_the_same_maps():
    frames, weight = frames_and_weight(3, 11, 10)
    with torch.no_grad():
        without = pa_maps_fast(frames, weight, 3, PA_EPS)
    with_grad = pa_maps_fast(frames, weight.clone().requires_grad_(True), 3, PA_EPS)
    assert torch.equal(without, with_grad.detach())


def test_any_input_memory_format_gives_the_same_maps():
    frames, weight = frames_and_weight(4, 12, 10)
    expected = pa_maps_fast(frames, weight, 4, PA_EPS)
    channels_last = frames.contiguous(memory_format=torch.channels_last)
    strided = torch.cat([frames, frames], dim=3)[..., : frames.shape[3]]  # a non-contiguous view of the same values
    for x in (channels_last, strided):
        assert torch.equal(pa_maps_fast(x, weight, 4, PA_EPS), expected)


def test_frame_differences_are_neighbour_differences_within_groups():
    frames = torch.arange(2 * 3 * 3 * 2 * 2, dtype=torch.float32).view(6, 3, 2, 2) ** 2
    diffs = frame_differences(frames, 3)
    assert diffs.is_contiguous(memory_format=torch.channels_last)
    expected = torch.stack([frames[0] - frames[1], frames[1] - frames[2], frames[3] - frames[4], frames[4] - frames[5]])
    assert torch.equal(diffs, expected)


def test_gradients_pass_gradcheck_in_double_precision():
    # Any odd kernel and channel count work; a small one keeps gradcheck quick.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 3, 3, 5, 4, generator=generator, dtype=torch.double).requires_grad_(True)
    w = torch.randn(2, 3, 3, 3, generator=generator, dtype=torch.double).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: pa_maps_fast(x, w, 3, PA_EPS), (x, w), fast_mode=True)


def test_zero_norm_gets_a_zero_gradient_like_torch_norm():
    # Without eps a still pair of frames has a norm of exactly 0: the gradient
    # there is 0 (as in torch's norm backward), not NaN.
    still = torch.randn(1, 3, 6, 6).repeat(2, 1, 1, 1)
    frames = torch.cat([still, torch.randn(2, 3, 6, 6)])
    weight = torch.randn(8, 3, 7, 7)

    def plain_without_eps(x, w):
        grouped = x.view(-1, 2, 3, 6, 6)
        features = torch.nn.functional.conv2d(grouped[:, 0] - grouped[:, 1], w, padding=3)
        return torch.linalg.vector_norm(features, dim=1).unsqueeze(1)

    maps, dx, dw = maps_and_grads(lambda x, w: pa_maps_fast(x, w, 2, 0.0), frames, weight)
    _, plain_dx, plain_dw = maps_and_grads(plain_without_eps, frames, weight)
    assert maps[0].abs().max() == 0
    assert torch.isfinite(dx).all() and torch.isfinite(dw).all()
    assert close(dx, plain_dx) and close(dw, plain_dw)


def test_autocast_runs_through_ordinary_autograd_with_close_numbers():
    frames, weight = frames_and_weight(4, 8, 8)
    w = (weight * 0.01).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = pa_maps_fast(frames, w, 4, PA_EPS)
    maps.sum().backward()
    plain = pa_maps(frames, w.detach(), 4)
    assert (maps.float() - plain).abs().max() <= 0.02 * plain.abs().max()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_cpu_chunks_hold_whole_groups_within_the_cache_budget():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    per_group = 3 * 224 * 224 * 8 * 4  # features of one group of 4 frames at 224x224, fp32
    assert groups_per_chunk(8, 4, 224, 224, 8, 4, cpu) == max(1, CPU_CHUNK_BYTES // per_group)
    assert groups_per_chunk(8, 4, 224, 224, 8, 4, cuda) == 8  # one launch over the batch off the CPU
    assert groups_per_chunk(8, 4, 2000, 2000, 8, 4, cpu) == 1  # never less than one group
    assert groups_per_chunk(8, 4, 8, 8, 8, 4, cpu) == 8  # small inputs: one chunk


@pytest.mark.parametrize("budget_groups", [1, 2, 3])
def test_chunked_inference_maps_equal_the_unchunked_ones(monkeypatch, budget_groups):
    m, height, width = 4, 9, 11
    frames, weight = frames_and_weight(m, height, width, groups=5)
    with torch.no_grad():
        whole = pa_maps_fast(frames, weight, m, PA_EPS)
    # A budget of `budget_groups` groups' features: 5 groups become ceil(5 / budget_groups) chunks.
    monkeypatch.setattr(pa_fast, "CPU_CHUNK_BYTES", budget_groups * (m - 1) * height * width * 8 * 4)
    assert pa_fast.groups_per_chunk(5, m, height, width, 8, 4, frames.device) == budget_groups
    calls = []
    one_chunk = pa_fast._pa_maps_chunk
    monkeypatch.setattr(pa_fast, "_pa_maps_chunk", lambda x, *rest: calls.append(len(x)) or one_chunk(x, *rest))
    with torch.no_grad():
        chunked = pa_maps_fast(frames, weight, m, PA_EPS)
    assert calls == [min(budget_groups, 5 - i) * m for i in range(0, 5, budget_groups)]
    assert chunked.shape == (5, m - 1, height, width) and chunked.is_contiguous()
    assert torch.equal(chunked, whole)


def test_training_runs_in_one_chunk_whatever_the_budget(monkeypatch):
    # Autograd keeps every chunk's features for the backward: chunks would save nothing.
    m, height, width = 4, 9, 11
    frames, weight = frames_and_weight(m, height, width, groups=5)
    expected = maps_and_grads(lambda x, w: pa_maps_fast(x, w, m, PA_EPS), frames, weight)
    monkeypatch.setattr(pa_fast, "CPU_CHUNK_BYTES", 1)
    calls = []
    one_chunk = pa_fast._pa_maps_chunk
    monkeypatch.setattr(pa_fast, "_pa_maps_chunk", lambda x, *rest: calls.append(len(x)) or one_chunk(x, *rest))
    got = maps_and_grads(lambda x, w: pa_maps_fast(x, w, m, PA_EPS), frames, weight)
    assert calls == [5 * m]
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
