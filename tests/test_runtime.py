"""ptq.runtime: the one factory of onnxruntime sessions and their options."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ptq.runtime import LOG_SEVERITY, inference_session, session_options
from ptq.write.onnx_file import split_external
from tests import tiny


def test_options_say_what_was_asked_and_always_stay_quiet(tmp_path):
    default = session_options()
    assert default.log_severity_level == LOG_SEVERITY == 4
    options = session_options(threads=2, spinning=False, optimization="ORT_ENABLE_EXTENDED", sequential=True,
                              save_optimized_to=tmp_path / "o.ort", ort_format=True)  # fmt: skip
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.optimized_model_filepath == str(tmp_path / "o.ort")
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.save_model_format") == "ORT"


def test_a_session_from_a_proto_bytes_or_split_weights_computes_the_same():
    model = tiny.small_cnn()
    feed = {i.name: np.random.default_rng(2).normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}  # fmt: skip
    want = inference_session(model).run(None, feed)[0]
    for source in (model.SerializeToString(), split_external(model)):
        np.testing.assert_array_equal(inference_session(source, session_options(threads=1)).run(None, feed)[0], want)
