"""The sample reader: folders and Python sources (lists, callables, onnxruntime readers), streamed
with the same checks, end to end through ptq.convert."""

import logging

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader

import ptq
from ptq.calibrate.data import InputSpec
from ptq.calibrate.samples import Samples, describe_source, iter_samples
from ptq.errors import CalibrationDataError
from tests import tiny

SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 3, 16, 16))]


def _feeds(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def test_a_list_is_read_every_time_it_is_iterated_and_checked():
    feeds = _feeds(3)
    samples = Samples(feeds, SPECS)
    assert len(samples) == 3
    first, second = list(samples), list(samples)
    assert len(first) == len(second) == 3
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(first, second))
    assert len(list(Samples(feeds, SPECS, limit=2))) == 2


def test_float64_and_torch_like_values_are_cast_like_file_samples():
    feed = {"x": np.zeros((1, 3, 16, 16), dtype=np.float64).tolist()}  # a nested list of Python floats
    (got,) = list(Samples([feed], SPECS))
    assert got["x"].dtype == np.float32 and got["x"].shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    "item, message",
    [
        ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "sample 2: input 'x' has shape [1, 3, 8, 8]"),
        ({"y": np.zeros((1, 3, 16, 16), np.float32)}, "sample 2: missing input(s) x; unknown key(s) y"),
        ([1, 2], "sample 2: is a list, not a dict"),
        ({"x": np.array([object()])}, "sample 2: input 'x' holds Python objects"),
    ],
)
def test_a_bad_python_sample_is_named_by_its_position(item, message):
    with pytest.raises(CalibrationDataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        list(Samples([_feeds(1)[0], item], SPECS))


def test_a_callable_is_called_for_each_pass_and_a_generator_object_is_refused():
    calls = []

    def representative_dataset():
        calls.append(1)
        yield from _feeds(4)

    samples = Samples(representative_dataset, SPECS)
    assert samples.count is None  # unknown until read
    assert len(list(samples)) == 4 and len(list(samples)) == 4
    assert len(calls) == 2
    with pytest.raises(CalibrationDataError, match="one-shot generator.*pass a list, or the function"):
        Samples(representative_dataset(), SPECS)
    with pytest.raises(CalibrationDataError, match="yielded no samples"):
        list(Samples(lambda: iter([]), SPECS))


class _Reader(CalibrationDataReader):
    """An onnxruntime-style reader, as onnxruntime's quantizer takes it."""

    def __init__(self, feeds):
        self.feeds = feeds
        self.index = 0

    def get_next(self):
        if self.index >= len(self.feeds):
            return None
        self.index += 1
        return self.feeds[self.index - 1]

    def rewind(self):
        self.index = 0


class _OneShotReader(CalibrationDataReader):
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def test_an_onnxruntime_reader_is_rewound_for_each_pass_and_one_without_rewind_is_refused():
    samples = Samples(_Reader(_feeds(5)), SPECS)
    assert len(list(samples)) == 5 and len(list(samples)) == 5
    assert "a Python _Reader" in describe_source(_Reader([]))
    with pytest.raises(CalibrationDataError, match="without rewind"):
        Samples(_OneShotReader(_feeds(2)), SPECS)


def test_python_samples_convert_to_the_same_bytes_as_the_same_samples_in_a_folder(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    feeds = _feeds(8, seed=4)
    folder = tmp_path / "data"
    folder.mkdir()
    for i, feed in enumerate(feeds):
        np.savez(folder / f"s{i}.npz", **feed)
    outputs = []
    for n, data in enumerate((folder, feeds, lambda: iter(feeds), _Reader(feeds))):
        out = tmp_path / f"q{n}.onnx"
        # The default recipe (auto method, auto hybrid): several passes over the samples.
        result = ptq.convert(model, ptq.Config(output=out, write_ort=False), calibration_data=data)
        assert result.mode == "static" and result.calibration_samples == 6 and result.split.total == 8  # 2 held out
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]


def test_iter_samples_reads_a_folder_as_before(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for i, feed in enumerate(_feeds(3)):
        np.save(folder / f"{i}.npy", feed["x"])
    assert len(list(iter_samples(folder, SPECS))) == 3


def test_a_stacked_batch_for_a_symbolic_batch_axis_says_it_is_one_sample_and_how_to_fix_it(tmp_path, caplog):
    stacked = np.zeros((12, 3, 16, 16), np.float32)
    np.save(tmp_path / "all.npy", stacked)
    with caplog.at_level(logging.WARNING, logger="ptq"):
        samples = Samples(tmp_path / "all.npy", SPECS)
        Samples(tmp_path / "all.npy", SPECS)  # a second pass does not repeat the note
    assert len(samples) == 1
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1
    assert "12 rows on the model's symbolic batch axis: read as ONE sample" in notes[0]
    assert "numpy.expand_dims(array, 1)" in notes[0]
    np.save(tmp_path / "fixed.npy", stacked[:, None])  # the fix the note gives: 12 samples
    assert len(Samples(tmp_path / "fixed.npy", SPECS)) == 12


def test_rows_on_a_symbolic_sequence_axis_are_one_sample_without_a_note(tmp_path, caplog):
    """Silero VAD's input is [sequence_length, 576]: a clip of 157 frames is one sample by design."""
    specs = [InputSpec("input", np.dtype(np.float32), ("sequence_length", 8))]
    np.save(tmp_path / "clip.npy", np.zeros((157, 8), np.float32))
    with caplog.at_level(logging.WARNING, logger="ptq"):
        assert len(Samples(tmp_path / "clip.npy", specs)) == 1
    assert not [r for r in caplog.records if "batch axis" in r.getMessage()]
