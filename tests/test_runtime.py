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


def test_sessions_are_reused_only_for_the_same_bytes_and_equivalent_options(tmp_path):
    from ptq.runtime import SessionCache, reusing_sessions

    model = tiny.small_cnn().SerializeToString()
    other = tiny.small_cnn(seed=1).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    with reusing_sessions() as cache:
        first = inference_session(model, session_options(threads=1))
        # one intra-op thread: spinning makes no difference, so the session is the same
        assert inference_session(model, session_options(threads=1, spinning=False, sequential=True)) is first
        assert inference_session(model, session_options(threads=2)) is not first
        assert inference_session(other, session_options(threads=1)) is not first
        assert inference_session(str(path), session_options(threads=1)) is not first  # a file: its own key
        assert inference_session(str(path), session_options(threads=1)) is inference_session(path, session_options(threads=1))
        assert inference_session(model, session_options(threads=1), reuse=False) is not first
        # a session that writes its optimized model is never reused: the file must be written
        saving = session_options(threads=1, save_optimized_to=tmp_path / "opt.onnx")
        assert inference_session(model, saving) is not first and (tmp_path / "opt.onnx").exists()
        with reusing_sessions() as inner:  # nested scopes share the outer cache
            assert inner is cache and inference_session(model, session_options(threads=1)) is first
        assert cache.reused == 4 and cache.created == 4 and cache.saved_s > 0
    assert inference_session(model, session_options(threads=1)) is not first  # outside: not reused


def test_the_session_cache_keeps_the_most_recently_used():
    from ptq.runtime import SessionCache, reusing_sessions

    models = [tiny.small_cnn(seed=s).SerializeToString() for s in range(3)]
    with reusing_sessions(SessionCache(capacity=2)) as cache:
        a, b = (inference_session(m, session_options(threads=1)) for m in models[:2])
        assert inference_session(models[0], session_options(threads=1)) is a  # a is now the most recent
        inference_session(models[2], session_options(threads=1))  # evicts b
        assert inference_session(models[0], session_options(threads=1)) is a
        assert inference_session(models[1], session_options(threads=1)) is not b
        assert cache.created == 4 and cache.reused == 2
