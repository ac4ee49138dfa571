"""tools/plot_run.py: training curves of main.py run folders, several runs overlaid, into one PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import plot_run


def write_run(folder: Path, epochs: int = 3, steps: int = 4, offset: float = 0.0, train: bool = True) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for e in range(epochs):
        record = {"epoch": e, "loss": 2.0 - 0.5 * e + offset, "top1": 20.0 * (e + 1), "top5": 30.0 * (e + 1),
                  "count": 10}
        if train:
            record.update({"train_loss": 2.2 - 0.5 * e, "train_top1": 15.0 * (e + 1), "train_top5": 25.0 * (e + 1),
                           "lr": 0.01 / (e + 1)})
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows = ["epoch\tstep\tloss\tlr"]
    rows += [f"{e}\t{s}\t{2.5 - 0.1 * (e * steps + s)!r}\t{0.01 / (e + 1)!r}" for e in range(epochs) for s in range(steps)]
    (folder / "steps.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_reads_the_validation_training_and_step_records(tmp_path):
    folder = write_run(tmp_path / "a")
    with open(folder / "metrics.jsonl", "a") as f:  # a resumed run wrote epoch 1 again: the last line wins
        f.write(json.dumps({"epoch": 1, "loss": 9.0, "top1": 1.0, "top5": 2.0, "count": 10}) + "\n")
    run = plot_run.read_run(str(folder))
    assert run.name == "a"
    np.testing.assert_array_equal(run.epochs, [1, 2, 3])  # the validation after epoch e is drawn at e + 1
    np.testing.assert_array_equal(run.val["top1"], [20.0, 1.0, 60.0])
    assert np.isnan(run.train["top1"][1]) and run.train["top1"][2] == 45.0
    assert len(run.step_x) == 12 and run.step_x[0] == pytest.approx(0.25) and run.step_x[-1] == pytest.approx(3.0)
    assert run.step_loss[-1] == pytest.approx(2.5 - 1.1) and run.step_lr[0] == pytest.approx(0.01)
    np.testing.assert_allclose(plot_run.running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_several_runs_are_overlaid_in_one_png_with_four_panels(tmp_path):
    folders = [str(write_run(tmp_path / name, offset=i)) for i, name in enumerate(("tsn", "tsm", "lite"))]
    folders.append(str(write_run(tmp_path / "old", train=False)))  # written before the training figures
    runs = [plot_run.read_run(f) for f in folders]
    fig = plot_run.draw(runs)
    loss, top1, top5, lr = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss (cross-entropy, log scale)", "top-1 accuracy (%)",
                                                   "top-5 accuracy (%)", "learning rate"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    # loss: training (from steps.tsv) and validation of each run; top-k: training where recorded, validation.
    assert len(loss.lines) == 8 and len(top1.lines) == 7 and len(top5.lines) == 7 and len(lr.lines) == 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["tsn", "tsm", "lite", "old", "validation", "training"]

    out = tmp_path / "pictures" / "curves.png"
    status = plot_run.main(plot_run.get_args_parser().parse_args([*folders, "--out", str(out)]))
    assert status == 0
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (1200, 850)
        assert np.asarray(png.convert("RGB")).std() > 10
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]


def test_a_folder_without_metrics_is_refused_naming_it(tmp_path, caplog):
    out = tmp_path / "curves.png"
    status = plot_run.main(plot_run.get_args_parser().parse_args([str(tmp_path / "nothing"), "--out", str(out)]))
    assert status == 2 and "has no metrics.jsonl" in caplog.text and str(tmp_path / "nothing") in caplog.text
    assert not out.exists()
