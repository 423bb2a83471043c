"""The ordered list of float rewrites: each pass returns a RewriteResult the recipe records."""

from __future__ import annotations

import copy

import onnx

import ptq
from ptq.config import Config
from ptq.progress import silent
from ptq.recipe import FLOAT, Recipe
from ptq.rewrites import RewriteResult, equalize, passes
from tests.rewrites.test_equalize import _model, _saved_with_samples
from tests.rewrites.test_equalize_activations import _hardswish_model
from tests.rewrites.test_smoothquant import _saved_model_and_samples as _smoothable_with_samples


def test_every_pass_has_the_pass_interface_and_a_unique_name():
    names = [p.NAME for p in passes.PASSES]
    assert len(set(names)) == len(names) and names.index("equalize") < names.index("smoothquant")
    for rewrite in passes.PASSES:
        # OPTION None: always on (the float cleanup onnxruntime misses)
        assert (rewrite.OPTION is None or rewrite.OPTION.startswith("--")) and callable(rewrite.enabled) and callable(rewrite.run)


def test_asked_and_describe_name_the_switches():
    config = Config(calibration_data="d", equalize=True, smoothquant=0.5)
    assert passes.asked(config) == (("equalize", ()), ("smoothquant", (("alpha", 0.5),)))
    assert passes.describe(passes.asked(config)) == "--equalize --smoothquant 0.5"
    assert passes.describe(()).startswith("no --equalize")


def test_apply_records_each_enabled_pass_with_its_sites():
    model = _model()
    config = Config(equalize=True)
    recipe = passes.apply(model, config, Recipe.asked(config), silent)
    (result,) = recipe.rewrites
    assert isinstance(result, RewriteResult) and result.name == "equalize"
    assert result.applied == tuple(p.first for p in equalize.find_pairs(_model())) and result.changed
    assert result.declined == () and result.rescaled
    # nothing switched on: nothing applied, the model untouched
    untouched = _model()
    before = copy.deepcopy(untouched)
    assert passes.apply(untouched, Config(), Recipe(), silent).rewrites == ()
    assert untouched == before


def test_a_conversion_returns_the_rewrites_and_their_float_nodes_in_its_recipe(tmp_path):
    path, data = _smoothable_with_samples(tmp_path)
    result = ptq.convert(path, ptq.Config(output=tmp_path / "a.onnx", calibration_data=data, smoothquant=0.5, write_ort=False))
    (rewrite,) = result.recipe.rewrites
    assert rewrite.name == "smoothquant" and set(rewrite.keep_float) == {"act", "x/SmoothQuantMul"}
    for node in rewrite.keep_float:
        placement = next(p for p in result.recipe.placements if p.target == node)
        assert placement.runs == FLOAT and placement.reason == "smoothquant"
    assert result.rescaled == rewrite.rescaled
    # the Mul holding the per-channel constant runs float in the output: it reads that constant as float32
    graph = onnx.load(str(result.outputs.onnx)).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    mul = next(n for n in graph.node if n.name == rewrite.keep_float[0])
    assert mul.op_type == "Mul" and any(i in floats for i in mul.input)
