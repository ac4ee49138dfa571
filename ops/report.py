"""Evaluation results people can look at: the per-class table, the confusion picture and ``report.html``.

``test_models.py`` writes, beside ``metrics.json``, ``scores.npz`` and
``confusion_matrix.csv``:

* ``per_class.csv`` -- per class: precision, recall, F1 and support
  (scikit-learn's ``precision_recall_fscore_support``) and the class accuracy
  (its recall: the share of its videos predicted as it, the figure averaged by
  the mean class accuracy), sorted from the worst accuracy up;
* ``confusion.png`` -- the row-normalised confusion matrix with class names on
  both axes. Beyond :data:`CONFUSION_TOP_N` classes only the classes most
  involved in confusions are drawn; either way the classes are ordered so that
  the ones confused with each other sit side by side (a mirror pair of
  Something-Something shows as a 2x2 block on the diagonal);
* ``report.html`` -- one self-contained page (pictures embedded as data URIs,
  no script or style from the network, opens from disk): the metrics, the
  sortable per-class table, the confusion picture, the most confused pairs
  with their counts and example videos, and for an ensemble every model's
  figures beside the fused ones.

Shapes: ``C`` classes; a confusion matrix is ``int [C, C]``, rows the true
class, columns the predicted one.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ops.files import atomic_write, write_text_atomic
from ops.pictures import require_matplotlib

logger = logging.getLogger(__name__)

#: Largest class count drawn in full in confusion.png; beyond it, the classes most involved in confusions.
CONFUSION_TOP_N = 40
#: Confused pairs listed in the report.
TOP_PAIRS = 20
#: Example videos shown per confused pair.
EXAMPLES_PER_PAIR = 3
#: Class names longer than this are shortened on the picture's axes (the table keeps them whole).
NAME_CHARS = 48

PER_CLASS_FIELDS = ("class", "name", "accuracy", "precision", "recall", "f1", "support", "predicted")


def class_names(categories: Sequence[str] | None, num_class: int) -> list[str]:
    """The name of each class: the category file's, else ``class <i>`` (also for classes it lacks)."""
    names = list(categories or [])[:num_class]
    return names + [f"class {i}" for i in range(len(names), num_class)]


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a class without videos stays all zeros)."""
    counts = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(confusion, counts, out=np.zeros(confusion.shape, np.float64), where=counts > 0)


# --------------------------------------------------------------------------- the per-class table


def per_class_rows(confusion: np.ndarray, names: Sequence[str]) -> list[dict]:
    """One dict per class (:data:`PER_CLASS_FIELDS`), sorted by accuracy, worst first (ties: class order).

    Precision, recall and F1 are scikit-learn's (``zero_division=0``), in percent;
    the accuracy of a class is its recall. Classes without videos get ``None``
    for accuracy and recall and sort last.
    """
    from sklearn.metrics import precision_recall_fscore_support

    num_class = confusion.shape[0]
    # The matrix stands for its videos: rebuild (label, prediction) pairs with weights, no per-video data needed.
    labels, predictions = np.nonzero(confusion)
    weights = confusion[labels, predictions]
    if len(labels):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predictions, labels=np.arange(num_class), sample_weight=weights, zero_division=0)
    else:
        precision = recall = f1 = np.zeros(num_class)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    rows = []
    for c in range(num_class):
        present = support[c] > 0
        rows.append({
            "class": c, "name": names[c],
            "accuracy": 100.0 * recall[c] if present else None,
            "precision": 100.0 * precision[c],
            "recall": 100.0 * recall[c] if present else None,
            "f1": 100.0 * f1[c],
            "support": int(support[c]), "predicted": int(predicted[c]),
        })
    rows.sort(key=lambda r: (r["accuracy"] is None, r["accuracy"] if r["accuracy"] is not None else 0.0, r["class"]))
    return rows


def per_class_csv(rows: Sequence[dict], extra: Sequence[str] = ()) -> str:
    """The table as CSV text (percentages with two decimals; empty where undefined)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    fields = [*PER_CLASS_FIELDS, *extra]
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else f"{row[k]:.2f}" if isinstance(row[k], float) else row[k]
                         for k in fields])
    return text.getvalue()


# --------------------------------------------------------------------------- confusions


def confused_pairs(confusion: np.ndarray, top: int = TOP_PAIRS) -> list[tuple[int, int, int]]:
    """The ``top`` most frequent mistakes ``(true class, predicted class, videos)``, most first."""
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    counts = off[true, pred]
    order = np.lexsort((pred, true, -counts))[:top]
    return [(int(true[i]), int(pred[i]), int(counts[i])) for i in order]


def pair_examples(labels: np.ndarray, predicted: np.ndarray, indices: np.ndarray, video_paths: Sequence[str],
                  true: int, pred: int, limit: int = EXAMPLES_PER_PAIR) -> list[str]:
    """The first ``limit`` videos of class ``true`` predicted as ``pred`` (paths of the list file)."""
    hits = np.flatnonzero((labels == true) & (predicted == pred))[:limit]
    return [video_paths[int(indices[i])] for i in hits]


def confusion_order(confusion: np.ndarray, top_n: int = CONFUSION_TOP_N) -> np.ndarray:
    """The classes to draw and their order: confused classes side by side.

    Up to ``top_n`` classes: all of them when there are no more, else the
    classes of the most confused pairs (row-normalised rates of both
    directions summed), both of each pair, then those most involved overall. They are chained greedily: start from the most confused pair, then
    always take the remaining class most confused with the last one (both
    directions summed), or, when none is, the most confused class left.
    """
    num_class = confusion.shape[0]
    rates = row_normalised(confusion)
    np.fill_diagonal(rates, 0.0)
    mutual = rates + rates.T
    involvement = mutual.sum(axis=1)
    if num_class <= top_n:
        chosen = list(range(num_class))
    else:  # both classes of the most confused pairs first, then the classes most involved overall
        upper = np.triu(mutual, 1)
        i, j = np.nonzero(upper)
        chosen = []
        for k in np.lexsort((j, i, -upper[i, j])):
            for c in (int(i[k]), int(j[k])):
                if c not in chosen and len(chosen) < top_n:
                    chosen.append(c)
            if len(chosen) >= top_n:
                break
        for c in np.argsort(-involvement, kind="stable"):
            if len(chosen) >= top_n:
                break
            if int(c) not in chosen:
                chosen.append(int(c))
    left = [int(c) for c in sorted(chosen, key=lambda c: (-involvement[c], c))]
    order: list[int] = []
    while left:
        current = left.pop(0)
        order.append(current)
        while left:
            best = max(left, key=lambda c: (mutual[current, c], -left.index(c)))
            if mutual[current, best] <= 0:
                break
            left.remove(best)
            order.append(best)
            current = best
    return np.array(order, dtype=np.int64)


def _short(name: str, limit: int = NAME_CHARS) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def confusion_figure(confusion: np.ndarray, names: Sequence[str], title: str, top_n: int = CONFUSION_TOP_N):
    """A matplotlib Figure (no pyplot, Agg) of the row-normalised matrix of :func:`confusion_order`'s classes."""
    require_matplotlib("the confusion matrix picture")
    from matplotlib.figure import Figure

    order = confusion_order(confusion, top_n)
    shown = row_normalised(confusion)[np.ix_(order, order)]
    n = len(order)
    labels = [f"{_short(names[c])} ({c})" for c in order]
    longest = max((len(label) for label in labels), default=8)
    cell = 0.26 if n > 12 else 0.45
    margin = 0.8 + 0.065 * longest
    side = max(3.0, n * cell)
    fig = Figure(figsize=(side + margin + 1.2, side + margin + 0.6), dpi=100)
    ax = fig.add_axes((margin / (side + margin + 1.2), margin / (side + margin + 0.6),
                       side / (side + margin + 1.2), side / (side + margin + 0.6)))
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 7 if n > 12 else 9
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    ax.set_title(title, fontsize=10, loc="left")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if confusion[order[i], order[j]]:
                    ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.6 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class's videos", fontsize=8)
    return fig


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def figure_array(fig) -> np.ndarray:
    """The figure as ``uint8 [H, W, 3]`` (for TensorBoard)."""
    from PIL import Image

    with Image.open(io.BytesIO(figure_png(fig))) as image:  # cropped to the drawing, as the PNG
        return np.asarray(image.convert("RGB"))


def confusion_png(confusion: np.ndarray, names: Sequence[str], title: str, top_n: int = CONFUSION_TOP_N) -> bytes:
    return figure_png(confusion_figure(confusion, names, title, top_n))


def confusion_image(confusion: np.ndarray, names: Sequence[str], title: str,
                    top_n: int = CONFUSION_TOP_N) -> np.ndarray:
    """``uint8 [H, W, 3]`` of :func:`confusion_figure` (TensorBoard's image)."""
    return figure_array(confusion_figure(confusion, names, title, top_n))


# --------------------------------------------------------------------------- the report


@dataclass
class ModelResult:
    """One column of the report: a model (or the fused ensemble) and its per-video results."""

    name: str
    metrics: dict
    confusion: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(axis=1) if len(self.scores) else np.zeros(0, np.int64)


@dataclass
class ReportInputs:
    """What :func:`write_report` draws: the fused result, each member (for an ensemble) and context."""

    title: str
    fused: ModelResult
    names: list[str]
    video_paths: Sequence[str]
    members: list[ModelResult] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    #: Folder the list's video paths are relative to (links to the example videos); None: no links.
    root_path: str | None = None


def display_names(paths: Sequence[str]) -> list[str]:
    """Short, distinct names for checkpoint files: the file name, with parent folders added until unique."""
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    depth = 1
    while True:
        names = [os.sep.join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            return names
        depth += 1


def _percent(value) -> str:
    return "" if value is None else f"{value:.2f}"


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.t,th.t{text-align:left}th{background:#f1f3f6;position:sticky;top:0}
th.s{cursor:pointer}th.s:after{content:' \\2195';color:#999}
.metrics td:first-child{text-align:left;font-weight:600}
.row{display:flex;gap:16px;align-items:flex-start}.row figure{flex:0 1 auto;min-width:0}
figure{margin:0}figcaption{font-size:13px;color:#555}img{max-width:100%;height:auto}
.note{color:#666;font-size:13px}code{font-size:12px}
"""

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th.s').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v !== undefined ? a.cells[col].dataset.v : a.cells[col].textContent;
        var y = b.cells[col].dataset.v !== undefined ? b.cells[col].dataset.v : b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y), r;
        if (!isNaN(nx) && !isNaN(ny)) r = nx - ny; else if (isNaN(nx) !== isNaN(ny)) r = isNaN(nx) ? 1 : -1;
        else r = String(x).localeCompare(String(y));
        return up ? r : -r;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _metrics_table(results: Sequence[ModelResult]) -> str:
    keys = (("top-1 (%)", "top1"), ("top-5 (%)", "top5"), ("mean class accuracy (%)", "mean_class_accuracy"),
            ("videos", "num_videos"), ("left out as unreadable", "num_skipped"))
    head = "".join(f"<th>{html.escape(r.name)}</th>" for r in results)
    body = []
    for label, key in keys:
        cells = []
        for r in results:
            value = r.metrics.get(key)
            cells.append(f"<td>{_percent(value) if isinstance(value, float) else value if value is not None else ''}"
                         f"</td>")
        body.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    return (f'<table class="metrics" id="metrics"><thead><tr><th class="t">figure</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _class_table(rows: Sequence[dict], member_rows: Sequence[tuple[str, dict[int, dict]]]) -> str:
    columns = [("class", "class", False), ("name", "name", True), ("accuracy (%)", "accuracy", False),
               ("precision (%)", "precision", False), ("recall (%)", "recall", False), ("F1 (%)", "f1", False),
               ("support", "support", False), ("predicted", "predicted", False)]
    head = "".join(f'<th class="s{" t" if text else ""}">{label}</th>' for label, _, text in columns)
    head += "".join(f'<th class="s">accuracy (%): {html.escape(name)}</th>' for name, _ in member_rows)
    body = []
    for row in rows:
        cells = []
        for _, key, text in columns:
            value = row[key]
            shown = _percent(value) if isinstance(value, float) or value is None else html.escape(str(value))
            cells.append(f'<td class="t">{shown}</td>' if text else f"<td>{shown}</td>")
        for _, by_class in member_rows:
            cells.append(f"<td>{_percent(by_class[row['class']]['accuracy'])}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="sortable" id="per-class"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _pairs_table(inputs: ReportInputs) -> str:
    fused = inputs.fused
    pairs = confused_pairs(fused.confusion)
    if not pairs:
        return '<p class="note">No video was misclassified.</p>'
    support = fused.confusion.sum(axis=1)
    body = []
    for true, pred, count in pairs:
        examples = pair_examples(fused.labels, fused.predicted, fused.indices, inputs.video_paths, true, pred)
        links = []
        for path in examples:
            text = html.escape(path)
            if inputs.root_path is not None:
                uri = Path(os.path.abspath(os.path.join(inputs.root_path, path))).as_uri()
                links.append(f'<a href="{html.escape(uri)}"><code>{text}</code></a>')
            else:
                links.append(f"<code>{text}</code>")
        share = 100.0 * count / support[true] if support[true] else 0.0
        body.append(f'<tr><td class="t">{html.escape(inputs.names[true])} ({true})</td>'
                    f'<td class="t">{html.escape(inputs.names[pred])} ({pred})</td><td>{count}</td>'
                    f'<td>{share:.1f}</td><td class="t">{"<br>".join(links)}</td></tr>')
    return ('<table id="pairs"><thead><tr><th class="t">true class</th><th class="t">predicted as</th>'
            '<th>videos</th><th>share of the true class (%)</th><th class="t">example videos</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def render_report(inputs: ReportInputs, confusion_pngs: Sequence[tuple[str, bytes]], rows: Sequence[dict]) -> str:
    """The HTML page (a string); ``confusion_pngs`` are ``(caption, png)`` shown side by side."""
    results = [*inputs.members, inputs.fused] if inputs.members else [inputs.fused]
    member_rows = [(m.name, {r["class"]: r for r in per_class_rows(m.confusion, inputs.names)})
                   for m in inputs.members]
    details = "".join(f'<tr><td class="t">{html.escape(str(k))}</td><td class="t">{html.escape(str(v))}</td></tr>'
                      for k, v in inputs.details.items())
    figures = "".join(f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
                      for caption, png in confusion_pngs)
    n = len(inputs.names)
    drawn = min(n, CONFUSION_TOP_N)
    which = (f"all {n} classes" if n <= CONFUSION_TOP_N else
             f"the {drawn} of {n} classes most involved in confusions")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(inputs.title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(inputs.title)}</h1>
<p class="note">Written by test_models.py on {time.strftime('%Y-%m-%d %H:%M:%S')}. Beside this page:
metrics.json, scores.npz, confusion_matrix.csv (counts), per_class.csv, confusion.png.</p>
<h2>Metrics</h2>
{_metrics_table(results)}
<table class="metrics" style="margin-top:12px"><tbody>{details}</tbody></table>
<h2>Confusion matrix</h2>
<p class="note">Row-normalised (each row: where the videos of that true class went), {which}, ordered so that
classes confused with each other sit side by side. The counts of every class are in confusion_matrix.csv.</p>
<div class="row" id="confusion">{figures}</div>
<h2>Most confused pairs</h2>
{_pairs_table(inputs)}
<h2>Per class</h2>
<p class="note">Sorted by accuracy, worst first; click a column's title to sort by it. Accuracy is the class's
recall (the share of its videos predicted as it); precision, recall and F1 are scikit-learn's.</p>
{_class_table(rows, member_rows)}
<script>{_SORT_SCRIPT}</script>
</body></html>
"""


def write_report(file, inputs: ReportInputs) -> dict[str, str]:
    """Write ``per_class.csv``, ``confusion.png`` and ``report.html`` where ``file(name)`` says
    (e.g. :meth:`ops.evaluation.OutputFolder.file`); returns their paths by name.

    Without matplotlib the table and the page are still written (with a note instead of the
    pictures) and a warning names the package.
    """
    start = time.perf_counter()
    rows = per_class_rows(inputs.fused.confusion, inputs.names)
    extra = [f"accuracy: {m.name}" for m in inputs.members]
    table_rows = rows
    if inputs.members:
        by_member = [{r["class"]: r for r in per_class_rows(m.confusion, inputs.names)} for m in inputs.members]
        table_rows = [{**row, **{key: member[row["class"]]["accuracy"] for key, member in zip(extra, by_member)}}
                      for row in rows]
    paths = {name: file(name) for name in ("per_class.csv", "confusion.png", "report.html")}
    write_text_atomic(paths["per_class.csv"], per_class_csv(table_rows, extra))
    pngs: list[tuple[str, bytes]] = []
    try:
        for result in [*inputs.members, inputs.fused]:
            caption = result.name if inputs.members else inputs.title
            pngs.append((caption, confusion_png(result.confusion, inputs.names, caption)))
    except ImportError as err:
        logger.warning("report.html and confusion.png without pictures: %s", err)
        pngs = []
        del paths["confusion.png"]
    else:
        fused_png = pngs[-1][1]
        atomic_write(paths["confusion.png"], lambda f: f.write(fused_png))
    write_text_atomic(paths["report.html"], render_report(inputs, pngs, rows))
    logger.info("report written in %.1f s: %s", time.perf_counter() - start, ", ".join(sorted(paths)))
    return paths
