"""The one progress protocol of ptq's stages: ``progress(stage, done, total)``.

A stage reports ``(name, 0, 0)`` when it starts (0 of 0: no count to show) and ``(name, done,
total)`` as it goes where it can count. The CLI prints these on stderr; the Python API's
default prints nothing. Inner loops that know only their counts take a ``StepProgress`` made by
``steps`` for their stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...


# done, total: progress within one stage (e.g. calibration samples).
StepProgress = Callable[[int, int], None]


def silent(stage: str, done: int, total: int) -> None:
    """A ``Progress`` that shows nothing (the Python API's default)."""


def steps(progress: Progress, stage: str) -> StepProgress:
    """The ``StepProgress`` of ``stage``: reports ``(stage, done, total)`` to ``progress``."""
    return lambda done, total: progress(stage, done, total)
