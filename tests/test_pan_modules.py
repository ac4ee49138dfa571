"""PA and VAP: the public contract (shapes, names) and the released numbers."""

import pytest
import torch

from ops.PAN_modules import PA, VAP, vap_pool

from tests.helpers import DATA_DIR

#: The README's promise for PA and VAP against the published implementation's vectors.
README_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def reference():
    return torch.load(DATA_DIR / "pa_vap_vectors.pt", weights_only=True)


def published_pa(frames, conv, n_length):
    """The published formulation: conv of every frame, one distance per pair, in a loop."""
    feats = conv(frames)
    feats = feats.reshape(-1, n_length, *feats.shape[1:])
    maps = [
        torch.linalg.vector_norm(feats[:, i] - feats[:, i + 1] + 1e-6, dim=1) for i in range(n_length - 1)
    ]
    return torch.stack(maps, dim=1)


def test_pa_matches_released_numbers(reference):
    pa = PA(n_length=4).eval()
    pa.load_state_dict(reference["pa_state_dict"])
    out = pa(reference["pa_input"])
    assert out.shape == reference["pa_output"].shape == (6, 3, 20, 24)
    # README: "match the published implementation's reference vectors to 1e-6 of their scale" (float32
    # sums in another order: measured 6.0e-7 for PA, outputs up to 1.6; VAP 4.8e-7 with AVX-512 kernels,
    # 1.2e-6 with AVX2 ones, outputs up to 3.3).
    assert (out - reference["pa_output"]).abs().max() <= README_TOLERANCE * reference["pa_output"].abs().max()


def test_vap_matches_released_numbers(reference):
    vap = VAP(n_segment=8, feature_dim=64, num_class=10, dropout_ratio=0.5).eval()
    vap.load_state_dict(reference["vap_state_dict"])
    out = vap(reference["vap_input"])
    assert out.shape == (3, 10)
    assert (out - reference["vap_output"]).abs().max() <= README_TOLERANCE * reference["vap_output"].abs().max()


def test_state_dict_names_are_the_released_ones():
    assert list(PA(4).state_dict()) == ["shallow_conv.weight", "shallow_conv.bias"]
    assert list(VAP(8, 64, 10, 0.5).state_dict()) == ["TES.0.weight", "TES.2.weight", "pred.weight", "pred.bias"]


@pytest.mark.parametrize("m, height, width", [(2, 7, 9), (4, 20, 24), (5, 13, 1), (8, 3, 3)])
def test_pa_shapes_for_any_size_and_length(m, height, width):
    torch.manual_seed(0)
    pa = PA(n_length=m)
    with torch.no_grad():
        pa.shallow_conv.weight.normal_()  # larger weights than the init: a stronger check
    frames = torch.randn(2 * 3 * m, 3, height, width)
    out = pa(frames)
    assert out.shape == (6, m - 1, height, width)
    assert torch.allclose(out, published_pa(frames, pa.shallow_conv, m), atol=1e-4, rtol=1e-5)


def test_pa_accepts_the_tsn_layout():
    pa = PA(4)
    x = torch.randn(5, 12, 16, 16)  # [N*T, m*3, H, W]
    assert torch.equal(pa(x), pa(x.reshape(20, 3, 16, 16)))


def test_pa_rejects_frame_counts_that_do_not_group():
    with pytest.raises(ValueError, match="multiple of n_length=4"):
        PA(4)(torch.randn(6, 3, 8, 8))
    with pytest.raises(ValueError, match="n_length"):
        PA(1)


def test_pa_is_zero_plus_eps_on_a_still_video_and_has_gradients():
    pa = PA(4)
    still = torch.randn(1, 3, 8, 8).repeat(4, 1, 1, 1)
    assert torch.allclose(pa(still), torch.full((1, 3, 8, 8), 8**0.5 * 1e-6), atol=1e-9)
    moving = torch.randn(8, 3, 8, 8, requires_grad=True)
    pa(moving).sum().backward()
    assert pa.shallow_conv.weight.grad is not None and pa.shallow_conv.weight.grad.abs().sum() > 0
    assert moving.grad.abs().sum() > 0


def test_pa_init():
    torch.manual_seed(0)
    pa = PA(4)
    assert pa.shallow_conv.weight.shape == (8, 3, 7, 7)
    assert pa.shallow_conv.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert torch.count_nonzero(pa.shallow_conv.bias) == 0


def dilated_maxpool_reference(x, n_segment):
    """VAP's pyramid with torch's dilated MaxPool3d, as published (powers of two)."""
    d = x.shape[-1]
    clips = x.reshape(-1, n_segment, d, 1, 1).permute(0, 2, 1, 3, 4)
    levels = []
    step = 1
    while 2 * step <= n_segment:
        pool = torch.nn.MaxPool3d((n_segment // step, 1, 1), 1, 0, (step, 1, 1))
        levels.append(pool(clips))
        step *= 2
    return torch.cat(levels, 2).squeeze(-1).squeeze(-1).permute(0, 2, 1)


@pytest.mark.parametrize("n_segment, scales", [(2, 1), (4, 3), (8, 7), (16, 15)])
def test_vap_pyramid_is_the_dilated_max_pool(n_segment, scales):
    x = torch.randn(3 * n_segment, 5)
    pooled = vap_pool(x, n_segment)
    assert pooled.shape == (3, scales, 5)
    assert torch.equal(pooled, dilated_maxpool_reference(x, n_segment))


@pytest.mark.parametrize("n_segment", [4, 8, 16, 6, 10])
def test_vap_shapes_for_any_segment_count(n_segment):
    vap = VAP(n_segment, feature_dim=32, num_class=7, dropout_ratio=0.0)
    x = torch.randn(2 * n_segment, 32, requires_grad=True)
    out = vap(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert vap.TES[0].weight.grad is not None and x.grad is not None


def test_vap_non_power_of_two_keeps_the_first_windows():
    # 6 segments: levels 1 (max of all) and 2 (max over even / odd segments).
    x = torch.arange(6.0).reshape(6, 1)
    assert vap_pool(x, 6).flatten().tolist() == [5.0, 4.0, 5.0]
    # 10 segments, level 3: kernel 2, dilation 4, windows j = 0..3: max(x[j], x[j+4]).
    x = torch.arange(10.0).reshape(10, 1)
    assert vap_pool(x, 10).flatten().tolist() == [9.0, 8.0, 9.0, 4.0, 5.0, 6.0, 7.0]
