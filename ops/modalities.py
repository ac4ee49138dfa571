"""Per-modality facts, in one place.

Every other module asks this one what a modality needs (frames per segment,
channels entering the backbone, learning-rate multipliers of the first layer)
instead of testing modality strings itself.

PAN has three input modalities:

* ``RGB``  -- one frame per segment, fed to the backbone as is.
* ``PA``   -- ``m`` consecutive frames per segment turned into ``m - 1`` PA maps
  (Persistence of Appearance), which replace the RGB input of the backbone.
* ``Lite`` -- ``m`` frames per segment; the first RGB frame and its ``m - 1``
  PA maps are stacked into ``3 + (m - 1)`` channels (6 for ``m = 4``).

All three take frames normalised with the ImageNet mean and std; PA is computed
from the normalised frames, as the released weights expect.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Frames per segment that PA uses in the paper (``data_length``).
DEFAULT_PA_LENGTH = 4


@dataclass(frozen=True)
class Modality:
    """What one input modality needs from the data pipeline and the model."""

    name: str
    #: True when the segment's frames go through PA before the backbone.
    uses_pa: bool
    #: True when the first RGB frame of each segment is kept beside the PA maps.
    keeps_rgb: bool
    #: Learning-rate multipliers (weight, bias) of the first learnable layer.
    first_layer_lr_mult: tuple[float, float]
    #: Normalisation of input frames (per RGB channel).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def frames_per_segment(self, data_length: int = DEFAULT_PA_LENGTH) -> int:
        """Consecutive frames the loader reads for each segment."""
        return data_length if self.uses_pa else 1

    def backbone_in_channels(self, data_length: int = DEFAULT_PA_LENGTH) -> int:
        """Channels of the tensor that enters the backbone's first convolution.

        For PA, the ``m - 1`` maps of a segment must be 3 so that the backbone's
        ordinary conv1 (and ImageNet weights) apply; this is checked by the model.
        """
        if not self.uses_pa:
            return 3
        pa_maps = data_length - 1
        return 3 + pa_maps if self.keeps_rgb else pa_maps


MODALITIES: dict[str, Modality] = {
    "RGB": Modality("RGB", uses_pa=False, keeps_rgb=True, first_layer_lr_mult=(1.0, 2.0)),
    "PA": Modality("PA", uses_pa=True, keeps_rgb=False, first_layer_lr_mult=(5.0, 10.0)),
    "Lite": Modality("Lite", uses_pa=True, keeps_rgb=True, first_layer_lr_mult=(5.0, 10.0)),
}


def get_modality(name: str) -> Modality:
    """Look up a modality by name; raises ``ValueError`` listing the valid names."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise ValueError(
            f"unknown modality {name!r}; choose one of {', '.join(MODALITIES)}"
        ) from None
