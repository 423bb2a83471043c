"""Run one conversion in a child process and measure it: wall time, peak RSS, outcome.

The parent calls ``run_conversion``; it starts ``python -m bench.convert_one TOOL MODEL OUTPUT
[CALIBRATION_DIR]``, reaps it with ``os.wait4`` and reads the one-line JSON verdict the child
writes on its stdout. A recipe that raises, a child that dies or hangs past the timeout, all
become a ``Conversion`` with ``error`` set.

Peak memory is the child's own ``VmHWM`` (peak resident set of its address space since exec),
which the child reads from /proc/self/status when the recipe returns. ``ru_maxrss`` from
``wait4`` is not used when the child reports VmHWM: Linux carries the forking parent's resident
set into the child's ``ru_maxrss`` across fork and exec, so a child of a benchmark process that
holds 900 MiB of sessions would report at least 900 MiB whatever it did itself.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

VERDICT_PREFIX = "BENCH-VERDICT "


@dataclass(frozen=True)
class Conversion:
    """The outcome of one tool on one model."""

    tool: str
    output: Path | None  # the int8 .onnx, None on failure
    error: str | None  # one line, None on success
    convert_s: float  # the recipe call alone, measured in the child (nan if it never returned)
    process_s: float  # the whole child process (interpreter start and imports included)
    peak_rss_kib: int  # VmHWM of the child (ru_maxrss from wait4, an upper bound, if the child died)
    notes: tuple[str, ...] = ()  # what the recipe had to do (e.g. a documented fallback)

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(error: BaseException | str, limit: int = 200) -> str:
    """A single-line, bounded description of an error, naming where a Python exception was raised."""
    if isinstance(error, str):
        text = error
    else:
        text = f"{type(error).__name__}: {shorten_ort_message(str(error))}".rstrip(": ")
        frames = traceback.extract_tb(error.__traceback__)
        if frames and not text.startswith(("Fail:", "InvalidGraph:", "InvalidArgument:", "RuntimeException:")):
            text += f" (in {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name})"
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def shorten_ort_message(message: str) -> str:
    """An onnxruntime error without its boilerplate: the failing node's name and the error itself.

    "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from P failed:This is an invalid model.
    In Node, ("N", Op, ...) : (...) -> (...) , Error E" becomes "INVALID_GRAPH: node N (Op): E".
    """
    match = re.match(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)", message, re.DOTALL)
    if not match:
        return message
    code, rest = match.groups()
    rest = re.sub(r"^Load model from .*? failed:", "", rest, flags=re.DOTALL)
    node = re.search(r'In Node, \("([^"]*)", (\w+),.*, Error (.*)', rest, re.DOTALL)
    if node:
        return f"{code}: node {node.group(1)} ({node.group(2)}): {node.group(3)}"
    return f"{code}: {rest}"


def run_conversion(
    tool: str,
    model: Path,
    output: Path,
    calibration_dir: Path | None,
    timeout_s: float,
    log_path: Path,
) -> Conversion:
    """Convert ``model`` with ``tool`` in a child process; stdout/stderr of the child go to ``log_path``."""
    command = [sys.executable, "-m", "bench.convert_one", tool, str(model), str(output)]
    if calibration_dir is not None:
        command.append(str(calibration_dir))
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
        status, rusage, timed_out = _wait_with_timeout(child.pid, timeout_s)
    child.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting on a reaped pid
    process_s = time.perf_counter() - started
    verdict = _read_verdict(log_path)
    error = _error_of(verdict, child.returncode, timed_out, timeout_s, log_path)
    if error is None and not output.exists():
        error = "no output file written"
    return Conversion(
        tool=tool,
        output=output if error is None else None,
        error=error,
        convert_s=float(verdict.get("convert_s", float("nan"))),
        process_s=process_s,
        peak_rss_kib=int(verdict.get("peak_rss_kib") or rusage.ru_maxrss),
        notes=tuple(verdict.get("notes") or ()),
    )


def _wait_with_timeout(pid: int, timeout_s: float) -> tuple[int, resource.struct_rusage, bool]:
    """``os.wait4`` the child (status, rusage, timed out?), killing it with SIGKILL after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        reaped, status, rusage = os.wait4(pid, os.WNOHANG)
        if reaped == pid:
            return status, rusage, False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, rusage = os.wait4(pid, 0)
            return status, rusage, True
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _read_verdict(log_path: Path) -> dict:
    """The child's JSON verdict (last line starting with ``VERDICT_PREFIX``), or {}."""
    verdict = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith(VERDICT_PREFIX):
            verdict = json.loads(line[len(VERDICT_PREFIX) :])
    return verdict


def _error_of(verdict: dict, exit_code: int, timed_out: bool, timeout_s: float, log_path: Path) -> str | None:
    """One line saying why the conversion failed, or None if it succeeded."""
    if timed_out:
        return f"timed out after {timeout_s:.0f} s"
    if verdict.get("error"):
        return verdict["error"]
    if exit_code != 0 or not verdict:
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        return one_line(f"{how}: {tail[0] if tail else 'no output'}")
    return None


def peak_rss_kib() -> int | None:
    """This process's peak resident set size in KiB (VmHWM of /proc/self/status), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    """Child entry: run one recipe, print the verdict line, exit 0 (the verdict carries any error)."""
    from bench.peers import RECIPES

    tool, model, output = argv[0], Path(argv[1]), Path(argv[2])
    calibration_dir = Path(argv[3]) if len(argv) > 3 else None
    started = time.perf_counter()
    try:
        notes = RECIPES[tool](model, output, calibration_dir)
        verdict = {"error": None, "notes": list(notes or [])}
    except BaseException as error:  # noqa: BLE001 - any failure of a peer is a result, not a crash
        traceback.print_exc()
        verdict = {"error": one_line(error)}
    verdict["convert_s"] = time.perf_counter() - started
    verdict["peak_rss_kib"] = peak_rss_kib()
    sys.stdout.flush()
    sys.stderr.flush()
    print(VERDICT_PREFIX + json.dumps(verdict), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
