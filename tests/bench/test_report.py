"""Unit tests of the benchmark's pure text helpers: report rendering, loss detection, error lines."""

from bench.convert_one import one_line, shorten_ort_message
from bench.report import (
    Row,
    cpu_description,
    head_to_head,
    headline,
    ptq_losses,
    render_markdown_table,
    render_text_table,
    results_table,
    summarize,
)

REFERENCES = {"ort-static": "ptq-static"}


def row(tool, **fields):
    defaults = {"size_ratio": 0.3, "latency_ms": {1: 10.0}, "speedup": {1: 2.0}, "cosine": 0.999, "sqnr_db": 30.0}
    defaults.update(fields)
    return Row("m", tool, **defaults)


def test_ptq_losses_lists_each_way_a_peer_wins():
    mine = row("ptq-static", task_name="CER", task_value=0.02)
    peer = row(
        "ort-static",
        size_ratio=0.25,
        latency_ms={1: 9.0},
        ptq_ratio={1: 10.0 / 9.0},
        sqnr_db=31.0,
        cosine=0.9995,
        task_name="CER",
        task_value=0.01,
    )
    losses = ptq_losses([mine, peer], REFERENCES, [1])
    assert len(losses) == 4
    assert any("smaller file" in line for line in losses)
    assert any("faster at 1 thread" in line for line in losses)
    assert any("higher SQNR" in line for line in losses)
    assert any("better CER" in line for line in losses)


def test_ptq_losses_ignores_noise_and_worse_peers():
    mine = row("ptq-static", task_name="top1", task_value=1.0)
    peer = row("ort-static", size_ratio=0.5, ptq_ratio={1: 1.02}, sqnr_db=30.05, task_name="top1", task_value=0.9)
    assert ptq_losses([mine, peer], REFERENCES, [1]) == []


def test_ptq_losses_reports_a_ptq_failure():
    losses = ptq_losses([Row("m", "ptq-static", error="failed: boom"), row("ort-static")], REFERENCES, [1])
    assert losses == ["m: ort-static vs ptq-static: ptq-static failed: boom, ort-static converted"]


def test_results_table_footnotes_failures():
    rows = [row("ptq-static"), Row("m", "ort-static", error="failed: no kernel")]
    _, cells, footnotes = results_table(rows, [1])
    assert cells[0][2] == "ok"
    assert cells[1][2] == "failed [1]"
    assert footnotes == ["[1] m ort-static: failed: no kernel"]


def test_summary_and_headline_with_a_tool_that_converted_nothing():
    rows = [row("ptq-static"), Row("m", "ort-static", error="failed: x")]
    summaries = summarize(rows, ["ptq-static", "ort-static"], ["m"], [1])
    assert [(s.tool, s.converted, s.attempted) for s in summaries] == [("ptq-static", 1, 1), ("ort-static", 0, 1)]
    text = headline(summaries, 1, [1])
    assert text.startswith("On 1 real models, converted and running: ptq-static 1, ort-static 0;")
    assert "ptq-static median size 0.300x, speedup 2.00x@1t" in text
    assert head_to_head(rows, REFERENCES, ["m"], [1]) == ["ptq-static vs ort-static: no model converted by both"]


def test_head_to_head_on_models_both_converted():
    rows = [
        row("ptq-static", sqnr_db=20.0),
        row("ort-static", ptq_ratio={1: 0.5}, sqnr_db=10.0, size_ratio=0.25),
        Row("n", "ptq-static", error="failed: x"),
        Row("n", "ort-static", ptq_ratio={1: 9.0}),
    ]
    (line,) = head_to_head(rows, REFERENCES, ["m", "n"], [1])
    assert line == (
        "ptq-static vs ort-static on the 1 models both convert (m): median ptq/peer latency 0.50@1t;"
        " median SQNR 20.0 vs 10.0 dB; median size 0.300 vs 0.250"
    )


def test_tables_render_every_cell():
    text = render_text_table(["a", "b"], [["x", "1.5"], ["yy", "10.25"]])
    assert text.splitlines()[2:] == ["x     1.5", "yy  10.25"]
    assert render_markdown_table(["a"], [["p|q"]]).splitlines()[2] == "| p\\|q |"


def test_cpu_description_reads_name_and_int8_flags():
    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_vnni sse\n"
    assert cpu_description(cpuinfo) == ("Some CPU", ["avx2", "avx512_vnni"])


def test_shorten_ort_message_keeps_node_and_error():
    message = (
        "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from /x.onnx failed:This is an invalid model. "
        'In Node, ("n1", DequantizeLinear, "", -1) : ("a": tensor(int32),) -> ("b",) , Error Unrecognized attribute: axis'
    )
    assert shorten_ort_message(message) == "INVALID_GRAPH: node n1 (DequantizeLinear): Unrecognized attribute: axis"
    assert shorten_ort_message("plain") == "plain"


def test_one_line_names_where_an_exception_was_raised():
    try:
        raise AssertionError()
    except AssertionError as error:
        line = one_line(error)
    assert line.startswith("AssertionError (in test_report.py:")
    assert one_line("a\nb " * 100, limit=20) == "a b a b a b a b a..."
