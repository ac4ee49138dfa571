"""The PAN model: released state_dict layout, modalities, heads, partial BN, optimiser policies."""

import pytest
import torch
from torch import nn

from ops.backbones import imagenet_weights_path
from ops.models import PAN

from tests.helpers import DATA_DIR, read_key_listing, released_model_kwargs


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
@pytest.mark.parametrize("modality", ["Lite", "RGB", "PA"])
def test_state_dict_is_exactly_the_released_one(modality, arch):
    released = read_key_listing(DATA_DIR / f"checkpoint_keys_{modality}_{arch}.txt")
    model = PAN(**released_model_kwargs(modality, arch))
    ours = {
        "module." + name: (list(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in model.state_dict().items()
    }
    assert list(ours) == list(released)
    assert ours == released


def small(modality="Lite", **kwargs):
    args = dict(num_class=5, num_segments=4, modality=modality, base_model="resnet18", pretrain=None, dropout=0.5)
    args.update(kwargs)
    return PAN(**args)


@pytest.mark.parametrize("modality, frames", [("RGB", 1), ("PA", 4), ("Lite", 4)])
@pytest.mark.parametrize("has_VAP", [True, False])
def test_forward_takes_the_tsn_layout_and_returns_logits(modality, frames, has_VAP):
    model = small(modality, is_shift=True, has_VAP=has_VAP).eval()
    x = torch.randn(2, 4 * frames * 3, 32, 32)
    assert model(x).shape == (2, 5)


def test_segment_inputs_per_modality():
    x = torch.randn(2, 4 * 4 * 3, 16, 16)
    lite, pa = small("Lite"), small("PA")
    pa.PA.load_state_dict(lite.PA.state_dict())
    lite_in, pa_in = lite.segment_inputs(x), pa.segment_inputs(x)
    assert lite_in.shape == (8, 6, 16, 16) and pa_in.shape == (8, 3, 16, 16)
    # Lite = [first RGB frame of the segment, PA maps]
    assert torch.equal(lite_in[:, :3], x.reshape(8, 12, 16, 16)[:, :3])
    assert torch.equal(lite_in[:, 3:], pa_in)
    assert small("RGB").segment_inputs(torch.randn(2, 12, 16, 16)).shape == (8, 3, 16, 16)


def test_lite_conv1_starts_from_the_mean_rgb_kernel():
    model = small("Lite")
    weight = model.base_model.conv1.weight
    assert weight.shape[1] == 6
    assert torch.equal(weight[:, :1].expand(-1, 6, -1, -1), weight)


def test_identity_consensus_keeps_segments_and_temporal_pool_halves_them():
    model = small("RGB", consensus_type="identity").eval()
    assert model(torch.randn(2, 12, 32, 32)).shape == (2, 4, 5)
    pooled = small("Lite", is_shift=True, temporal_pool=True, has_VAP=True).eval()
    assert pooled(torch.randn(2, 48, 32, 32)).shape == (2, 5)


def test_mobilenet_v2_backbone_with_shift():
    model = small("Lite", base_model="mobilenet_v2", is_shift=True, has_VAP=True).eval()
    assert model(torch.randn(1, 48, 32, 32)).shape == (1, 5)


def test_train_and_eval_return_the_model_and_partial_bn_freezes_all_but_the_first():
    model = small("RGB", partial_bn=True)
    assert model.train() is model and model.eval() is model
    model.train()
    bns = [m for m in model.base_model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[0].training and bns[0].weight.requires_grad
    assert not any(bn.training or bn.weight.requires_grad for bn in bns[1:])
    unfrozen = small("RGB", partial_bn=False).train()
    assert all(m.training for m in unfrozen.modules() if isinstance(m, nn.BatchNorm2d))


def policy(model, name):
    return next(g for g in model.get_optim_policies() if g["name"] == name)


@pytest.mark.parametrize("modality, first_conv, mults", [
    ("RGB", "base_model.conv1.weight", (1, 2)),
    ("PA", "PA.shallow_conv.weight", (5, 10)),
    ("Lite", "PA.shallow_conv.weight", (5, 10)),
])
def test_optim_policies_follow_the_published_multipliers(modality, first_conv, mults):
    model = small(modality, is_shift=True, has_VAP=True, partial_bn=False)
    names = {id(p): n for n, p in model.named_parameters()}
    first = policy(model, "first_conv_weight")
    assert [names[id(p)] for p in first["params"]] == [first_conv]
    assert (first["lr_mult"], first["decay_mult"]) == (mults[0], 1)
    assert (policy(model, "first_conv_bias")["lr_mult"], policy(model, "first_conv_bias")["decay_mult"]) == (mults[1], 0)
    assert policy(model, "normal_bias")["decay_mult"] == 0 and policy(model, "BN scale/shift")["decay_mult"] == 0
    grouped = [id(p) for g in model.get_optim_policies() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_fc_lr5_moves_the_classifier_to_5x_and_10x():
    model = small("RGB", fc_lr5=True)
    assert [tuple(p.shape) for p in policy(model, "lr5_weight")["params"]] == [(5, 512)]
    assert policy(model, "lr10_bias")["lr_mult"] == 10


def test_partial_bn_leaves_frozen_bn_out_of_the_policies():
    model = small("RGB", partial_bn=True)
    assert len(policy(model, "BN scale/shift")["params"]) == 2


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        small("RGB", pretrain="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        small("RGB", pretrain=str(tmp_path / "missing.pth"))


def test_imagenet_weights_are_read_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    donor = torchvision.models.resnet18()
    path = imagenet_weights_path("resnet18")
    assert path.startswith(str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(donor.state_dict(), path)
    model = small("Lite", pretrain="imagenet")
    assert torch.equal(model.base_model.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert torch.allclose(model.base_model.conv1.weight[:, 0], donor.conv1.weight.mean(dim=1))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="modality 'Flow'"):
        small("Flow")
    with pytest.raises(ValueError, match="backbone 'vgg'"):
        small(base_model="vgg")
    with pytest.raises(ValueError, match="even number of segments"):
        small(num_segments=3, temporal_pool=True)
