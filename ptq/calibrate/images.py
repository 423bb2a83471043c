"""Image files as model inputs: decode (Pillow), resize, scale, normalize, lay out.

Pillow is an optional dependency (the ``[images]`` extra of the ``ptq-onnx`` distribution): decoding PNG and JPEG is its
job, not ours. Resizing is bilinear, as most training pipelines do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptq.calibrate.data import InputSpec
from ptq.config import ImageFormat
from ptq.errors import CalibrationDataError

# A decompression bomb (a tiny PNG declaring gigapixels) is refused before decoding.
MAX_PIXELS = 64_000_000


def image_input(path: Path, spec: InputSpec, fmt: ImageFormat) -> np.ndarray:
    """``path`` as a batch-1 array for the model input ``spec`` (float32, NCHW or NHWC)."""
    try:
        from PIL import Image
    except ImportError:
        raise CalibrationDataError(f"{path.name}: reading images needs Pillow: pip install pillow (ptq's [images] extra)") from None
    if spec.dims is None or len(spec.dims) != 4 or spec.dtype.kind != "f":
        raise CalibrationDataError(
            f"{path.name}: an image can only feed a 4-D float input; {spec.name!r} is {spec.describe()}"
        )
    layout = _layout(spec, fmt)
    channel_axis, spatial = (1, (2, 3)) if layout == "nchw" else (3, (1, 2))
    channels = spec.dims[channel_axis] if isinstance(spec.dims[channel_axis], int) and spec.dims[channel_axis] > 0 else 3
    size = fmt.size or _model_size(spec, spatial)
    if size is None:
        raise CalibrationDataError(
            f"{path.name}: the model's input {spec.name!r} has free height/width; give --input-size HxW"
        )
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except Exception as exc:  # Pillow raises many types for bad files, bombs included
        raise CalibrationDataError(f"{path.name}: not a readable image ({' '.join(str(exc).split())[:200]})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if fmt.channel_order == "bgr":
        pixels = pixels[..., ::-1]
    mean = np.asarray(fmt.mean[:channels] if len(fmt.mean) >= channels else fmt.mean * channels, np.float32)
    std = np.asarray(fmt.std[:channels] if len(fmt.std) >= channels else fmt.std * channels, np.float32)
    pixels = (pixels - mean) / std
    array = pixels.transpose(2, 0, 1) if layout == "nchw" else pixels
    return np.ascontiguousarray(array[None], dtype=np.float32)


def _layout(spec: InputSpec, fmt: ImageFormat) -> str:
    if fmt.layout != "auto":
        return fmt.layout
    if spec.dims[1] in (1, 3):
        return "nchw"
    if spec.dims[3] in (1, 3):
        return "nhwc"
    return "nchw"


def _model_size(spec: InputSpec, spatial: tuple[int, int]) -> tuple[int, int] | None:
    h, w = (spec.dims[i] for i in spatial)
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
