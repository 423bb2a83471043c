"""Atomic file writes: write a temp file in the destination folder, fsync, then rename.

A reader never sees a half-written output: after an error, Ctrl-C or a full disk the
destination either keeps its old content or does not exist, and the temp file is removed.

Several outputs written inside ``with transaction():`` are all-or-nothing: each is written and
fsynced to its temp file, and the renames happen together when the block ends without an
error; if anything fails first, every temp file is removed and no destination is touched.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptq.errors import OutputError

TEMP_SUFFIX = ".tmp"

# The pending renames of the innermost open transaction (None: commit renames at once).
_pending: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("ptq_atomic_pending", default=None)


@contextlib.contextmanager
def temp_path(destination: Path, suffix: str = "") -> Iterator[Path]:
    """A fresh temp path beside ``destination``; removed on exit unless it was renamed away
    (or handed to the open transaction, which then owns it)."""
    destination = Path(destination)
    folder = destination.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix + TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    path = Path(name)
    try:
        os.chmod(path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield path
    finally:
        if not _owned_by_transaction(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _owned_by_transaction(path: Path) -> bool:
    pending = _pending.get()
    return pending is not None and any(temp == path for temp, _ in pending)


def commit(temp: Path, destination: Path) -> None:
    """fsync ``temp`` and rename it over ``destination`` (at the end of the open transaction, if any)."""
    destination = Path(destination)
    try:
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None
    pending = _pending.get()
    if pending is not None:
        _require_replaceable(destination)
        pending.append((Path(temp), destination))
        return
    _rename(temp, destination)


def _rename(temp: Path, destination: Path) -> None:
    try:
        os.replace(temp, destination)
    except OSError as exc:
        raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None
    _fsync_folder(destination.parent)


def _require_replaceable(destination: Path) -> None:
    """Fail now, not halfway through the renames, when a destination cannot be replaced."""
    if destination.is_dir() and not destination.is_symlink():
        raise OutputError(f"cannot write {destination}: Is a directory")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(destination: Path, data: bytes | bytearray | memoryview) -> None:
    with temp_path(destination) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None
        commit(tmp, destination)


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Make every ``commit`` inside the block wait for its end; then rename all, in order.

    On an exception (including KeyboardInterrupt) inside the block the temp files are removed
    and no destination changes. Transactions nest: an inner one joins the outer one.
    """
    if _pending.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    try:
        try:
            yield
        finally:
            _pending.reset(token)
    except BaseException:
        for temp, _ in pending:
            with contextlib.suppress(OSError):
                temp.unlink()
        raise
    renamed = 0
    try:
        for destination in (d for _, d in pending):
            _require_replaceable(destination)
        for temp, destination in pending:
            _rename(temp, destination)
            renamed += 1
    finally:
        for temp, _ in pending[renamed:]:
            with contextlib.suppress(OSError):
                temp.unlink()
