"""What a validation adds besides its figures: the epoch's training figures and TensorBoard pictures.

:func:`train_record` -- the epoch's training loss, top-1 and top-5 (averaged over
the processes: each trains the same number of batches) and the learning rate,
written into the validation's line of ``metrics.jsonl`` (``train_loss``,
``train_top1``, ``train_top5``, ``lr``), which ``tools/plot_run.py`` draws.

Pictures for TensorBoard: the confusion matrix and PA maps of a few clips.

``main.py`` counts the confusion matrix while it validates
(:class:`ConfusionCounter`, fed by :func:`ops.engine.evaluate`'s ``on_batch``),
sums it over the processes (one all-reduce of ``C x C`` counts, on every
process), and the main process draws:

* ``val/confusion_matrix`` -- the picture of ``confusion.png`` (:mod:`ops.report`),
* ``val/pa_maps/<i>``      -- for PA and Lite models, the picture of
  ``tools/visualize_pa.py`` for the first :data:`PA_CLIPS` validation clips,
  drawn with the model's own PA (:func:`ops.pictures.validation_pa_picture`).

A picture that cannot be drawn (matplotlib missing, an unreadable clip) is
skipped with a warning: it never stops the training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: Validation clips whose PA maps go to TensorBoard at each validation.
PA_CLIPS = 2


def train_record(train: dict, lr: float, device: torch.device, distributed: bool) -> dict:
    """``{"train_loss", "train_top1", "train_top5", "lr"}`` of an epoch (a collective under torchrun)."""
    values = torch.tensor([float(train[k]) for k in ("loss", "top1", "top5")], dtype=torch.float64, device=device)
    if distributed:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    loss, top1, top5 = values.tolist()
    return {"train_loss": loss, "train_top1": top1, "train_top5": top5, "lr": float(lr)}


def dataset_class_names(category_file: str | None, num_class: int) -> list[str]:
    """The classes' names from the category file, else numbers (a bad file is warned about, not fatal)."""
    from ops.dataset_config import load_categories
    from ops.report import class_names

    names = None
    if category_file:
        try:
            names = load_categories(category_file)
        except ValueError as err:
            logger.warning("TensorBoard pictures number the classes: %s", err)
    return class_names(names, num_class)


class ConfusionCounter:
    """``[C, C]`` counts (rows: true class, columns: top-1 prediction) of this process's batches."""

    def __init__(self, num_class: int) -> None:
        self.num_class = num_class
        self.counts: torch.Tensor | None = None

    def __call__(self, output: torch.Tensor, labels: torch.Tensor) -> None:
        predicted = output.detach().argmax(dim=1)
        flat = labels.to(predicted.device).long() * self.num_class + predicted
        batch = torch.bincount(flat, minlength=self.num_class ** 2)
        self.counts = batch if self.counts is None else self.counts + batch

    def total(self, device: torch.device, distributed: bool) -> np.ndarray:
        """The counts summed over the processes (a collective: call it on every process)."""
        counts = self.counts if self.counts is not None else torch.zeros(self.num_class ** 2, dtype=torch.long)
        counts = counts.to(device=device, dtype=torch.float64)  # float64: all_reduce on every backend
        if distributed:
            dist.all_reduce(counts)
        return counts.round().long().cpu().numpy().reshape(self.num_class, self.num_class)


def log_validation_pictures(run, epoch: int, confusion: np.ndarray, names: Sequence[str], model: torch.nn.Module,
                            val_set, clips: int = PA_CLIPS) -> None:
    """Draw the pictures into ``run``'s TensorBoard (:class:`ops.run_folder.RunFolder`) at step ``epoch``."""
    if not run.has_tensorboard:
        return
    try:
        from ops.report import confusion_image

        title = f"validation after epoch {epoch}: {int(confusion.sum())} videos, row-normalised"
        run.image("val/confusion_matrix", confusion_image(confusion, names, title), epoch)
    except Exception as err:  # a picture must never stop the training
        logger.warning("TensorBoard confusion matrix skipped: %s: %s", type(err).__name__, err)
    if getattr(model, "PA", None) is None:
        return
    from ops.pictures import validation_pa_picture

    for i in range(min(clips, len(val_set))):
        try:
            x, label = val_set[i]
            name = names[label] if 0 <= label < len(names) else f"class {label}"
            picture = validation_pa_picture(model, x, f"validation clip {i} ({name}), epoch {epoch}: PA of the model")
            if picture is not None:
                run.image(f"val/pa_maps/{i}", np.asarray(picture), epoch)
        except Exception as err:
            logger.warning("TensorBoard PA maps of validation clip %d skipped: %s: %s", i, type(err).__name__, err)
