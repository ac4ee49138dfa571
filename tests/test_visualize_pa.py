"""tools/visualize_pa.py: a PNG grid of frames and the PA maps beside them.

What the picture must show: PA responds where appearance changes between
frames (a moving object's boundaries), not on static background, even with
the untrained N(0, 0.001) weights, once each map is scaled to its own range.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ops import pictures
from tests.test_demo import SIZE, save_random_checkpoint, write_clip
from tools import visualize_pa as viz


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    mp4, frames = write_clip(tmp_path_factory.mktemp("viz"))
    return {"mp4": mp4, "frames": frames}


def moving_square(num_frames: int = 4, size: int = 32, step: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of a white square moving right over a fixed random texture, and the mask of changed pixels."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 120, size=(size, size, 3), dtype=np.uint8)
    frames, changed = [], np.zeros((size, size), bool)
    for t in range(num_frames):
        frame = background.copy()
        frame[12:20, 4 + step * t:12 + step * t] = 255
        frames.append(frame)
    for a, b in zip(frames, frames[1:]):
        changed |= (a != b).any(axis=2)
    return frames, changed


def test_fresh_pa_lights_up_the_moving_boundary_and_not_the_static_background():
    frames, changed = moving_square()
    maps = viz.compute_pa_maps(viz.fresh_pa(4, seed=0), frames)
    assert maps.shape == (1, 3, 32, 32)
    # Pixels further than the 7x7 kernel's reach (3 px) from any change see identical inputs.
    near = torch.nn.functional.max_pool2d(torch.from_numpy(changed)[None, None].float(), 7, 1, 3)[0, 0].numpy() > 0
    for pa_map in maps[0]:
        moving, static = pa_map[changed].mean(), pa_map[~near].mean()
        assert moving > 1000 * static
        shown = pictures.normalize_for_display(pa_map)
        assert shown[changed].mean() > 0.3 and shown[~near].max() < 0.01


def test_writes_a_png_with_one_row_per_segment_of_frames_then_maps(tmp_path, clip):
    out = tmp_path / "pictures" / "pa.png"
    image = viz.visualize(str(clip["mp4"]), str(out), segments=3, scale=2)
    layout = pictures.GridLayout(rows=3, frames=4, maps=3, tile_w=2 * SIZE, tile_h=2 * SIZE)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == image.size == layout.size
        pixels = np.asarray(png)
    # A frame tile holds the video's pixels; a map tile holds colours of the display scale only.
    x, y = layout.origin(0, 0)
    assert pixels[y:y + layout.tile_h, x:x + layout.tile_w].std() > 0
    x, y = layout.origin(0, layout.frames)
    tile = pixels[y:y + layout.tile_h, x:x + layout.tile_w].reshape(-1, 3)
    palette = pictures.colorize(np.linspace(0, 1, 1024)).reshape(-1, 3).astype(int)
    nearest = np.abs(tile[:, None, :].astype(int) - palette[None]).sum(axis=2).min(axis=1)
    assert nearest.max() <= 3
    assert [p.name for p in out.parent.iterdir()] == ["pa.png"]  # no temporary file left behind


def test_draws_a_checkpoints_trained_pa_beside_the_untrained_one(tmp_path, clip):
    lite = save_random_checkpoint(tmp_path / "lite.pth.tar", seed=1)
    pa, name = viz.trained_pa(str(lite))
    checkpoint = torch.load(lite, weights_only=True)
    assert torch.equal(pa.shallow_conv.weight, checkpoint["state_dict"]["PA.shallow_conv.weight"])
    assert "lite.pth.tar" in name and "Lite" in name
    image = viz.visualize(str(clip["frames"]), str(tmp_path / "both.png"), weights=str(lite), segments=2, scale=1)
    assert image.size == pictures.GridLayout(rows=2, frames=4, maps=3, tile_w=SIZE, tile_h=SIZE, groups=2).size
    alone = viz.visualize(str(clip["frames"]), str(tmp_path / "trained.png"), weights=str(lite), segments=2,
                          scale=1, untrained=False)
    assert alone.size == pictures.GridLayout(rows=2, frames=4, maps=3, tile_w=SIZE, tile_h=SIZE, groups=1).size


def test_an_rgb_checkpoint_has_no_pa_to_draw(tmp_path):
    rgb = save_random_checkpoint(tmp_path / "rgb.pth.tar", modality="RGB")
    with pytest.raises(viz.DemoError, match="RGB model: it has no PA"):
        viz.trained_pa(str(rgb))


def test_fresh_pa_is_reproducible_from_its_seed_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b, c = viz.fresh_pa(4, seed=3), viz.fresh_pa(4, seed=3), viz.fresh_pa(4, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.shallow_conv.weight, b.shallow_conv.weight)
    assert not torch.equal(a.shallow_conv.weight, c.shallow_conv.weight)
    assert a.shallow_conv.weight.std().item() == pytest.approx(0.001, rel=0.2)


def test_bad_input_leaves_no_picture(tmp_path, capsys):
    out = tmp_path / "pa.png"
    status = viz.main(viz.get_args_parser().parse_args([str(tmp_path / "missing.mp4"), "--out", str(out)]))
    assert status == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_display_scale_runs_dark_to_bright_and_a_still_map_stays_black():
    ends = pictures.colorize(np.array([[0.0, 1.0]]))
    assert ends[0, 0].sum() < 20 and ends[0, 1].sum() > 600
    assert not pictures.normalize_for_display(np.full((8, 8), 3e-6, np.float32)).any()
