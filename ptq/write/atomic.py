"""Atomic file writes: write a temp file in the destination folder, fsync, then rename.

A reader never sees a half-written output: after an error, Ctrl-C or a full disk the
destination either keeps its old content or does not exist, and the temp file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptq.errors import OutputError


@contextlib.contextmanager
def temp_path(destination: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temp path beside ``destination``; removed on exit unless it was renamed away."""
    destination = Path(destination)
    folder = destination.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix + ".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    path = Path(name)
    os.chmod(path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit(temp: Path, destination: Path) -> None:
    """fsync ``temp`` and rename it over ``destination``."""
    try:
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp, destination)
    except OSError as exc:
        raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None


def write_bytes(destination: Path, data: bytes) -> None:
    with temp_path(destination) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None
        commit(tmp, destination)
