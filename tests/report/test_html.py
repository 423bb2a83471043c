"""The HTML report: one self-contained file whose plots are well-formed SVG; in the model tier,
Debian's chromium renders it headless and the plots are visibly drawn."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.report import real

SVG_NS = "{http://www.w3.org/2000/svg}"
# Opaque fills the plots use (ptq.report.html): model colours and the int8/float kernel colours.
BLUE, ORANGE = (0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18)
GREEN, RED = (0x54, 0xA2, 0x4B), (0xE4, 0x57, 0x56)


def page() -> str:
    return real.det_convert().file("report.html").read_text(encoding="utf-8")


def svgs(text: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", text, flags=re.DOTALL)]


def test_self_contained():
    text = page()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<script" not in text and " src=" not in text and "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\"' )]+", text)) == {"http://www.w3.org/2000/svg"}


def test_plots_are_well_formed_svg_with_data():
    text = page()
    plots = {svg.get("aria-label"): svg for svg in svgs(text)}
    assert {"latency distributions", "latency per run", "SQNR (dB), higher is better", "nodes of the source model",
            "dB", "kB"} <= set(plots)  # fmt: skip
    runs = plots["latency per run"]
    assert len(runs.findall(f"{SVG_NS}circle")) == 40  # 20 timed runs of each model
    layers = plots["SQNR (dB), higher is better"]
    assert len(layers.findall(f"{SVG_NS}rect")) > 100  # one column per tensor
    for heading in (
        "Summary",
        "Gates",
        "Latency",
        "Per-layer error",
        "By op type",
        "Size by op type",
        "Float fallbacks",
    ):
        assert f"<h2>{heading}</h2>" in text


def _count(image, rgb) -> int:
    return sum(n for n, color in image.getcolors(maxcolors=1 << 24) if color[:3] == rgb)


@pytest.mark.models
def test_chromium_renders_the_plots(tmp_path):
    """Render the real report headless (Debian: ``apt-get install chromium``) and look at the pixels."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    html = real.det_convert().file("report.html")
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={shot}", "--window-size=1200,4200", Path(html).resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 4200)
    # Every plot leaves its colour on the page: run dots and layer bars (blue/orange), the stacked
    # kernel bars (green int8, red float), the size bars.
    counts = {name: _count(image, rgb) for name, rgb in (("blue", BLUE), ("orange", ORANGE), ("green", GREEN),
                                                          ("red", RED))}  # fmt: skip
    assert all(n > 300 for n in counts.values()), counts
    # And the page is not mostly blank: plenty of non-white pixels.
    white = _count(image, (255, 255, 255))
    assert white < 0.93 * image.size[0] * image.size[1]


def test_accuracy_search_tradeoff_is_a_table_and_plots_of_every_trial(tmp_path):
    """After a --target-* search the page shows its trade-off: a table (best candidate per count
    of regions out of int8) and a plot whose points are the search's trials, placed by value."""
    import json

    from click.testing import CliRunner

    import ptq
    from ptq.cli import main
    from tests import tiny

    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    data = tiny.image_samples(tmp_path / "d", n=16)
    goal = ptq.convert(model, ptq.Config(output=tmp_path / "p.onnx", calibration_data=data, write_ort=False)).held_out.sqnr_db + 3
    run = CliRunner().invoke(main, ["convert", model, "-c", data, "-o", str(tmp_path / "q.onnx"), "--target-sqnr", f"{goal:.2f}",
                                    "--report", str(tmp_path / "r.html"), "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert run.exit_code == 0, run.output
    accuracy = json.loads((tmp_path / "r.json").read_text())["conversion"]["accuracy"]
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Accuracy search</h2>" in text
    table = re.search(r"<table><tr><th>regions out of int8</th>.*?</table>", text, flags=re.DOTALL).group(0)
    counts = [int(c) for c in re.findall(r'<tr><td class="n">(\d+)</td>', table)]
    assert counts == [t["regions"] for t in accuracy["tradeoff"]] and len(counts) >= 2
    plots = {svg.get("aria-label"): svg for svg in svgs(text)}
    fidelity = plots[accuracy["rank"]["label"]]
    circles = fidelity.findall(f"{SVG_NS}circle")
    drawn = [(int(c.get("data-regions")), float(c.get("data-value"))) for c in circles]
    assert drawn == [(t["regions"], pytest.approx(t["rank_db"], rel=1e-5)) for t in accuracy["curve"]]
    line = fidelity.find(f"{SVG_NS}line[@class='target']")
    assert float(line.get("data-value")) == pytest.approx(goal, abs=0.01)
    # higher figures are drawn higher, the target line between those above it and those below
    for c, t in zip(circles, accuracy["curve"]):
        above = float(c.get("cy")) < float(line.get("y1"))
        assert above == (t["rank_db"] > float(line.get("data-value"))), t
    assert [c.get("stroke") for c in circles].count("#222") == 1  # the written one, ringed
    timing = plots["run ms (rough)"].findall(f"{SVG_NS}circle")
    assert [float(c.get("data-value")) for c in timing] == [pytest.approx(t["run_ms"], rel=1e-3, abs=1e-3) for t in accuracy["curve"]]
