"""What onnxruntime's CPU execution provider can run in int8, by ONNX op type.

This table only steers what ptq *tries* to quantize. What really runs int8 is read back from
the graph onnxruntime keeps after its own optimizations (``ptq.write.oplist``), so a wrong entry
here shows up as a float fallback in the op list, never as a false int8 claim.

Source: onnxruntime ``core/optimizer/qdq_transformer/selectors_actions/
qdq_selector_action_transformer.cc`` (the CPU QDQ fusions), checked against the op lists of real
models in ``tests/``.
"""

from __future__ import annotations

# DQ(x), DQ(w) [, DQ(bias int32)] -> op -> Q  ==> QLinearConv / QLinearMatMul / QGemm.
WEIGHTED = frozenset({"Conv", "MatMul", "Gemm"})

# onnxruntime 1.32 has a QLinearConvTranspose kernel but its CPU QDQ transformer does not fuse
# DQ -> ConvTranspose -> Q into it (checked on PP-OCR det): store the weight int8 and keep the
# float kernel, as in dynamic mode.
WEIGHT_ONLY_STATIC = frozenset({"ConvTranspose"})

# Per-channel weight axis: the output-channel axis of each weighted op's weight.
#   Conv W [M, C/g, k...] -> 0;  ConvTranspose W [C, M/g, k...] -> 1;  MatMul B [..., K, N] -> -1;
#   Gemm B [K, N] -> 1, or [N, K] with transB=1 -> 0.
CONV_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}

# DQ inputs -> op -> Q  ==> QLinearAdd, QLinearMul, QLinearConcat, QLinearAveragePool, ...
ELEMENTWISE = frozenset(
    {"Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax", "Where"}
)

# Ops run int8 through a 256-entry lookup table built from an onnxruntime table kernel the
# op has no name in: HardSigmoid as QLinearLeakyRelu with alpha 1 (``ptq.quantize.hardsigmoid``).
TABLE = frozenset({"HardSigmoid"})

# DQ -> op -> Q with equal scale and zero point on both sides: onnxruntime drops the pair and
# runs the op on the int8 tensor. The output must reuse the input's quantization parameters.
DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Slice",
        "Gather",
        "Expand",
        "Tile",
        "MaxPool",
        "Resize",
        "Split",
        "DepthToSpace",
        "SpaceToDepth",
    }
)

# Activations that onnxruntime folds into the following QuantizeLinear when the Q's range lies
# inside the activation's range (ReluQuantFusion, ClipQuantFusion): they cost nothing in int8.
CLIPPING_ACTIVATIONS = frozenset({"Relu", "Clip"})

# Which input of each op carries the data that is quantized (others are shapes, indices, axes).
DATA_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Slice": (0,),
    "Gather": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Resize": (0,),
    "Split": (0,),
    "Where": (1, 2),
    "Clip": (0,),
}

# Ops whose output has a fixed, known range (so calibration of it is not needed).
FIXED_OUTPUT_RANGE: dict[str, tuple[float, float]] = {"Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0)}

# Hybrid kernels for dynamic mode: int8 weights, activations quantized at run time.
HYBRID = frozenset({"MatMul", "Gemm"})

# Recurrent ops with a hybrid kernel (com.microsoft DynamicQuantizeLSTM), in both modes:
# ``ptq.quantize.lstm``.
HYBRID_RECURRENT = frozenset({"LSTM"})

# Weights of these ops are stored int8 and dequantized in dynamic mode (no fast hybrid kernel:
# ConvInteger with signed weights has no CPU kernel, so the float kernel keeps running).
WEIGHT_ONLY = frozenset({"Conv", "ConvTranspose", "Gather"})


def data_inputs(op_type: str, n_inputs: int) -> tuple[int, ...]:
    """Indices of the inputs of ``op_type`` that carry quantizable data."""
    if op_type in DATA_INPUTS:
        return tuple(i for i in DATA_INPUTS[op_type] if i < n_inputs)
    if op_type in ("Conv", "ConvTranspose", "Gemm"):
        return (0,)
    return tuple(range(n_inputs))
