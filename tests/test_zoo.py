"""The bench model zoo: real inputs (deterministic, disjoint splits) and the committed ppocr-det calibration data.

Tests marked ``models`` need the real models in the cache (``python -m bench.zoo fetch all``); the others use only
the installed packages (scikit-image's photos, Pillow's font, the onnx package's light models).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from bench import zoo

CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "calibration_data" / "ppocr_det"
OFFLINE_MODELS = ["ppocr-det", "ppocr-cls", "ppocr-rec", "yolov8n-nudenet", "light-resnet50"]


def _sources(name: str, split: str, n: int) -> set[str]:
    """The source items named by ``describe``: photo and page files, LFW faces (rendered text excluded)."""
    sources = set()
    for note in zoo.describe(name, split, n):
        if note.startswith("lfw_subset.npy faces"):
            sources |= {f"lfw:{row}" for row in ast.literal_eval(note[len("lfw_subset.npy faces ") :])}
        elif not note.startswith("rendered"):
            sources.add(note.split()[0].rstrip(";,"))
    return sources


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def test_source_pools_are_disjoint():
    assert not set(zoo.sentences("calib")) & set(zoo.sentences("eval"))
    assert len(zoo.sentences("calib")) >= 64 and len(zoo.sentences("eval")) >= 64
    assert not set(zoo.PHOTOS["calib"]) & set(zoo.PHOTOS["eval"])
    assert zoo.TEXT_PAGES["calib"][0] != zoo.TEXT_PAGES["eval"][0]
    assert not set(zoo.LFW_FACES["calib"]) & set(zoo.LFW_FACES["eval"])


@pytest.mark.parametrize("name", OFFLINE_MODELS)
def test_splits_share_no_source(name):
    calib, eval_ = _sources(name, "calib", 24), _sources(name, "eval", 24)
    assert calib and eval_
    assert not calib & eval_


@pytest.mark.parametrize("name", OFFLINE_MODELS)
def test_inputs_are_deterministic_and_prefix_stable(name):
    first = zoo.inputs(name, "eval", 6)
    assert _same(first, zoo.inputs(name, "eval", 6))
    assert _same(first[:3], zoo.inputs(name, "eval", 3))
    assert not _same(first[:3], zoo.inputs(name, "calib", 3))


def test_ocr_input_shapes():
    for feed in zoo.inputs("ppocr-det", "eval"):
        n, c, h, w = feed["x"].shape
        assert (n, c) == (1, 3) and h % 32 == 0 and w % 32 == 0 and max(h, w) <= 320
    assert {f["x"].shape for f in zoo.inputs("ppocr-cls", "calib")} == {(1, 3, 48, 192)}
    for feed in zoo.inputs("ppocr-rec", "calib"):
        n, c, h, w = feed["x"].shape
        assert (n, c, h) == (1, 3, 48) and w >= 320 and w % 32 == 0
    for feed in zoo.inputs("ppocr-cls", "eval", 8):
        x = feed["x"]
        assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_image_input_shapes():
    for feed in zoo.inputs("yolov8n-nudenet", "calib"):
        x = feed["images"]
        assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    for arch in zoo.LIGHT_ARCHS:
        input_name, dims = zoo.declared_input(f"light-{arch}")
        [feed] = zoo.inputs(f"light-{arch}", "eval", 1)
        assert list(feed) == [input_name]
        assert feed[input_name].shape == dims and feed[input_name].dtype == np.float32


def test_write_calibration_dir(tmp_path):
    (tmp_path / "sample_999.npz").write_bytes(b"stale")
    paths = zoo.write_calibration_dir("ppocr-det", tmp_path, split="eval", n=3)
    assert [p.name for p in paths] == ["sample_000.npz", "sample_001.npz", "sample_002.npz"]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == [p.name for p in paths]
    for path, feed in zip(paths, zoo.inputs("ppocr-det", "eval", 3)):
        with np.load(path, allow_pickle=False) as z:
            assert z.files == ["x"] and np.array_equal(z["x"], feed["x"])
    assert len((tmp_path / "sources.txt").read_text().splitlines()) == 4


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        zoo.inputs("resnet-1000", "calib")
    with pytest.raises(ValueError, match="split"):
        zoo.inputs("ppocr-det", "train")


def test_cli_list(capsys):
    assert zoo.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in zoo.MODELS)


def _committed_samples() -> list[np.ndarray]:
    arrays = []
    for path in sorted(CALIBRATION_DIR.glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            assert z.files == ["x"], path
            arrays.append(z["x"])
    return arrays


def test_committed_calibration_data():
    files = sorted(CALIBRATION_DIR.glob("*.npz"))
    assert 8 <= len(files) <= 12
    assert sum(p.stat().st_size for p in files) <= 8 * 1024 * 1024
    arrays = _committed_samples()
    for x in arrays:
        n, c, h, w = x.shape
        assert x.dtype == np.float32 and (n, c) == (1, 3)
        assert h % 32 == 0 and w % 32 == 0 and max(h, w) <= 320
        assert np.isfinite(x).all() and -1.0 <= x.min() and x.max() <= 1.0
    assert len({x.shape for x in arrays}) > 1


def test_committed_calibration_data_matches_the_zoo():
    """The committed files are ``python -m bench.zoo calib ppocr-det ...`` (up to font/resampling drift)."""
    arrays = _committed_samples()
    for committed, feed in zip(arrays, zoo.inputs("ppocr-det", "calib", len(arrays))):
        assert committed.shape == feed["x"].shape
        assert np.abs(committed - feed["x"]).mean() < 0.01


# --- with the real models (python -m bench.zoo fetch all) -------------------------------------------------------


def _session(name: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(zoo.fetch_model(name)), options, providers=["CPUExecutionProvider"])


@pytest.mark.models
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_every_model_runs_on_both_splits(name):
    session = _session(name)
    declared = {i.name: i for i in session.get_inputs()}
    for split in zoo.SPLITS:
        for feed in zoo.inputs(name, split, 2):
            assert feed.keys() == declared.keys()
            for key, array in feed.items():
                fixed = [(d, s) for d, s in zip(declared[key].shape, array.shape) if isinstance(d, int) and d > 0]
                assert len(declared[key].shape) == array.ndim and all(d == s for d, s in fixed)
            assert all(np.isfinite(out).all() for out in session.run(None, feed))


@pytest.mark.models
def test_fetch_is_idempotent():
    path = zoo.fetch_model("ppocr-det")
    mtime = path.stat().st_mtime_ns
    assert zoo.fetch_model("ppocr-det") == path and path.stat().st_mtime_ns == mtime


@pytest.mark.models
def test_committed_calibration_data_runs_on_ppocr_det():
    session = _session("ppocr-det")
    for x in _committed_samples():
        [prob] = session.run(None, {"x": x})
        assert prob.shape == (1, 1, *x.shape[2:])
        assert 0.0 <= prob.min() and prob.max() <= 1.0
        assert 0.002 < (prob > 0.3).mean() < 0.5  # every sample has text, none is all text


@pytest.mark.models
def test_cls_finds_the_orientation():
    session = _session("ppocr-cls")
    feeds = zoo.inputs("ppocr-cls", "eval", 32)
    predicted = np.array([session.run(None, feed)[0][0].argmax() for feed in feeds])
    assert np.mean(predicted == np.arange(32) % 2) >= 0.8  # odd samples are upside down


@pytest.mark.models
def test_rec_reads_the_rendered_lines():
    import onnx

    model = onnx.load(str(zoo.fetch_model("ppocr-rec")))
    chars = ["", *{p.key: p.value for p in model.metadata_props}["character"].splitlines(), " "]
    session = _session("ppocr-rec")
    read = correct = 0
    for feed, note in zip(zoo.inputs("ppocr-rec", "eval", 16), zoo.describe("ppocr-rec", "eval", 16)):
        if not note.startswith("rendered"):
            continue
        best = session.run(None, feed)[0][0].argmax(-1)
        text = "".join(chars[k] for j, k in enumerate(best) if k and (j == 0 or k != best[j - 1])).strip()
        read += 1
        correct += text == ast.literal_eval(note[len("rendered ") :])
    assert correct >= 0.5 * read


@pytest.mark.models
def test_minilm_matches_torch_and_ranks_similar_sentences_closer():
    session = _session("minilm-l6")
    with np.load(zoo._tokens_path(zoo.fetch_model("minilm-l6")), allow_pickle=False) as z:
        feed = {k: z[f"reference_{k}"] for k in zoo.MINILM_INPUTS}
        reference = z["reference_last_hidden_state"]
    mask = feed["attention_mask"][..., None].astype(bool)
    [hidden] = session.run(None, feed)
    assert np.abs(np.where(mask, hidden - reference, 0)).max() < 1e-4

    def embedding(split: str, sentence: str) -> np.ndarray:
        index = zoo.sentences(split).index(sentence)
        token_feed = zoo.inputs("minilm-l6", split, index + 1)[index]
        [h] = session.run(None, token_feed)
        e = h[0].mean(0)  # batch 1, no padding: the mask is all ones
        return e / np.linalg.norm(e)

    lzma = embedding("eval", "Interface to the liblzma compression library.")
    bz2 = embedding("calib", "Interface to the libbzip2 compression library.")
    other = embedding("calib", "Abstract Base Classes (ABCs) according to PEP 3119.")
    assert lzma @ bz2 > 0.7 > lzma @ other
