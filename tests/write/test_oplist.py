"""One source of truth for what runs int8 (issue 13.4): the op list's count of the compute nodes
onnxruntime runs is what ptq inspect and ptq compare count on the written model, and the per-layer
table labels each tensor with the op list's kernel."""

import ptq
from ptq.report.build import MeasureOptions
from ptq.report.inspect import inspect_model
from tests import tiny


def test_convert_inspect_and_compare_count_the_same_int8_nodes_and_label_layers_by_the_op_list(tmp_path):
    model = tiny.save(tiny.small_cnn(), tmp_path / "m.onnx")
    calib = tiny.image_samples(tmp_path / "calib", n=6)
    result = ptq.convert(model, ptq.Config(output=tmp_path / "q.onnx", calibration_data=calib, write_ort=False))
    executed = result.oplist.executed
    by_source = result.oplist.summary()
    # Conv+Relu fuse into one QLinearConv: more source nodes run int8 than compute nodes do.
    assert by_source["int8"] > executed["int8"] > 0
    assert inspect_model(result.outputs.onnx).executed == executed
    options = MeasureOptions(latency=False, layers=True)
    compared = ptq.compare(model, result.outputs.onnx, calib, options=options)
    measured = ptq.measure(result, calib, options=options)
    assert compared.models[1].executed == measured.models[1].executed == executed
    kernels = {e.name: e.kernel for e in result.oplist.nodes}
    for report in (measured, compared):
        labelled = [t for t in report.layers.tensors if t.node]
        assert labelled and all(t.kernel == kernels[t.node] for t in labelled)
    relu = next(t for t in measured.layers.tensors if t.node == "relu1")
    assert relu.kernel == "int8"  # fused into conv1's QLinearConv: the op list says int8
    conv = next(t for t in measured.layers.tensors if t.node == "conv1")
    assert conv.kernel == "int8" and not conv.int8  # its float output is not an int8 tensor, yet it runs int8
