"""Atomic writes: all outputs of a transaction or none, no temp file left behind."""

from __future__ import annotations

import pytest

from ptq.errors import OutputError
from ptq.write.atomic import transaction, write_bytes


def test_write_bytes_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_transaction_renames_nothing_until_it_ends_and_nothing_on_an_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with transaction():
        write_bytes(a, b"1")
        assert not a.exists()  # pending until the block ends
        write_bytes(b, b"2")
    assert a.read_bytes() == b"1" and b.read_bytes() == b"2"
    with pytest.raises(RuntimeError), transaction():
        write_bytes(a, b"changed")
        raise RuntimeError("stop")
    assert a.read_bytes() == b"1" and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_destination_that_is_a_folder_fails_before_any_rename(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="Is a directory"), transaction():
        write_bytes(tmp_path / "first", b"1")
        write_bytes(tmp_path / "dir", b"2")
    assert not (tmp_path / "first").exists()
