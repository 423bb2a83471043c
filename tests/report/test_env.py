"""ptq.report.env: the CPU read from a cpuinfo file, and the environment's versions."""

from __future__ import annotations

import os

import onnx
import onnxruntime

import ptq
from ptq.report.env import CPU_FLAGS, cpu_info, environment


def test_cpu_info_reads_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Test CPU @ 3.0GHz\nflags\t\t: fpu sse avx2 avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: amx_int8\n"
    )
    info = cpu_info(str(path))
    assert info["model"] == "Test CPU @ 3.0GHz"
    assert info["flags"] == {"avx2": True, "avx512f": False, "avx512_vnni": True, "avx_vnni": False, "amx_int8": False}
    assert info["logical_cores"] == os.cpu_count()


def test_cpu_info_arm_features_and_missing_file(tmp_path):
    path = tmp_path / "arm"
    path.write_text("processor\t: 0\nFeatures\t: fp asimd avx2\n")
    assert cpu_info(str(path))["flags"]["avx2"] is True
    missing = cpu_info(str(tmp_path / "absent"))
    assert set(missing["flags"]) == set(CPU_FLAGS) and not any(missing["flags"].values())


def test_environment_names_the_installed_versions():
    env = environment()
    assert env["ptq"] == ptq.__version__
    assert env["onnxruntime"] == onnxruntime.__version__
    assert env["onnx"] == onnx.__version__
    assert env["python"].count(".") == 2
    assert set(env["cpu"]["flags"]) == set(CPU_FLAGS)
