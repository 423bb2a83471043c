"""ptq.errors: every PtqError subclass has a documented, unique exit code."""

from __future__ import annotations

import ptq.errors as errors
import ptq.fleet.project  # noqa: F401  (defines ProjectFileError, a UsageError)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


ERROR_CLASSES = [errors.PtqError, *_subclasses(errors.PtqError)]


def test_every_error_class_exit_code_is_documented():
    assert len(ERROR_CLASSES) >= 9
    for cls in ERROR_CLASSES:
        assert cls.exit_code in errors.EXIT_CODES, cls.__name__


def test_subclass_exit_codes_are_unique_and_not_success_or_internal():
    # The categories are the classes of ptq/errors.py; a subclass elsewhere refines one and keeps its code.
    assert any(cls.__module__ != "ptq.errors" for cls in ERROR_CLASSES)
    categories = [cls for cls in ERROR_CLASSES if cls.__module__ == "ptq.errors" and cls is not errors.PtqError]
    codes = [cls.exit_code for cls in categories]
    assert len(codes) == len(set(codes))
    assert errors.EXIT_OK not in codes
    assert errors.EXIT_INTERNAL not in codes
    assert errors.PtqError.exit_code == errors.EXIT_INTERNAL


def test_exit_code_constants_are_unique_and_each_has_a_message():
    constants = {
        name: value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert len(set(constants.values())) == len(constants)
    assert set(constants.values()) == set(errors.EXIT_CODES)
    for code, message in errors.EXIT_CODES.items():
        assert 0 <= code <= 255
        assert message.strip() and "\n" not in message, code


def test_error_carries_its_message_and_is_an_exception():
    exc = errors.InvalidModelError("model.onnx: truncated")
    assert isinstance(exc, errors.PtqError) and isinstance(exc, Exception)
    assert str(exc) == "model.onnx: truncated"
    assert exc.exit_code == errors.EXIT_INVALID_MODEL == 3
