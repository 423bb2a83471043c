"""bench.identity --compare: runs match on .onnx, .ops.json, what the .ort computes and its bytes."""

from __future__ import annotations

from bench.identity import compare

HEADER = "model variant .onnx .ops.json .ort-run .ort-raw\n"


def test_compare_catches_any_change_including_the_ort_bytes(tmp_path, capsys):
    before, same, changed, ort_bytes = (tmp_path / f"{n}.txt" for n in "abcd")
    before.write_text(HEADER + "ppocr-cls static-fixed aa bb cc dd\nppocr-det dynamic ee ff 11 22\n")
    same.write_text(HEADER + "ppocr-cls static-fixed aa bb cc dd\nppocr-det dynamic ee ff 11 22\n")
    assert compare(before, same) == 0
    assert "2 of 2 runs identical" in capsys.readouterr().out
    changed.write_text(HEADER + "ppocr-cls static-fixed aa bb cZ dd\n")
    assert compare(before, changed) == 1
    out = capsys.readouterr().out
    assert "differs: ppocr-cls static-fixed" in out and "missing: ppocr-det dynamic" in out
    ort_bytes.write_text(HEADER + "ppocr-cls static-fixed aa bb cc XX\nppocr-det dynamic ee ff 11 22\n")
    assert compare(before, ort_bytes) == 1
    assert "differs: ppocr-cls static-fixed" in capsys.readouterr().out


def test_tables_from_before_the_deterministic_ort_can_skip_its_bytes(tmp_path, capsys):
    before, after = tmp_path / "a.txt", tmp_path / "b.txt"
    before.write_text(HEADER + "ppocr-cls static-fixed aa bb cc dd\n")
    after.write_text(HEADER + "ppocr-cls static-fixed aa bb cc XX\n")
    assert compare(before, after, ort_bytes=False) == 0
    assert "1 of 1 runs identical" in capsys.readouterr().out
