"""ptq: post-training int8 quantization of float32 ONNX models for onnxruntime."""

__version__ = "0.1.0"

from ptq.api import ConvertResult, convert  # noqa: E402
from ptq.config import Config, Scheme  # noqa: E402
from ptq.errors import PtqError  # noqa: E402

_MEASUREMENT = ("MeasureOptions", "Report", "bench", "compare", "measure")


def __getattr__(name: str):
    """The measurement API (``ptq.report.build``), imported on first use: ``import ptq`` and the
    CLI's start stay as quick as the conversion needs."""
    if name in _MEASUREMENT:
        from ptq.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'ptq' has no attribute {name!r}")


__all__ = [
    "Config", "ConvertResult", "MeasureOptions", "PtqError", "Report", "Scheme",
    "bench", "compare", "convert", "measure", "__version__",
]  # fmt: skip
