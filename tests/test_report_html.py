"""The evaluation report (ops/report.py, written by test_models.py): per_class.csv, confusion.png and
report.html, checked by value and, where Chromium is installed, rendered in a headless browser."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ops.report import (
    ModelResult,
    ReportInputs,
    confused_pairs,
    confusion_order,
    display_names,
    pair_examples,
    per_class_rows,
    write_report,
)
from tests.eval_support import CATEGORIES, make_dataset, run_eval, save_ours, tiny_model  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
#: The issue's requirement: the page of a 174-class evaluation loads in under 2 s.
LOAD_LIMIT_MS = 2000


# --------------------------------------------------------------------------- values


def test_per_class_table_is_precision_recall_f1_support_sorted_by_accuracy():
    confusion = np.array([[3, 1, 0],     # class 0: 3 of 4 right
                          [0, 1, 1],     # class 1: 1 of 2 right
                          [0, 0, 0]])    # class 2: no video, predicted once
    rows = per_class_rows(confusion, ["a", "b", "c"])
    assert [r["class"] for r in rows] == [1, 0, 2]  # worst first; a class without videos last
    by_class = {r["class"]: r for r in rows}
    # precision = right / predicted as the class, recall = right / videos of the class
    assert by_class[0]["precision"] == pytest.approx(100 * 3 / 3)
    assert by_class[0]["recall"] == by_class[0]["accuracy"] == pytest.approx(100 * 3 / 4)
    assert by_class[0]["f1"] == pytest.approx(100 * 2 * 1.0 * 0.75 / 1.75)
    assert by_class[1]["precision"] == pytest.approx(100 * 1 / 2) and by_class[1]["recall"] == pytest.approx(50)
    assert (by_class[0]["support"], by_class[1]["support"], by_class[2]["support"]) == (4, 2, 0)
    assert by_class[2]["accuracy"] is None and by_class[2]["precision"] == 0 and by_class[2]["predicted"] == 1


def test_most_confused_pairs_with_example_videos():
    confusion = np.array([[5, 2, 0], [4, 1, 0], [0, 1, 3]])
    assert confused_pairs(confusion) == [(1, 0, 4), (0, 1, 2), (2, 1, 1)]
    labels = np.array([1, 1, 0, 1])
    predicted = np.array([0, 1, 1, 0])
    indices = np.array([10, 11, 12, 13])
    paths = [f"video{i}" for i in range(14)]
    assert pair_examples(labels, predicted, indices, paths, true=1, pred=0) == ["video10", "video13"]


def test_the_confusion_order_puts_mirror_pairs_side_by_side_and_keeps_the_top_n():
    # 8 classes; the pairs (5, 2) and (0, 7) are confused with each other, the rest is right.
    confusion = np.eye(8, dtype=np.int64) * 10
    for a, b, n in ((5, 2, 6), (2, 5, 5), (0, 7, 3), (7, 0, 2)):
        confusion[a, a] -= n
        confusion[a, b] = n
    order = confusion_order(confusion).tolist()
    assert sorted(order) == list(range(8))
    assert abs(order.index(5) - order.index(2)) == 1 and abs(order.index(0) - order.index(7)) == 1
    assert order[:2] in ([5, 2], [2, 5])  # the most confused pair first
    assert sorted(confusion_order(confusion, top_n=4).tolist()) == [0, 2, 5, 7]


def test_checkpoints_of_the_same_file_name_get_their_folders_to_tell_them_apart():
    assert display_names(["runs/tsm/ckpt.best.pth.tar", "runs/pa/ckpt.best.pth.tar"]) == \
        ["tsm/ckpt.best.pth.tar", "pa/ckpt.best.pth.tar"]
    assert display_names(["/x/rgb.pth.tar", "/y/lite.pth.tar"]) == ["rgb.pth.tar", "lite.pth.tar"]


def mirror_pair_evaluation(num_class: int = 174, per_class: int = 20, seed: int = 0) -> ModelResult:
    """Scores of a made-up 174-class evaluation: a third of each class taken for its mirror, some noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_class), per_class)
    predicted = labels.copy()
    flip = rng.random(len(labels)) < 0.3
    predicted[flip] = labels[flip] ^ 1
    noise = rng.random(len(labels)) < 0.05
    predicted[noise] = rng.integers(0, num_class, noise.sum())
    scores = np.eye(num_class, dtype=np.float32)[predicted]
    confusion = np.zeros((num_class, num_class), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    metrics = {"top1": 100.0 * (predicted == labels).mean(), "top5": 100.0, "mean_class_accuracy": 60.0,
               "num_videos": len(labels), "num_skipped": 0}
    return ModelResult("made-up", metrics, confusion, np.arange(len(labels)), scores, labels)


@pytest.fixture(scope="module")
def report_174(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    fused = mirror_pair_evaluation()
    names = [f"Pushing something from {'left to right' if c % 2 else 'right to left'} #{c}" for c in range(174)]
    paths = write_report(lambda name: str(folder / name), ReportInputs(
        "something: made-up 174 classes", fused, names, [f"videos/{i}" for i in range(len(fused.labels))],
        details={"weights": "made-up.pth.tar"}, root_path=str(folder)))
    return folder, paths, fused


def test_report_files_of_a_174_class_evaluation(report_174):
    folder, paths, fused = report_174
    assert sorted(Path(p).name for p in paths.values()) == ["confusion.png", "per_class.csv", "report.html"]
    with open(folder / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 174 and list(rows[0]) == ["class", "name", "accuracy", "precision", "recall", "f1",
                                                  "support", "predicted"]
    accuracies = [float(r["accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies)
    right = np.diag(fused.confusion)
    assert float(rows[0]["accuracy"]) == pytest.approx(100 * right.min() / 20, abs=0.01)
    with Image.open(folder / "confusion.png") as png:
        assert png.format == "PNG" and min(png.size) > 800  # 40 classes with their names: a large picture
    page = (folder / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing from the network
    assert page.count("data:image/png;base64,") == 1 and "<script src" not in page
    assert len(re.findall(r"<tr>", page.split('id="per-class"')[1])) == 175  # header + 174 classes


def probe_page(html: str) -> str:
    """The page plus a script that, after the load event, writes what rendered into <pre id="probe">:
    the page's own load time (navigation timing), images and broken images, table rows."""
    probe = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var nav = performance.getEntriesByType('navigation')[0];
  var images = Array.prototype.slice.call(document.images);
  var result = {load_ms: nav.loadEventEnd - nav.startTime, images: images.length,
    broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
    widths: images.map(function (i) { return i.naturalWidth; }),
    class_rows: document.querySelectorAll('#per-class tbody tr').length,
    pair_rows: document.querySelectorAll('#pairs tbody tr').length,
    metrics: document.getElementById('metrics').innerText};
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
}, 0); });
</script>"""
    return html.replace("</body>", probe + "</body>")


def chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless render check needs Chromium at /usr/bin/chromium "
                                                  "(apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium_with_its_images_in_under_2_s(report_174, tmp_path):
    folder, _, fused = report_174
    probed = folder / "probe.html"  # beside the report, so a relative reference would resolve the same way
    probed.write_text(probe_page((folder / "report.html").read_text()))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri()).stdout
    probed.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not finish loading in Chromium: {dom[-500:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    print(f"report.html (174 classes) loaded in Chromium in {result['load_ms']:.0f} ms")
    assert result["images"] == 1 and result["broken"] == 0 and result["widths"][0] > 800
    assert result["class_rows"] == 174 and result["pair_rows"] == 20
    assert f"{fused.metrics['top1']:.2f}" in result["metrics"] and "top-1" in result["metrics"]
    assert 0 < result["load_ms"] < LOAD_LIMIT_MS

    shot = tmp_path / "report.png"
    chromium("--window-size=1400,1600", f"--screenshot={shot}", (folder / "report.html").as_uri())
    with Image.open(shot) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1600, 1400)
    assert pixels.std() > 20  # text, tables and the picture, not a blank page
    blue = (pixels[..., 2] - pixels[..., 0]) > 60  # the Blues cells of the confusion matrix
    assert blue.sum() > 500


# --------------------------------------------------------------------------- test_models.py writes it


def test_test_models_writes_the_report_with_every_model_beside_the_fused_one(tmp_path):
    root = make_dataset(tmp_path / "data", 6)
    rgb = save_ours(tmp_path / "rgb.pth.tar", tiny_model("RGB", seed=1))
    lite = save_ours(tmp_path / "lite.pth.tar", tiny_model("Lite", seed=2))
    out = tmp_path / "out"
    metrics, saved = run_eval(root, [rgb, lite], out)
    assert {"report.html", "per_class.csv", "confusion.png"} <= {p.name for p in out.iterdir()}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # rgb, lite and fused side by side
    assert all(name in page for name in ("rgb.pth.tar", "lite.pth.tar", "fused", *CATEGORIES))
    assert f"{metrics['top1']:.2f}" in page
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in sorted(rows, key=lambda r: int(r["class"]))] == CATEGORIES
    assert "accuracy: rgb.pth.tar" in rows[0] and "accuracy: lite.pth.tar" in rows[0]
    # The fused accuracy per class, from the scores test_models.py saved.
    predicted = saved["scores"].argmax(1)
    for row in rows:
        c = int(row["class"])
        mine = saved["labels"] == c
        assert float(row["accuracy"]) == pytest.approx(100 * (predicted[mine] == c).mean(), abs=0.01)
    with Image.open(io.BytesIO((out / "confusion.png").read_bytes())) as png:
        assert png.format == "PNG"
