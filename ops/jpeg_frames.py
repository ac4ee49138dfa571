"""JPEG frames read through libjpeg-turbo (``simplejpeg``), without PIL's Python header parser.

Opening a JPEG with PIL parses its markers in Python, which costs more than decoding a small frame
(docs/BENCHMARKS.md, training data pipeline). :func:`open_jpeg` reads the header with libjpeg-turbo
instead and returns an :class:`EncodedJpeg`, the bytes and the size, which the transforms decode with
``simplejpeg`` too (:func:`ops.transforms.decode_clip`: the same pixels as PIL's
``Image.open(p).convert('RGB')``). Anything else (grey, CMYK, a header libjpeg-turbo refuses, no
``simplejpeg`` installed) is opened by PIL as before, with the same pixels and the same error messages.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    # Optional (requirements: simplejpeg): without it every frame goes through PIL, ~1.6x slower.
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    simplejpeg = None

_SOI = b"\xff\xd8"


class EncodedJpeg:
    """A colour (YCbCr) JPEG frame not decoded yet: ``data`` (the file's bytes) and ``size`` ``(W, H)``.

    It answers ``size``, ``format``, ``mode`` and ``convert`` as a lazily opened PIL image does, so code
    that only needs those treats both alike; :meth:`pil` opens it with PIL (for JPEG draft decoding).
    """

    __slots__ = ("data", "size")
    format = "JPEG"
    mode = "RGB"

    def __init__(self, data: bytes, size: tuple[int, int]):
        self.data = data
        self.size = size

    def pil(self) -> Image.Image:
        return Image.open(io.BytesIO(self.data))

    def rgb(self) -> np.ndarray:
        """The decoded frame, ``uint8 [H, W, 3]`` (PIL's ``convert('RGB')`` pixels); ValueError when the
        data is corrupt or truncated."""
        out = simplejpeg.decode_jpeg(self.data, colorspace="RGB")
        if (out.shape[1], out.shape[0]) != self.size:
            raise ValueError(f"decoded size {out.shape[1]}x{out.shape[0]} differs from the header's "
                             f"{self.size[0]}x{self.size[1]}")
        return out

    def convert(self, mode: str) -> Image.Image:
        return self.pil().convert(mode)


def open_jpeg(data: bytes) -> EncodedJpeg | None:
    """``data`` as an :class:`EncodedJpeg` when it is a colour JPEG whose header libjpeg-turbo reads,
    else None (the caller opens it with PIL)."""
    if simplejpeg is None or not data.startswith(_SOI):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # a header libjpeg-turbo refuses: PIL reports it as before
        return None
    return EncodedJpeg(data, (width, height)) if colorspace == "YCbCr" else None
