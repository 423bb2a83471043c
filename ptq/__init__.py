"""ptq: post-training int8 quantization of float32 ONNX models for onnxruntime."""

__version__ = "0.1.0"

from ptq.api import ConvertResult, convert  # noqa: E402
from ptq.config import Config, Scheme  # noqa: E402
from ptq.errors import PtqError  # noqa: E402

__all__ = ["Config", "ConvertResult", "PtqError", "Scheme", "convert", "__version__"]
