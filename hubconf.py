"""torch.hub entry points: any PAN variant, optionally with a checkpoint file's weights.

    import torch
    model = torch.hub.load("/path/to/this/repo", "pan_lite", source="local", num_class=174, num_segments=8)
    model = torch.hub.load("/path/to/this/repo", "pan_lite", source="local",
                           pretrained="PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar")
    # from GitHub: torch.hub.load("<owner>/<repo>", "pan_rgb", num_class=..., ...)

Keywords are those of :class:`ops.models.PAN`, with the released models'
defaults (TSM shift 1/8 ``blockres``, VAP head, dropout 0.5, 8 segments,
resnet50). ``pretrained`` is the path of a local checkpoint (ours or a
released file): its configuration comes from the file (fields or the released
file name) unless a keyword says otherwise, and its weights are loaded
strictly (a mismatch lists the differing keys). Nothing is downloaded.
``pretrain="imagenet"`` starts the backbone from torchvision's cached
ImageNet weights, as ``main.py`` does.

A model built without ``pretrained`` is returned in training mode, as
torchvision's constructors return theirs; one loaded from a checkpoint in
eval mode, ready for inference.
"""

from ops.inference import load_checkpoint_model as _load_checkpoint_model
from ops.models import PAN as _PAN

dependencies = ["torch", "torchvision"]

#: The released models' constructor arguments (``PAN`` keywords).
_RELEASED = dict(num_class=174, num_segments=8, base_model="resnet50", dropout=0.5, partial_bn=False,
                 is_shift=True, shift_div=8, shift_place="blockres", has_VAP=True, consensus_type="avg")
#: Keywords that may override a checkpoint's configuration (the others only shape training).
_CONFIG_KEYS = ("num_segments", "base_model", "is_shift", "shift_div", "shift_place", "temporal_pool",
                "data_length", "has_VAP", "consensus_type")


def pan(modality: str | None = None, num_class: int | None = None, pretrained: str | None = None,
        pretrain: str | None = None, **kwargs) -> _PAN:
    """A PAN model of any modality (``"RGB"``, ``"PA"``, ``"Lite"``); see the module's docstring.

    Args:
        modality: the stream (default: the checkpoint's with ``pretrained``, else ``"Lite"``).
        num_class: classes (default: the checkpoint's with ``pretrained``, else 174).
        pretrained: path of a local checkpoint whose weights are loaded strictly.
        pretrain: backbone initialisation without ``pretrained``: ``None`` (random) or ``"imagenet"``
            (torchvision's cache, or a weights file).
        **kwargs: any other :class:`ops.models.PAN` keyword (``num_segments``, ``base_model``, ``dropout``...).

    Raises:
        ValueError: ``pretrained`` is not a local file path (a URL, ``True``), or a keyword
            that does not describe the architecture comes with it.
        ops.weights.CheckpointError: the checkpoint is unreadable, unsafe, or does not fit.
        FileNotFoundError: no such checkpoint.
    """
    if pretrained is None:
        explicit = {k: v for k, v in (("modality", modality or "Lite"), ("num_class", num_class)) if v is not None}
        return _PAN(pretrain=pretrain, **{**_RELEASED, **explicit, **kwargs})
    if not isinstance(pretrained, str) or "://" in pretrained:
        raise ValueError(f"pretrained={pretrained!r}: give the path of a local checkpoint file (nothing is "
                         f"downloaded; fetch it first, e.g. with torch.hub.download_url_to_file)")
    unknown = sorted(set(kwargs) - set(_CONFIG_KEYS))
    if unknown or pretrain is not None:
        raise ValueError(f"with pretrained, only the architecture keywords apply ({', '.join(_CONFIG_KEYS)}); "
                         f"got {', '.join(unknown or ['pretrain'])}")
    model, _, _ = _load_checkpoint_model(pretrained, num_class, {"modality": modality, **kwargs})
    return model


def pan_lite(num_class: int | None = None, pretrained: str | None = None, **kwargs) -> _PAN:
    """PAN Lite: RGB frame + PA maps of each segment in one backbone (see :func:`pan`)."""
    return pan("Lite", num_class, pretrained, **kwargs)


def pan_rgb(num_class: int | None = None, pretrained: str | None = None, **kwargs) -> _PAN:
    """PAN's RGB stream, a TSM model (see :func:`pan`)."""
    return pan("RGB", num_class, pretrained, **kwargs)


def pan_pa(num_class: int | None = None, pretrained: str | None = None, **kwargs) -> _PAN:
    """PAN's PA stream: PA maps only (see :func:`pan`)."""
    return pan("PA", num_class, pretrained, **kwargs)
