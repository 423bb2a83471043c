import numpy as np
import pytest

from ptq.calibrate.data import InputSpec, check_feed, sample_files
from ptq.calibrate.samples import iter_samples, read_sample
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


# ------------------------------------------------------------------ many samples in one file

from ptq.calibrate.samples import Samples  # noqa: E402

BATCH1 = [InputSpec("x", np.dtype(np.float32), (1, 3, 4, 4))]
FREE = [InputSpec("x", np.dtype(np.float32), ("N", 3, 4, 4))]
PAIR = [InputSpec("x", np.dtype(np.float32), ("N", 3, 4, 4)), InputSpec("ids", np.dtype(np.int64), ("N", "T"))]


def _stack(n, base=0.0):
    """``n`` samples [1, 3, 4, 4] stacked on a new axis 0; sample i is filled with base + i."""
    return (base + np.arange(n, dtype=np.float32))[:, None, None, None, None] * np.ones((1, 1, 3, 4, 4), np.float32)


def _firsts(samples):
    return [float(f["x"].flat[0]) for f in samples]


@pytest.mark.parametrize("save", [
    lambda p, a: np.savez(p.with_suffix(".npz"), x=a),
    lambda p, a: np.savez_compressed(p.with_suffix(".npz"), x=a),
    lambda p, a: np.save(p.with_suffix(".npy"), a),
    lambda p, a: np.save(p.with_suffix(".npy"), np.asfortranarray(a)),
], ids=["npz", "npz-compressed", "npy", "npy-fortran"])
def test_array_one_rank_above_the_input_holds_one_sample_per_index(tmp_path, save):
    save(tmp_path / "many", _stack(5, 10.0))
    np.save(tmp_path / "one.npy", np.full((1, 3, 4, 4), 99.0, np.float32))
    samples = Samples(tmp_path, FREE)
    assert len(samples) == 6 and [f.count for f in samples.files] == [5, 1]
    feeds = list(samples)
    assert [f["x"].shape for f in feeds] == [(1, 3, 4, 4)] * 6
    assert _firsts(feeds) == [10.0, 11.0, 12.0, 13.0, 14.0, 99.0]
    assert all(np.array_equal(f["x"], np.full((1, 3, 4, 4), v, np.float32)) for f, v in zip(feeds, _firsts(feeds)))


def test_batch_axis_larger_than_a_fixed_batch_splits_but_a_free_one_is_one_batch(tmp_path):
    np.save(tmp_path / "s.npy", _stack(4).reshape(4, 3, 4, 4))
    assert [f["x"].shape for f in Samples(tmp_path, BATCH1)] == [(1, 3, 4, 4)] * 4
    assert _firsts(Samples(tmp_path, BATCH1)) == [0.0, 1.0, 2.0, 3.0]
    assert [f["x"].shape for f in Samples(tmp_path, FREE)] == [(4, 3, 4, 4)]  # one batch of 4, fed whole
    two = [InputSpec("x", np.dtype(np.float32), (2, 3, 4, 4))]
    assert [f["x"].shape for f in Samples(tmp_path, two)] == [(2, 3, 4, 4)] * 2


def test_limit_counts_samples_not_files_and_stops_reading(tmp_path):
    np.savez(tmp_path / "a.npz", x=_stack(3))
    np.savez(tmp_path / "b.npz", x=_stack(3, 3.0))
    (tmp_path / "c.npz").write_bytes(b"not read: past the limit")
    samples = Samples(tmp_path, FREE, limit=4)
    assert len(samples) == 4 and _firsts(samples) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CalibrationDataError, match="c.npz: not a readable numpy file"):
        Samples(tmp_path, FREE, limit=7)  # headers are checked before anything runs


def test_inputs_of_a_file_must_agree_on_the_sample_count(tmp_path):
    np.savez(tmp_path / "s.npz", x=_stack(4), ids=np.zeros((3, 1, 7), np.int64))
    with pytest.raises(CalibrationDataError) as err:
        Samples(tmp_path, PAIR)
    assert str(err.value).startswith("s.npz: its arrays disagree on the number of samples: 'ids' [3, 1, 7] holds 3, 'x' [4, 1, 3, 4, 4] holds 4")
    np.savez(tmp_path / "s.npz", x=_stack(4), ids=np.zeros((1, 7), np.int64))  # stacked next to unstacked
    with pytest.raises(CalibrationDataError, match=r"'ids' \[1, 7\] holds 1, 'x' \[4, 1, 3, 4, 4\] holds 4"):
        Samples(tmp_path, PAIR)


def test_multi_input_file_feeds_matching_slices_and_casts(tmp_path):
    ids = np.arange(3 * 5, dtype=np.int32).reshape(3, 1, 5)
    np.savez_compressed(tmp_path / "s.npz", x=_stack(3).astype(np.float64), ids=ids)
    feeds = list(Samples(tmp_path, PAIR))
    assert len(feeds) == 3
    for i, f in enumerate(feeds):
        assert f["x"].dtype == np.float32 and f["ids"].dtype == np.int64
        assert f["x"].flat[0] == i and np.array_equal(f["ids"], ids[i])


def test_sample_shape_errors_name_the_file_input_and_shapes(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((6, 1, 4, 4, 4), np.float32))
    with pytest.raises(CalibrationDataError, match=r"s.npy: input 'x' holds 6 samples of shape \[1, 4, 4, 4\] \(array \[6, 1, 4, 4, 4\]\), the model expects float32\[\?, 3, 4, 4\]"):
        Samples(tmp_path, FREE)
    np.save(tmp_path / "s.npy", np.zeros((0, 1, 3, 4, 4), np.float32))
    with pytest.raises(CalibrationDataError, match="s.npy: holds no samples"):
        Samples(tmp_path, FREE)
    np.save(tmp_path / "s.npy", np.zeros((3, 3, 4, 4), np.float32))  # 3 is not a multiple of the fixed batch 2
    with pytest.raises(CalibrationDataError, match=r"s.npy: input 'x' has shape \[3, 3, 4, 4\]"):
        list(Samples(tmp_path, [InputSpec("x", np.dtype(np.float32), (2, 3, 4, 4))]))


def test_multi_sample_files_refuse_pickles_and_truncation(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[object()]] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationDataError, match="pickled"):
        Samples(tmp_path, FREE)
    (tmp_path / "p.npy").unlink()
    np.savez(tmp_path / "s.npz", x=_stack(8))
    data = (tmp_path / "s.npz").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 200):
        (tmp_path / "s.npz").write_bytes(data[:cut])
        with pytest.raises(CalibrationDataError) as err:
            list(Samples(tmp_path, FREE))
        assert str(err.value).startswith("s.npz") and "\n" not in str(err.value)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_memory_stays_one_sample_whatever_the_file_size(tmp_path, compressed):
    import tracemalloc

    n, shape = 64, (1, 3, 256, 256)  # 64 samples of 768 KiB: a 48 MiB array
    data = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None, None], (n, *shape))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "s.npz", x=data)
    del data
    specs = [InputSpec("x", np.dtype(np.float32), ("N", 3, "H", "W"))]
    tracemalloc.start()
    try:
        seen = [float(f["x"][0, 0, 7, 9]) for f in Samples(tmp_path, specs)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == list(range(n))
    assert peak < 8 * 786432, peak  # a few samples' worth (zipfile buffers a deflated one twice), not 48 MiB
