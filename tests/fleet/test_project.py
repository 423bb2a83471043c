"""The project file: options and gates per model, defaults, and refusals that name file, line and key."""

from pathlib import Path

import pytest

from ptq.fleet.project import ProjectFileError, find_project_file, key_lines, load_project

GOOD = """\
report = ["fleet.md"]

[defaults]
runs = 7
calibration_method = "percentile"

[defaults.gates]
min_cosine = 0.9

[[model]]
name = "det"
path = "models/det.onnx"
calibration_data = "data/det"
exclude = ["Resize"]

[model.gates]
min_sqnr = 20

[[model]]
path = "models/cls.onnx"
runs = 3
"""


def write(tmp_path: Path, text: str, name: str = "ptq.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_models_take_defaults_their_own_options_and_resolved_paths(tmp_path):
    project = load_project(write(tmp_path, GOOD))
    det, cls = project.models
    assert det.name == "det" and det.path == tmp_path / "models/det.onnx"
    assert det.options["calibration_data"] == tmp_path / "data/det" and det.options["exclude"] == ("Resize",)
    assert det.options["runs"] == 7 and det.options["calibration_method"] == "percentile"
    assert det.gates == {"min_cosine": 0.9, "min_sqnr": 20.0}
    assert cls.name == "cls" and cls.options["runs"] == 3 and cls.gates == {"min_cosine": 0.9}
    assert project.reports == [tmp_path / "fleet.md"]
    assert det.line == 10 and cls.line == 19


def test_key_lines_index_arrays_of_tables_and_subtables():
    lines = key_lines(GOOD)
    assert lines[("defaults", "runs")] == 4
    assert lines[("defaults", "gates", "min_cosine")] == 8
    assert lines[("model", 0, "exclude")] == 14
    assert lines[("model", 0, "gates", "min_sqnr")] == 17
    assert lines[("model", 1, "runs")] == 21


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('runs = 3', 'rnus = 3', r"ptq.toml:21: model\[1\].rnus: unknown key"),
        ('min_sqnr = 20', 'min_snr = 20', r"ptq.toml:17: model\[0\].gates.min_snr: unknown gate"),
        ('runs = 7', 'runs = "seven"', r"ptq.toml:4: defaults.runs: must be an integer >= 1, got 'seven'"),
        ('calibration_method = "percentile"', 'calibration_method = "best"', r"ptq.toml:5: defaults.calibration_method: must be one of"),
        ('min_cosine = 0.9', 'min_cosine = 2', r"ptq.toml:8: defaults.gates.min_cosine: must be in \[-1.0, 1.0\]"),
        ('exclude = ["Resize"]', 'exclude = "Resize"', r"ptq.toml:14: model\[0\].exclude: must be a list"),
        ('report = ["fleet.md"]', 'reprt = ["fleet.md"]', r"ptq.toml:1: reprt: unknown key"),
        ('path = "models/cls.onnx"', 'name = "det"', r"ptq.toml:19: model\[1\]: needs path"),
    ],
)
def test_unknown_keys_and_bad_values_name_file_line_and_key(tmp_path, old, new, expected):
    assert old in GOOD
    with pytest.raises(ProjectFileError, match=expected):
        load_project(write(tmp_path, GOOD.replace(old, new, 1)))


def test_duplicate_names_and_broken_toml_are_refused(tmp_path):
    with pytest.raises(ProjectFileError, match=r"ptq.toml:20: model\[1\].name: 'det' is already the name of the model on line 10"):
        load_project(write(tmp_path, GOOD.replace('path = "models/cls.onnx"', 'name = "det"\npath = "x.onnx"')))
    with pytest.raises(ProjectFileError, match=r"ptq.toml:4: not valid TOML"):
        load_project(write(tmp_path, GOOD.replace("runs = 7", "runs = = 7")))


def test_tool_ptq_in_pyproject_with_lines_of_the_whole_file(tmp_path):
    text = '[project]\nname = "x"\n\n' + GOOD.replace("[defaults", "[tool.ptq.defaults").replace("[[model]]", "[[tool.ptq.model]]").replace("[model.gates]", "[tool.ptq.model.gates]").replace('report = ["fleet.md"]', '[tool.ptq]\nreport = ["fleet.md"]')
    path = write(tmp_path, text, "pyproject.toml")
    assert [m.name for m in load_project(path).models] == ["det", "cls"]
    with pytest.raises(ProjectFileError, match=r"pyproject.toml:25: model\[1\].rnus: unknown key"):
        load_project(write(tmp_path, text.replace("runs = 3", "rnus = 3"), "pyproject.toml"))


def test_the_default_file_is_ptq_toml_then_pyproject_with_tool_ptq(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(ProjectFileError.__mro__[1], match="no project file"):
        find_project_file(None)
    write(tmp_path, '[project]\nname = "x"\n[tool.ptq]\n[[tool.ptq.model]]\npath = "m.onnx"\n', "pyproject.toml")
    assert find_project_file(None) == Path("pyproject.toml")
    write(tmp_path, GOOD)
    assert find_project_file(None) == Path("ptq.toml")
