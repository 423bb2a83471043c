"""The README's Python example runs as written (issue 13: the Python API for data, shown with a
real model)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = Path.home() / ".cache/ptq/models/ppocr-det.onnx"


def _python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("Python API — the CLI is a thin layer over it"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.models  # ~30 s on 2 busy cores: make test-models
@pytest.mark.skipif(not MODEL.exists(), reason="make fetch-small puts ppocr-det in ~/.cache/ptq")
def test_the_python_example_calibrates_on_a_function_and_measures_held_out_samples(tmp_path):
    (tmp_path / "calibration_data").symlink_to(REPO / "calibration_data")
    run = subprocess.run([sys.executable, "-c", _python_example()], cwd=tmp_path, capture_output=True, text=True, check=False,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    # 8 samples given: 6 fit the ranges, 2 are held out to validate the choices (one in four)
    assert first.startswith("static 6 {'int8': ")
    cosine = float(re.search(r"cosine (\S+),", second).group(1))
    assert 0.5 < cosine < 1.0  # measured on the two held-out samples, not a constant
    assert (tmp_path / "out" / "det.api.int8.onnx").exists()


def test_the_distribution_is_not_the_unrelated_ptq_on_pypi_and_the_readme_says_where_the_command_lands():
    """Issue 13.9: `pip install 'ptq[images]'` installed an unrelated, empty PyPI project named ptq."""
    import tomllib
    from importlib import metadata

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "ptq-onnx"
    assert project["scripts"] == {"ptq": "ptq.cli:main"}  # the command and the import name stay ptq
    assert metadata.distribution("ptq-onnx").entry_points.select(group="console_scripts", name="ptq")
    readme = (REPO / "README.md").read_text()
    assert ".venv/bin/pip install -e '.[images]'" in readme and "lands in .venv/bin/ptq" in readme
    assert "pip install 'ptq[" not in readme and "pip install ptq\n" not in readme
