"""ptq.report.render: number formats, wrapping, and the text/Markdown/inspect renderings of real
reports (two tiny models compared by onnxruntime; a model inspected)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptq.report import render
from ptq.report.build import MeasureOptions, compare
from ptq.report.inspect import inspect_model
from tests import tiny

W = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("render")
    a = tiny.save_matmul(W, folder / "a.onnx")
    b = tiny.save_matmul(W * 1.1, folder / "b_model.onnx")  # SQNR exactly 20 dB
    options = MeasureOptions(latency=False, thresholds={"min_sqnr": 25.0})
    return compare(a, b, options=options)  # synthesized inputs


def test_number_formats():
    assert [render.fmt_bytes(n) for n in (None, 999, 1500, 2_500_000)] == ["-", "999 B", "1.5 kB", "2.50 MB"]
    assert render.fmt_ms(1.234) == "1.23 ms" and render.fmt_ratio(0.25) == "0.25x" and render.fmt_cosine(None) == "-"
    assert render.fmt_db(math.inf) == "inf dB (identical)" and render.fmt_db(-math.inf) == "-inf dB"
    assert render.fmt_db(19.96) == "20.0 dB"
    assert render.fmt_err(0.999998) == "0.999998"  # 4 digits would print a misleading 1
    assert render.fmt_err(0.123456) == "0.1235" and render.fmt_err(None) == "-"
    assert render.fmt_top1(0.9375, 16) == "93.8% of 16" and render.fmt_top1(None) == "n/a"


def test_fit_wraps_under_the_label_and_keeps_long_words():
    line = "  note            " + " ".join(["word"] * 30)
    wrapped = render.fit(line, 60).split("\n")
    assert len(wrapped) > 1 and all(len(x) <= 60 for x in wrapped)
    assert all(x.startswith(" " * 18) and not x.startswith(" " * 19) for x in wrapped[1:])
    path = "/" + "p" * 100
    assert render.fit(f"  wrote  {path}", 50).split("\n")[-1].strip() == path
    assert render.fit("short", 80) == "short"


def test_text_table_shows_the_measured_figures_and_failed_gate(report):
    text = render.text_table(report)
    assert "SQNR 20.0 dB" in text
    assert "not measured (--no-bench)" in text
    assert "FAIL" in text and "1.00x" in text
    assert render.fidelity_line(report).startswith("cosine 1.00000")


def test_markdown_names_the_models_and_the_gate(report):
    md = render.markdown(report)
    assert md.startswith("### ❌ ptq compare: `a.onnx` → `b_model.onnx` — 1 gate(s) failed")
    assert "| SQNR | | 20.0 dB | |" in md
    assert "| `--min-sqnr` | 25 | 20.00 dB | ❌ **FAIL** |" in md
    assert f"onnxruntime {report.environment['onnxruntime']}" in md


def test_inspect_text(tmp_path):
    text = render.inspect_text(inspect_model(tiny.save_matmul(W, tmp_path / "m.onnx")))
    assert "opset ai.onnx 17" in text
    assert "128 parameters, 512 B of weights" in text
    assert "quantized  no" in text
    assert "x  float32[1, 16]" in text
    assert "runs       0 int8, 0 hybrid, 1 float" in text


def test_summary_shows_the_accuracy_tradeoff_measured_by_the_search(tmp_path):
    import ptq
    from ptq.report.render import conversion_summary
    from tests import tiny

    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    data = tiny.image_samples(tmp_path / "d", n=16)
    goal = ptq.convert(model, ptq.Config(output=tmp_path / "p.onnx", calibration_data=data, write_ort=False)).held_out.sqnr_db + 3
    result = ptq.convert(model, ptq.Config(output=tmp_path / "q.onnx", calibration_data=data, target_sqnr=goal, write_ort=False))
    lines = conversion_summary(result).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  trade-off on 4 held-out validation samples"))
    rows = lines[start + 2 : start + 2 + len(result.accuracy.tradeoff())]
    for line, trial in zip(rows, result.accuracy.tradeoff(), strict=True):
        regions, sqnr, cosine = line.split()[:3]
        assert int(regions) == trial.regions and float(cosine) == pytest.approx(trial.figures.cosine, abs=1e-5)
        assert sqnr == ("inf" if math.isinf(trial.figures.sqnr_db) else f"{trial.figures.sqnr_db:.1f}")
    written = [line for line in rows if "written" in line]
    assert len(written) == 1 and int(written[0].split()[0]) == len(result.accuracy.placements)
