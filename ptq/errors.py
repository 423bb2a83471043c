"""Errors ptq raises on bad input, each tied to a documented process exit code.

The CLI maps every ``PtqError`` to one line on stderr and its ``exit_code``; anything else is an
internal error (exit code 70). The table is part of the public contract (README, ``ptq --help``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # click's own code for bad options; we reuse it for bad option values
EXIT_INVALID_MODEL = 3  # missing, unreadable, corrupt, truncated or invalid ONNX file
EXIT_UNSUPPORTED_MODEL = 4  # valid ONNX that ptq cannot quantize (not float32, already quantized, ...)
EXIT_BAD_CALIBRATION = 5  # calibration files missing, unreadable or not matching the model inputs
EXIT_GATE_FAILED = 6  # a report threshold (--min-cosine, ...) was not met; outputs were written
EXIT_OUTPUT = 7  # the output could not be written (disk full, permission, -o equals the input)
EXIT_TARGET_MISSED = 8  # a --target-* was not met on the validation samples; the best model found was written
EXIT_COLLAPSED = 9  # the int8 model's fidelity collapsed and no float placement lifted it; nothing written
EXIT_FLEET_FAILED = 10  # ptq run: one or more models of the project failed to convert (the others were)
EXIT_INTERNAL = 70  # a bug in ptq (EX_SOFTWARE); the message asks for a report
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention)

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_USAGE: "usage error: unknown option or bad option value",
    EXIT_INVALID_MODEL: "the input is not a readable, valid ONNX model",
    EXIT_UNSUPPORTED_MODEL: "the model is valid but cannot be quantized (e.g. not float32, already quantized)",
    EXIT_BAD_CALIBRATION: "calibration or eval data is missing, unreadable or does not fit the model inputs",
    EXIT_GATE_FAILED: "a quality gate failed (outputs and report were still written)",
    EXIT_OUTPUT: "an output file could not be written, or would overwrite the input",
    EXIT_TARGET_MISSED: "a --target-* was not met: the best model found was written, its figures in the summary and report",
    EXIT_COLLAPSED: "the int8 model's outputs collapsed (cosine < 0.9) and no float placement lifted them; nothing written",
    EXIT_FLEET_FAILED: "ptq run: one or more models failed to convert (the others' outputs and reports were written)",
    EXIT_INTERNAL: "internal error in ptq (please report it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM): while converting, nothing is written; while measuring,"
    " the outputs are complete and no report is written",
}


class PtqError(Exception):
    """Base class: a problem with the user's input, reported as one line."""

    exit_code = EXIT_INTERNAL


class UsageError(PtqError):
    exit_code = EXIT_USAGE


class InvalidModelError(PtqError):
    exit_code = EXIT_INVALID_MODEL


class UnsupportedModelError(PtqError):
    exit_code = EXIT_UNSUPPORTED_MODEL


class CalibrationDataError(PtqError):
    exit_code = EXIT_BAD_CALIBRATION


class OutputError(PtqError):
    exit_code = EXIT_OUTPUT


class GateFailedError(PtqError):
    exit_code = EXIT_GATE_FAILED


class TargetMissedError(PtqError):
    """Raised by the CLI after the outputs and reports are written, when a target was not met."""

    exit_code = EXIT_TARGET_MISSED


class FidelityCollapsedError(PtqError):
    exit_code = EXIT_COLLAPSED
