"""Real-model runs shared by the report tests (ppocr-det from its pinned wheel, via bench.zoo).

Each run happens once per test session (cached), in a temp folder removed at exit, so the schema,
Markdown, HTML and CLI tests read the same real reports without converting the model again.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from click.testing import CliRunner

from bench import zoo
from ptq.cli import main

REPO = Path(__file__).resolve().parents[2]
DET_CALIBRATION = REPO / "calibration_data" / "ppocr_det"
EVAL_SAMPLES = 4


@dataclass(frozen=True)
class Run:
    folder: Path
    exit_code: int
    stdout: str
    stderr: str

    def file(self, name: str) -> Path:
        return self.folder / name


@cache
def workdir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ptq-report-tests-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def invoke(*args) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    import inspect

    # click < 8.2 mixes stderr into stdout unless told not to; 8.2 always keeps both.
    kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    result = CliRunner(**kwargs).invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@cache
def det_eval() -> Path:
    folder = workdir() / "det_eval"
    zoo.write_calibration_dir("ppocr-det", folder, "eval", n=EVAL_SAMPLES)
    return folder


@cache
def det_convert() -> Run:
    """Static int8 ppocr-det with real eval data, every report format, every gate set to pass."""
    folder = workdir() / "convert"
    folder.mkdir()
    code, out, err = invoke(
        "convert", zoo.fetch_model("ppocr-det"), "-c", DET_CALIBRATION, "-o", folder / "det.int8.onnx",
        "--eval-data", det_eval(), "--runs", 20, "--warmup", 2, "--per-layer",
        "--report", folder / "report.json", "--report", folder / "report.md", "--report", folder / "report.html",
        "--max-size-ratio", 0.5, "--min-speedup", 0.1, "--min-cosine", 0.5, "--min-sqnr", 3,
    )  # fmt: skip
    return Run(folder, code, out, err)


@cache
def det_compare() -> Run:
    """``ptq compare`` of float ppocr-det against its int8 output, with every gate set to fail."""
    folder = workdir() / "compare"
    folder.mkdir()
    code, out, err = invoke(
        "compare", zoo.fetch_model("ppocr-det"), det_convert().file("det.int8.onnx"), "--data", det_eval(),
        "--runs", 10, "--warmup", 1, "--report", folder / "report.json", "--report", folder / "report.md",
        "--max-size-ratio", 0.1, "--min-speedup", 100, "--min-cosine", 0.99999, "--min-sqnr", 60, "--min-top1", 0.5,
    )  # fmt: skip
    return Run(folder, code, out, err)


@cache
def det_bench() -> Run:
    folder = workdir() / "bench"
    folder.mkdir()
    code, out, err = invoke(
        "bench", zoo.fetch_model("ppocr-det"), det_convert().file("det.int8.onnx"), "--data", det_eval(),
        "--runs", 5, "--warmup", 1, "--report", folder / "report.json", "--report", folder / "report.md",
    )  # fmt: skip
    return Run(folder, code, out, err)
