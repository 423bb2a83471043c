"""bench.identity --compare: runs match on .onnx, .ops.json and what the .ort computes."""

from __future__ import annotations

from bench.identity import compare

HEADER = "model variant .onnx .ops.json .ort-run .ort-raw\n"


def test_compare_ignores_the_raw_ort_bytes_and_catches_any_other_change(tmp_path, capsys):
    before, after, changed = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    before.write_text(HEADER + "ppocr-cls static-fixed aa bb cc dd\nppocr-det dynamic ee ff 11 22\n")
    after.write_text(HEADER + "ppocr-cls static-fixed aa bb cc XX\nppocr-det dynamic ee ff 11 YY\n")
    assert compare(before, after) == 0
    assert "2 of 2 runs identical" in capsys.readouterr().out
    changed.write_text(HEADER + "ppocr-cls static-fixed aa bb cZ dd\n")
    assert compare(before, changed) == 1
    out = capsys.readouterr().out
    assert "differs: ppocr-cls static-fixed" in out and "missing: ppocr-det dynamic" in out
