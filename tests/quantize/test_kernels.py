"""ptq.quantize.kernels: the op tables' invariants and data_inputs."""

from __future__ import annotations

from ptq.quantize import kernels


def test_data_inputs_of_listed_ops_keep_only_existing_indices():
    assert kernels.data_inputs("Reshape", 2) == (0,)
    assert kernels.data_inputs("Where", 3) == (1, 2)
    assert kernels.data_inputs("Where", 2) == (1,)  # index 2 does not exist
    assert kernels.data_inputs("Clip", 3) == (0,)  # min/max are bounds, not data


def test_data_inputs_of_weighted_ops_is_the_activation_only():
    for op in ("Conv", "ConvTranspose", "Gemm"):
        assert kernels.data_inputs(op, 3) == (0,)


def test_data_inputs_of_other_ops_is_every_input():
    assert kernels.data_inputs("Add", 2) == (0, 1)
    assert kernels.data_inputs("Concat", 4) == (0, 1, 2, 3)
    assert kernels.data_inputs("MatMul", 2) == (0, 1)
    assert kernels.data_inputs("Add", 0) == ()


def test_tables_are_consistent():
    assert set(kernels.CONV_WEIGHT_AXIS) <= kernels.WEIGHTED | kernels.WEIGHT_ONLY_STATIC
    assert not kernels.WEIGHTED & kernels.WEIGHT_ONLY_STATIC
    assert not kernels.DATA_MOVEMENT & kernels.ELEMENTWISE
    assert set(kernels.FIXED_OUTPUT_RANGE) <= kernels.ELEMENTWISE
    for lo, hi in kernels.FIXED_OUTPUT_RANGE.values():
        assert lo < hi
    assert kernels.HYBRID <= kernels.WEIGHTED
    for op, indices in kernels.DATA_INPUTS.items():
        assert indices and all(i >= 0 for i in indices), op
