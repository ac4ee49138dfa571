"""TensorBoard pictures at each validation (confusion matrix, PA maps of validation clips) and the
epoch's training figures in metrics.jsonl (what tools/plot_run.py draws)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
from ops.pictures import GridLayout
from ops.train_args import get_args_parser
from ops.validation_extras import ConfusionCounter
from tests.train_support import make_tiny_dataset, train_argv


def read_events(folder: Path) -> list:
    """Every event of the tensorboardX files in ``folder`` (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            events.append(event_pb2.Event.FromString(payload))
    return events


def images_by_tag(events) -> dict[str, list[tuple[int, np.ndarray]]]:
    found: dict[str, list] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("image"):
                with Image.open(io.BytesIO(value.image.encoded_image_string)) as png:
                    found.setdefault(value.tag, []).append((event.step, np.asarray(png.convert("RGB"))))
    return found


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tb")
    data = make_tiny_dataset(tmp / "data", n_train=4, n_val=3, frames=8)
    argv = train_argv(data, tmp / "out", "--epochs", "1", "--tensorboard", "--arch", "resnet18", modality="Lite")
    main.main(get_args_parser().parse_args(argv))
    return tmp / "out" / "log" / "run"


def test_each_validation_writes_the_confusion_matrix_and_pa_maps_of_two_clips(lite_run):
    images = images_by_tag(read_events(lite_run))
    assert set(images) == {"val/confusion_matrix", "val/pa_maps/0", "val/pa_maps/1"}
    (step, confusion), = images["val/confusion_matrix"]
    assert step == 0 and confusion.ndim == 3 and confusion.shape[2] == 3
    assert confusion.shape[0] > 150 and confusion.shape[1] > 150
    # The Blues colour scale is there (a blue cell), not a blank canvas.
    assert ((confusion[..., 2].astype(int) - confusion[..., 0]) > 60).any()
    # The picture of tools/visualize_pa.py: 2 segments of 4 frames, 3 maps, 32-pixel frames drawn 3x.
    layout = GridLayout(rows=2, frames=4, maps=3, tile_w=96, tile_h=96, groups=1)
    for tag in ("val/pa_maps/0", "val/pa_maps/1"):
        (step, picture), = images[tag]
        assert step == 0 and picture.shape == (layout.size[1], layout.size[0], 3)
        x, y = layout.origin(0, layout.frames)
        assert picture[y:y + layout.tile_h, x:x + layout.tile_w].std() > 0  # a drawn map, not background


def test_metrics_jsonl_holds_the_epochs_training_figures_and_learning_rate(lite_run):
    record, = [json.loads(line) for line in (lite_run / "metrics.jsonl").read_text().splitlines()]
    assert {"epoch", "loss", "top1", "top5", "count", "train_loss", "train_top1", "train_top5", "lr"} <= set(record)
    assert record["epoch"] == 0 and record["count"] == 3
    assert np.isfinite(record["train_loss"]) and 0 <= record["train_top1"] <= record["train_top5"] <= 100
    steps = (lite_run / "steps.tsv").read_text().splitlines()
    assert record["lr"] == pytest.approx(float(steps[-1].split("\t")[3]))


def test_confusion_counter_counts_rows_true_columns_predicted():
    counter = ConfusionCounter(3)
    counter(torch.tensor([[9.0, 0, 0], [0, 9, 0], [0, 9, 0]]), torch.tensor([0, 1, 2]))
    counter(torch.tensor([[0.0, 0, 9]]), torch.tensor([0]))
    expected = np.array([[1, 0, 1],
                         [0, 1, 0],
                         [0, 1, 0]])
    np.testing.assert_array_equal(counter.total(torch.device("cpu"), distributed=False), expected)
    assert ConfusionCounter(2).total(torch.device("cpu"), distributed=False).tolist() == [[0, 0], [0, 0]]
