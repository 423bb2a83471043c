import numpy as np
import pytest

from ptq.calibrate.data import InputSpec, check_feed, iter_samples, read_sample, sample_files
from ptq.errors import CalibrationDataError

SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 3, 16, 16))]
TWO = SPECS + [InputSpec("ids", np.dtype(np.int64), ("N", "T"))]


def test_files_in_name_order(tmp_path):
    for name in ["b.npy", "a.npz", "c.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in sample_files(tmp_path)] == ["a.npz", "b.npy"]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(CalibrationDataError, match="no .npz or .npy"):
        sample_files(tmp_path)
    with pytest.raises(CalibrationDataError, match="does not exist"):
        sample_files(tmp_path / "nope")


def test_npz_keys_must_match_inputs(tmp_path):
    np.savez(tmp_path / "s.npz", y=np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(CalibrationDataError, match=r"s.npz: missing input\(s\) x; unknown key\(s\) y"):
        read_sample(tmp_path / "s.npz", SPECS)


def test_fixed_dims_must_match_and_free_dims_may_vary(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3, 16, 16), np.float32))
    assert read_sample(tmp_path / "a.npz", SPECS)["x"].shape == (2, 3, 16, 16)
    np.savez(tmp_path / "b.npz", x=np.zeros((1, 4, 16, 16), np.float32))
    with pytest.raises(CalibrationDataError, match=r"b.npz: input 'x' has shape \[1, 4, 16, 16\]"):
        read_sample(tmp_path / "b.npz", SPECS)


def test_float64_is_cast_but_text_is_refused():
    feed = check_feed("s", {"x": np.zeros((1, 3, 16, 16))}, SPECS)
    assert feed["x"].dtype == np.float32
    with pytest.raises(CalibrationDataError, match="is <U1"):
        check_feed("s", {"x": np.full((1, 3, 16, 16), "a")}, SPECS)


def test_npy_needs_single_input_model(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(CalibrationDataError, match="single-input"):
        read_sample(tmp_path / "s.npy", TWO)


def test_pickled_array_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(tmp_path / "evil.npy", np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationDataError, match="pickled"):
        read_sample(tmp_path / "evil.npy", SPECS)
    assert not marker.exists()


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CalibrationDataError, match="bad.npz: not a readable numpy file"):
        read_sample(tmp_path / "bad.npz", SPECS)


def test_limit_reads_only_first_files(tmp_path):
    for i in range(5):
        np.save(tmp_path / f"s{i}.npy", np.full((1, 3, 16, 16), i, np.float32))
    values = [float(f["x"][0, 0, 0, 0]) for f in iter_samples(tmp_path, SPECS, limit=2)]
    assert values == [0.0, 1.0]
