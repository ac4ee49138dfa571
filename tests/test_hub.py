"""hubconf.py through torch.hub.load(<local path>, ..., source='local'), as users load it."""

from __future__ import annotations

import pytest
import torch

from ops.weights import CheckpointError
from tests.helpers import REPO
from tests.eval_support import save_ours, save_released, tiny_model  # noqa: F401


def hub(entry: str, **kwargs):
    return torch.hub.load(str(REPO), entry, source="local", trust_repo=True, **kwargs)


def test_entry_points_are_the_public_callables():
    """torch.hub.list's rule (every public callable of hubconf; it reads GitHub repositories only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_listed", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dependencies == ["torch", "torchvision"]
    listed = {name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")}
    assert listed == {"pan", "pan_lite", "pan_rgb", "pan_pa"}


@pytest.mark.parametrize("entry, modality, arch", [("pan_lite", "Lite", "resnet18"), ("pan_rgb", "RGB", "mobilenet_v2"),
                                                   ("pan_pa", "PA", "resnet18")])
def test_builds_each_variant_with_the_published_keywords(entry, modality, arch):
    model = hub(entry, num_class=5, num_segments=4, base_model=arch)
    assert (model.modality, model.arch, model.num_class, model.num_segments) == (modality, arch, 5, 4)
    assert model.is_shift and model.shift_div == 8 and model.has_VAP, "the released models' defaults"
    assert model.training, "built untrained, in training mode like torchvision's constructors"
    x = torch.randn(2, 4 * model.new_length * 3, 32, 32)
    assert model.eval()(x).shape == (2, 5)


def test_defaults_are_the_released_configuration():
    model = hub("pan", base_model="resnet18")  # resnet50 is the default; resnet18 keeps the test quick
    assert (model.modality, model.num_class, model.num_segments, model.shift_place) == ("Lite", 174, 8, "blockres")


@pytest.mark.parametrize("released", [False, True], ids=["our format", "released file"])
def test_loads_a_local_checkpoint_strictly_with_its_configuration(tmp_path, released):
    source = tiny_model("Lite", seed=3)
    path = save_released(tmp_path, source) if released else save_ours(tmp_path / "lite.pth.tar", source)
    model = hub("pan_lite", pretrained=str(path))
    assert not model.training and (model.num_class, model.num_segments, model.arch) == (3, 4, "resnet18")
    x = torch.randn(1, 48, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    generic = hub("pan", pretrained=str(path))
    assert generic.modality == "Lite"


def test_a_checkpoint_of_another_variant_is_refused_with_the_keys_named(tmp_path):
    path = save_ours(tmp_path / "rgb.pth.tar", tiny_model("RGB"))
    with pytest.raises(CheckpointError, match="PA.shallow_conv"):
        hub("pan_lite", pretrained=str(path))
    with pytest.raises(ValueError, match="local checkpoint file"):
        hub("pan_lite", pretrained="https://example.com/PAN_Lite.pth.tar")
    with pytest.raises(ValueError, match="only the architecture keywords"):
        hub("pan_lite", pretrained=str(path), dropout=0.1)
