"""The environment a measurement was taken in: package versions and the CPU (from /proc/cpuinfo)."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path

# CPU features that decide how fast onnxruntime's int8 kernels are on x86: AVX2 (u8s8 with int16
# saturation risk), AVX-512 VNNI / AVX-VNNI (dot-product instructions, no saturation), AMX.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """``{"model": str | None, "logical_cores": int, "flags": {flag: bool}}``.

    The model name and flags come from the first processor entry of ``/proc/cpuinfo`` (Linux);
    elsewhere the model is ``platform.processor()`` and every flag is ``False``.
    """
    model = None
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    if model is None:
        model = platform.processor() or None
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
    }


def environment() -> dict:
    """Versions and CPU, as the JSON report's ``environment`` object."""
    from ptq import __version__

    return {
        "ptq": __version__,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
    }
