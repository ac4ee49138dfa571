"""Reading released and own checkpoints: prefixes, strict checks, helpful mismatch errors, safe loading."""

import pytest
import torch

from ops.models import PAN
from ops.weights import (
    CheckpointError,
    describe_state_dict,
    load_model_weights,
    parse_released_name,
    read_checkpoint,
)
from tests.helpers import released_model_kwargs


def released_file(tmp_path, model, name="PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar"):
    """A file in the released format: DataParallel prefixes, the published fields."""
    path = tmp_path / name
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 80, "arch": "resnet50", "state_dict": state, "optimizer": {}, "best_prec1": 48.0}, path)
    return path


def tiny(modality="Lite", num_class=7, num_segments=8, arch="resnet18"):
    return PAN(**released_model_kwargs(modality, arch, num_class=num_class, num_segments=num_segments))


def test_released_format_loads_strictly_and_gives_the_same_numbers(tmp_path):
    torch.manual_seed(0)
    source = tiny().eval()
    path = released_file(tmp_path, source)
    checkpoint = read_checkpoint(str(path))
    assert checkpoint["epoch"] == 80
    target = tiny().eval()
    load_model_weights(target, checkpoint["state_dict"], source=str(path))
    x = torch.randn(1, 8 * 12, 32, 32)
    assert torch.equal(source(x), target(x))


@pytest.mark.parametrize("other, cause", [
    (dict(modality="RGB"), "modality: checkpoint has RGB, model has Lite"),
    (dict(num_class=9), "class count: checkpoint has 9, model has 7"),
    (dict(num_segments=16), "number of segments (VAP): checkpoint has 16, model has 8"),
    (dict(arch="resnet34"), "backbone: checkpoint has resnet34, model has resnet18"),
])
def test_mismatch_names_keys_and_likely_cause(tmp_path, other, cause):
    args = dict(modality="Lite", num_class=7, num_segments=8, arch="resnet18")
    args.update(other)
    path = released_file(tmp_path, tiny(**args))
    with pytest.raises(CheckpointError) as err:
        load_model_weights(tiny(), read_checkpoint(str(path))["state_dict"], source=str(path))
    message = str(err.value)
    assert str(path) in message and cause in message
    assert "missing" in message or "unexpected" in message or "different shapes" in message


def test_describe_state_dict_recovers_the_released_configuration():
    info = describe_state_dict(PAN(**released_model_kwargs("Lite", "resnet101")).state_dict())
    assert info == {
        "modality": "Lite", "arch": "resnet101", "num_class": 174, "num_segments": 8, "data_length": 4,
        "is_shift": True, "shift_place": "blockres", "has_VAP": True, "temporal_pool": False,
    }
    rgb = describe_state_dict({"module." + k: v for k, v in tiny("RGB").state_dict().items()})
    assert (rgb["modality"], rgb["arch"]) == ("RGB", "resnet18")


def test_released_file_names_give_the_configuration():
    info = parse_released_name("pretrained/PAN_PA_somethingv2_resnet101_shift8_blockres_avg_segment8_e80.pth.tar")
    assert info["modality"] == "PA" and info["dataset"] == "somethingv2" and info["arch"] == "resnet101"
    assert info["num_segments"] == 8 and info["shift_div"] == 8 and info["shift_place"] == "blockres"
    assert parse_released_name("my_model.pth") is None


def test_bare_state_dict_files_are_accepted(tmp_path):
    torch.manual_seed(0)
    model = tiny("RGB")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    torch.manual_seed(1)
    other = tiny("RGB")  # other random weights: the load must replace every one of them
    assert not torch.equal(other.state_dict()["base_model.fc.pred.weight"], model.state_dict()["base_model.fc.pred.weight"])
    load_model_weights(other, read_checkpoint(str(tmp_path / "bare.pth"))["state_dict"])
    loaded, saved = other.state_dict(), model.state_dict()
    assert loaded.keys() == saved.keys()
    assert [k for k in saved if not torch.equal(loaded[k], saved[k])] == []


def test_missing_empty_truncated_and_unsafe_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        read_checkpoint(str(tmp_path / "nothere.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(str(tmp_path / "empty.pth"))
    good = released_file(tmp_path, tiny("RGB"))
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_checkpoint(str(tmp_path / "cut.pth"))

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {}, "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_describe_state_dict_tells_lite_from_pa_on_mobilenet_v2():
    lite = PAN(**released_model_kwargs("Lite", "mobilenet_v2", num_class=5))
    pa = PAN(**released_model_kwargs("PA", "mobilenet_v2", num_class=5))
    assert describe_state_dict(lite.state_dict())["modality"] == "Lite"
    assert describe_state_dict(pa.state_dict())["modality"] == "PA"
    assert describe_state_dict(lite.state_dict())["arch"] == "mobilenet_v2"


@pytest.mark.parametrize("segments", [4, 8])
def test_mobilenet_v2_with_vap_is_told_from_its_keys_and_loads(tmp_path, segments):
    """MobileNetV2 keeps VAP where its classifier was (``base_model.classifier``), not under ``fc``."""
    from ops.inference import load_checkpoint_model
    from ops.weights import describe_state_dict

    model = PAN(5, segments, "Lite", base_model="mobilenet_v2", pretrain=None, is_shift=True, has_VAP=True)
    info = describe_state_dict(model.state_dict())
    assert (info["arch"], info["has_VAP"], info["num_class"], info["num_segments"]) == ("mobilenet_v2", True, 5,
                                                                                        segments)
    path = tmp_path / "mobilenet.pth.tar"
    torch.save({"model_config": model.model_config.to_dict(), "state_dict": model.state_dict()}, path)
    loaded, resolved, _ = load_checkpoint_model(str(path), 5)
    assert resolved.config["has_VAP"] is True and resolved.config["num_segments"] == segments
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
