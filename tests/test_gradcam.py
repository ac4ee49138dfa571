"""Grad-CAM (ops/pictures.py) and its column in tools/visualize_pa.py, for Lite, RGB and PA models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ops.inference import load_checkpoint_model
from ops.pictures import GridLayout, grad_cam, overlay_cams
from tests.test_demo import SEGMENTS, SIZE, save_random_checkpoint, write_clip
from tools import visualize_pa as viz


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    mp4, frames = write_clip(tmp_path_factory.mktemp("clip"), class_index=2)
    return {"mp4": mp4, "frames": frames}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return {m: save_random_checkpoint(folder / f"{m}.pth.tar", modality=m, seed=3) for m in ("Lite", "RGB", "PA")}


def expected_cam(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM written out here: layer4's output kept with retain_grad, the class score's gradient
    averaged over space as channel weights, weighted sum over channels, ReLU, bilinear to the input
    size, divided by the clip's maximum."""
    kept = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        kept["a"] = output

    handle = model.base_model.layer4.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            model.zero_grad()
            model(x[None])[0, target].backward()
    finally:
        handle.remove()
    a, g = kept["a"].detach(), kept["a"].grad
    cam = torch.clamp((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(dim=1), min=0)
    cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0].numpy()
    return cam / cam.max()


@pytest.mark.parametrize("modality", ["Lite", "RGB", "PA"])
def test_grad_cam_is_the_gradient_weighted_last_stage_per_segment(checkpoints, modality):
    model, _, _ = load_checkpoint_model(str(checkpoints[modality]))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SEGMENTS * model.new_length * 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        scores = model(x[None])[0]
    cam = grad_cam(model, x)
    assert all(p.grad is None for p in model.parameters())  # nothing left to a later training step
    assert cam.maps.shape == (SEGMENTS, SIZE, SIZE) and cam.maps.dtype == np.float32
    assert cam.predicted == cam.target == int(scores.argmax())
    np.testing.assert_allclose(cam.scores, scores.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cam.maps, expected_cam(model, x, cam.target), rtol=1e-4, atol=1e-5)
    assert cam.maps.min() >= 0 and cam.maps.max() == pytest.approx(1.0)
    other = (cam.predicted + 1) % scores.shape[0]
    given = grad_cam(model, x, other)
    assert (given.target, given.predicted) == (other, cam.predicted)
    np.testing.assert_allclose(given.maps, expected_cam(model, x, other), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="class 99 is not among"):
        grad_cam(model, x, 99)


def test_overlay_blends_the_frame_with_the_jet_colour_of_its_map():
    frame = np.full((2, 2, 3), 100, np.uint8)
    maps = np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32)
    out = overlay_cams([frame], maps)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    # jet runs from dark blue (0) to dark red (1): half the frame's grey plus half the colour.
    blue, red = out[0, 0, 0].astype(int), out[0, 0, 1].astype(int)
    assert blue[2] > blue[0] + 50 and red[0] > red[2] + 50
    assert abs(blue[0] - 50) <= 2 and abs(red[2] - 50) <= 2


@pytest.mark.parametrize("modality", ["Lite", "RGB", "PA"])
def test_visualize_pa_draws_a_grad_cam_column_beside_the_pa_maps(tmp_path, clip, checkpoints, modality):
    out = tmp_path / "cam.png"
    image = viz.visualize(str(clip["mp4"]), str(out), weights=str(checkpoints[modality]), scale=1)
    groups = 1 if modality == "RGB" else 2  # untrained PA, plus the checkpoint's own PA for PA and Lite
    layout = GridLayout(rows=SEGMENTS, frames=4, maps=3, tile_w=SIZE, tile_h=SIZE, groups=groups, cams=1)
    with Image.open(out) as png:
        assert png.size == image.size == layout.size
        pixels = np.asarray(png.convert("RGB")).astype(int)
    for row in range(SEGMENTS):
        fx, fy = layout.origin(row, 0)
        cx, cy = layout.origin(row, layout.columns - 1)
        frame = pixels[fy:fy + SIZE, fx:fx + SIZE]
        cam = pixels[cy:cy + SIZE, cx:cx + SIZE]
        assert np.abs(cam - frame).mean() > 5  # the overlay changes the frame it is drawn on


def test_grad_cam_needs_the_checkpoints_segment_count(tmp_path, clip, checkpoints, caplog):
    out = tmp_path / "cam.png"
    argv = [str(clip["mp4"]), "--out", str(out), "--weights", str(checkpoints["Lite"]), "--segments", "2"]
    assert viz.main(viz.get_args_parser().parse_args([*argv, "--gradcam"])) == 2
    assert "Grad-CAM needs the checkpoint's 4 segments" in caplog.text and not out.exists()
    assert viz.main(viz.get_args_parser().parse_args(argv)) == 0  # without --gradcam: drawn without it
    with Image.open(out) as png:
        assert png.size == GridLayout(rows=2, frames=4, maps=3, tile_w=96, tile_h=96, groups=2).size
