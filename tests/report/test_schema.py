"""The JSON report has exactly the keys ``ptq/report/schema.md`` documents, on real reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ptq.report
from tests.report import real

SCHEMA_DOC = Path(ptq.report.__file__).with_name("schema.md")


def documented_keys() -> list[str]:
    keys = []
    for line in SCHEMA_DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([a-z0-9_.\[\]*]+)` \| ", line)
        if m and "|" in line[m.end() :]:
            keys.append(m.group(1))
    return keys


def paths(value, prefix: str = ""):
    """Every key path of a JSON value: ``a.b``, list elements as ``[]``."""
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path, child
            yield from paths(child, path)
    elif isinstance(value, list):
        for child in value:
            yield from paths(child, prefix + "[]")


def pattern(key: str) -> re.Pattern:
    """``*`` matches one key; a trailing ``*`` any key, dots included (``opsets["ai.onnx"]``)."""
    body = re.escape(key)
    if key.endswith(".*"):
        body = body[: -len(r"\*")] + r"[^\[\]]+"
    return re.compile(body.replace(r"\*", r"[^.\[\]]+") + "$")


def check(doc: dict, require_all: bool) -> None:
    keys = documented_keys()
    patterns = [(k, pattern(k)) for k in keys]
    found = dict(paths(doc))
    undocumented = sorted({p for p in found if not any(rx.match(p) for _, rx in patterns)})
    assert not undocumented, f"keys missing from schema.md: {undocumented}"
    if not require_all:
        return
    absent = []
    for key, rx in patterns:
        if key.endswith(".*") or any(rx.match(p) for p in found):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        parent_rx = pattern(parent) if parent else None
        parent_values = [v for p, v in found.items() if parent_rx and parent_rx.match(p)]
        # a key is required where its parent object exists (a null or empty parent has no children)
        if parent == "" or any(isinstance(v, dict) for v in parent_values):
            absent.append(key)
    assert not absent, f"documented keys absent from a {doc['kind']} report: {absent}"


def load(run: real.Run) -> dict:
    return json.loads(run.file("report.json").read_text(encoding="utf-8"))


def test_schema_doc_lists_keys():
    keys = documented_keys()
    assert len(keys) > 100 and len(keys) == len(set(keys))
    assert {"schema", "schema_version", "summary.size_ratio", "gates.results[].passed"} <= set(keys)


def test_convert_report_matches_schema():
    doc = load(real.det_convert())
    assert (
        doc["schema"] == ptq.report.SCHEMA == "ptq-report" and doc["schema_version"] == ptq.report.SCHEMA_VERSION == 1
    )
    assert doc["kind"] == "convert"
    check(doc, require_all=True)


def test_compare_report_matches_schema():
    doc = load(real.det_compare())
    assert doc["kind"] == "compare"
    check(doc, require_all=True)


def test_bench_report_keys_are_documented():
    doc = load(real.det_bench())
    assert doc["kind"] == "bench" and doc["fidelity"] is None
    check(doc, require_all=False)


def test_convert_report_figures_are_real():
    doc = load(real.det_convert())
    s = doc["summary"]
    assert s["reference_size_bytes"] == doc["models"][0]["size_bytes"] > 4_000_000
    assert (
        s["size_ratio"] == pytest.approx(s["candidate_size_bytes"] / s["reference_size_bytes"])
        and s["size_ratio"] < 0.5
    )
    assert s["speedup"] == pytest.approx(s["reference_median_ms"] / s["candidate_median_ms"])
    assert 0.5 < s["cosine"] < 1 and s["cosine_min"] <= s["cosine"] and 3 < s["sqnr_db"] < 40
    assert s["top1"] is None and "class scores" in doc["missing"]["top1"]
    lat = doc["latency"]
    assert lat["threads"] == doc["threads"] == 1 and lat["runs"] == 20 and lat["warmup_runs"] == 2
    assert [len(m["runs_ms"]) for m in lat["models"]] == [20, 20]
    assert doc["data"] == {"source": "eval", "path": str(real.det_eval()), "samples": real.EVAL_SAMPLES,
                           "description": f"{real.EVAL_SAMPLES} eval samples from {real.det_eval()}"}  # fmt: skip
    assert doc["kernels"]["int8"] > 100 and doc["conversion"]["mode"] == "static"
    assert doc["gates"]["passed"] is True and len(doc["gates"]["results"]) == 4
    conv = next(r for r in doc["op_types"] if r["op_type"] == "Conv")
    assert conv["kernels"]["int8"] == conv["nodes"][0] and conv["bytes"][1] < conv["bytes"][0] / 3
    assert len(doc["layers"]["tensors"]) > 100
    env = doc["environment"]
    assert env["onnxruntime"] and env["onnx"] and env["ptq"] == ptq.__version__
    assert set(env["cpu"]["flags"]) >= {"avx2", "avx512_vnni", "avx_vnni"}
