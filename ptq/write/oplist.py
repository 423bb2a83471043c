"""The op list: for every node of the source model, the kernel onnxruntime really runs for it.

We let onnxruntime optimize the quantized model at the extended level (the level at which its
QDQ fusions happen, without CPU-specific layout changes), save the graph it would run, and read
it: a source node that became QLinearConv/QGemm/QLinearAdd/... or now moves int8 tensors runs
int8; one inside DynamicQuantizeMatMul/MatMulIntegerToFloat, or an LSTM that is still a
DynamicQuantizeLSTM there, runs hybrid; one that kept its float
op runs float, with the reason from the plan, or "onnxruntime did not fuse it" when the plan
meant it to run int8. Nothing here trusts the plan's intentions.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from ptq.errors import OutputError, PtqError
from ptq.graph import ort_error_line
from ptq.loader import SourceNode
from ptq.quantize.plan import Decision
from ptq.runtime import inference_session, session_options
from ptq.write.atomic import write_bytes

INT8 = "int8"
HYBRID = "hybrid"
FLOAT = "float"
FOLDED = "folded"
KERNELS = (INT8, HYBRID, FLOAT, FOLDED)

INT8_KERNELS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearSoftmax",
        "QLinearWhere",
        "QLinearConvTranspose",
        "QLinearReduceMean",
        "ConvInteger",
    }
)
HYBRID_KERNELS = frozenset({"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeLSTM"})
# Hybrid whatever feeds them: they quantize their activations themselves.
SELF_QUANTIZING = frozenset({"DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})
INT8_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8})


@dataclass(frozen=True)
class OpEntry:
    name: str
    op_type: str
    kernel: str  # int8 | hybrid | float | folded
    reason: str
    runs_as: str | None = None  # the onnxruntime node type that executes it
    inserted: bool = False  # a node a ptq rewrite added, not a source node


@dataclass(frozen=True)
class OpList:
    """One entry per node of the source model; ``executed`` counts the compute nodes of the graph
    onnxruntime runs (``executed_counts``): the figure ``ptq inspect`` and ``ptq compare`` give
    for the written model, from the same graph (not written to the .ops.json)."""

    nodes: list[OpEntry]
    executed: dict[str, int] | None = field(default=None, compare=False)

    def summary(self) -> dict[str, int]:
        counts = {k: 0 for k in KERNELS}
        for entry in self.nodes:
            counts[entry.kernel] += 1
        counts["inserted"] = self.inserted  # of those, nodes ptq's rewrites added (no source node)
        return counts

    def to_json(self) -> dict:
        # "inserted" only where true: the source nodes' entries keep their five fields
        return {"summary": self.summary(), "nodes": [{k: v for k, v in asdict(e).items() if k != "inserted" or v} for e in self.nodes]}

    @property
    def inserted(self) -> int:
        return sum(1 for e in self.nodes if e.inserted)

    def float_fallbacks(self) -> list[OpEntry]:
        return [e for e in self.nodes if e.kernel == FLOAT]

    def grouped_fallbacks(self) -> list[FallbackGroup]:
        """The float nodes grouped by op type and reason template (``group_fallbacks``)."""
        return group_fallbacks(self.float_fallbacks())


# A node name quoted in a reason (``f"{name!r}"``), with the space before it; and a number that
# stands alone (not part of a name such as Conv.24 or a word such as int8).
_QUOTED = re.compile(r"""\s?(?:'[^']*'|"[^"]*")""")
_NUMBER = re.compile(r"(?<![\w.@/-])\d+(?:\.\d+)?(?![\w.@/-]|\.\d)")
EXAMPLES = 2


@dataclass(frozen=True)
class FallbackGroup:
    """Float nodes of one op type whose reasons differ only in the node names and numbers they
    quote: ``reason`` is the template with the names dropped and each number slot filled with
    its value (or "lo-hi" when the nodes differ), ``examples`` the first node names in graph
    order when the reasons were merged (empty when every reason was the same text)."""

    op_type: str
    reason: str
    count: int
    examples: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"op_type": self.op_type, "reason": self.reason, "count": self.count, "examples": list(self.examples)}

    def describe(self) -> str:
        examples = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"{self.op_type}: {self.reason}{examples}"


def reason_template(reason: str) -> tuple[str, tuple[str, ...]]:
    """``reason`` without the node names it quotes, numbers replaced by ``{}``, and the numbers."""
    text = _QUOTED.sub("", reason).replace("{", "{{").replace("}", "}}")
    numbers = tuple(_NUMBER.findall(text))
    return _NUMBER.sub("{}", text), numbers


def _slot(values: list[str]) -> str:
    distinct = sorted(set(values), key=float)
    return distinct[0] if len(distinct) == 1 else f"{distinct[0]}-{distinct[-1]}"


def group_fallbacks(entries: list[OpEntry]) -> list[FallbackGroup]:
    """Group float entries by (op type, reason template), most nodes first, then by op type and
    reason. Reasons that name a node ("fused into Conv 'Conv.24' by onnxruntime; ...") or quote
    a count ("weight has 144 elements") otherwise make one line per node."""
    groups: dict[tuple[str, str], list[OpEntry]] = {}
    numbers: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for entry in entries:
        template, values = reason_template(entry.reason)
        key = (entry.op_type, template)
        groups.setdefault(key, []).append(entry)
        numbers.setdefault(key, []).append(values)
    result = []
    for (op_type, template), members in groups.items():
        slots = [_slot(list(column)) for column in zip(*numbers[(op_type, template)])]
        reason = template.format(*slots)
        merged = len({m.reason for m in members}) > 1 or reason != members[0].reason
        examples = tuple(m.name for m in members[:EXAMPLES]) if merged else ()
        result.append(FallbackGroup(op_type, reason, len(members), examples))
    return sorted(result, key=lambda g: (-g.count, g.op_type, g.reason))


def optimized_graph(model_bytes: bytes) -> onnx.ModelProto:
    """The graph onnxruntime runs for ``model_bytes`` at the extended level."""

    with tempfile.TemporaryDirectory(prefix="ptq-oplist-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        options = session_options(threads=1, optimization="ORT_ENABLE_EXTENDED", save_optimized_to=target)
        try:
            inference_session(model_bytes, options)
        except Exception as exc:
            reason = ort_error_line(exc)
            if target.exists():  # loaded, but saving the optimized graph failed: disk full?
                raise OutputError(f"cannot write a temporary file in {tmp}: {reason}") from None
            raise PtqError(f"internal error: onnxruntime cannot load the quantized model: {reason}") from None
        return onnx.load(str(target), load_external_data=False)  # the graph is enough


@dataclass(frozen=True)
class _Executed:
    op_type: str
    kernel: str


def executed_kernels(optimized: onnx.ModelProto) -> dict[str, _Executed]:
    """Node name -> what onnxruntime runs, for every node of the optimized graph.

    Fused nodes are named after the node they replace by onnxruntime's QDQ actions; data
    movement nodes keep their name and run int8 when their data input is an int8 tensor.
    """
    graph = optimized.graph
    int8_tensors: set[str] = {t.name for t in graph.initializer if t.data_type in INT8_TYPES}
    dynamic_outputs: set[str] = set()
    result: dict[str, _Executed] = {}
    for node in graph.node:  # the saved graph is topologically sorted
        op = node.op_type
        if op == "DynamicQuantizeLinear":
            dynamic_outputs |= set(node.output)
        if op in INT8_KERNELS:
            kernel = INT8
        elif op in HYBRID_KERNELS:
            kernel = HYBRID if (op in SELF_QUANTIZING or node.input[0] in dynamic_outputs) else INT8
        elif op in ("QuantizeLinear", "DynamicQuantizeLinear"):
            kernel = INT8
        elif op == "DequantizeLinear":
            kernel = FLOAT
        elif node.input and node.input[0] in int8_tensors:
            kernel = INT8  # data movement on an int8 tensor
        else:
            kernel = FLOAT
        if kernel == INT8 and op not in ("DequantizeLinear",):
            int8_tensors |= {o for o in node.output if o}
        if op in ("QuantizeLinear", "DynamicQuantizeLinear"):
            int8_tensors |= {node.output[0]}
        if op in INT8_KERNELS and op not in ("QLinearConv", "QLinearMatMul", "QGemm") or op.startswith("QLinear"):
            int8_tensors |= {o for o in node.output if o}
        result[node.name] = _Executed(op, kernel)
    return result


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def executed_counts(executed: dict[str, _Executed]) -> dict[str, int]:
    """Compute nodes onnxruntime runs, by kernel (int8/hybrid/float): the one count of "what runs
    int8" that convert, inspect and compare all print. Quantize/DequantizeLinear conversions are
    not counted; a source node fused into another (a Relu into its QLinearConv) is part of that one."""
    counts = {INT8: 0, HYBRID: 0, FLOAT: 0}
    for runs in executed.values():
        if runs.op_type not in QDQ_OPS:
            counts[runs.kernel] += 1
    return counts


def _vanished_reason(node: SourceNode) -> str:
    if node.op_type == "Constant":
        return "constant: folded into an initializer"
    if node.op_type == "BatchNormalization":
        return "folded into the preceding Conv by onnxruntime"
    if node.op_type in ("Identity", "Dropout"):
        return "no-op at inference: removed by onnxruntime"
    return "computed ahead of time by onnxruntime's constant folding"


def _owners(source_nodes: list[SourceNode], prepared: list[SourceNode]) -> dict[str, str]:
    """Source node name -> the prepared node that carries its work (itself, or the node
    onnxruntime's basic fusions put in its place: named ``<source>/<Fusion>``, or producing
    the source node's output)."""
    names = {n.name for n in prepared}
    by_prefix = {n.name.split("/", 1)[0]: n.name for n in prepared if "/" in n.name}
    by_output = {o: n.name for n in prepared for o in n.outputs}
    owners: dict[str, str] = {}
    for node in source_nodes:
        if node.name in names:
            owners[node.name] = node.name
        elif node.name in by_prefix:
            owners[node.name] = by_prefix[node.name]
        else:
            for out in node.outputs:
                if out in by_output:
                    owners[node.name] = by_output[out]
                    break
    return owners


def _entry(name: str, op_type: str, decision: Decision | None, runs: _Executed | None) -> tuple[str, str, str | None]:
    """(kernel, reason, runs_as) of one prepared node."""
    if runs is None:
        if decision is not None and decision.quantize and decision.role == "absorbed":
            return INT8, "folded into the int8 QuantizeLinear after it", None
        if decision is not None and decision.quantize:
            return INT8, "fused by onnxruntime into a neighbouring int8 node", None
        return FLOAT, "fused by onnxruntime into a float node", None
    if runs.kernel == FLOAT:
        if decision is not None and decision.role == "weight-only":
            reason = "int8 weight in the file, expanded to float once at load (no int8 kernel to fuse into)"
        elif decision is not None and decision.role == "hybrid":
            reason = f"onnxruntime did not keep its hybrid kernel: runs float {runs.op_type}"
        elif decision is not None and decision.quantize:
            reason = f"onnxruntime did not fuse its QDQ group: runs float {runs.op_type}"
        else:
            reason = decision.reason if decision and decision.reason else f"no int8 kernel in onnxruntime for {op_type}"
        return FLOAT, reason, runs.op_type
    if runs.kernel == INT8 and runs.op_type == op_type:
        return INT8, "runs on int8 tensors (quantize/dequantize pair removed)", runs.op_type
    reason = "int8 kernel" if runs.kernel == INT8 else "int8 weights, activations quantized at run time"
    return runs.kernel, reason, runs.op_type


def build_oplist(
    source_nodes: list[SourceNode],
    prepared: list[SourceNode],
    decisions: dict[str, Decision],
    optimized: onnx.ModelProto,
    rewritten: dict[str, str] | None = None,
    inserted: dict[str, tuple[str, str]] | None = None,
) -> OpList:
    """One entry per source node: what runs it, and why it is float when it is; then one per
    node a ptq rewrite inserted.

    ``rewritten``: prepared nodes a ptq float rewrite removed -> what it did with them.
    ``inserted``: nodes a rewrite added -> (op type, what added it)."""
    rewritten = rewritten or {}
    executed = executed_kernels(optimized)
    owners = _owners(source_nodes, prepared)
    prepared_ops = {n.name: n.op_type for n in prepared}
    entries: list[OpEntry] = []
    for node in source_nodes:
        owner = owners.get(node.name)
        why = rewritten.get(node.name)
        if owner is None:
            entries.append(OpEntry(node.name, node.op_type, FOLDED, why or _vanished_reason(node)))
            continue
        kernel, reason, runs_as = _entry(owner, prepared_ops[owner], decisions.get(owner), executed.get(owner))
        if owner != node.name and why:
            reason = f"{why}, now {prepared_ops[owner]} {owner!r}; that node: {reason}"
        elif owner != node.name:
            reason = f"fused into {prepared_ops[owner]} {owner!r} by onnxruntime; that node: {reason}"
        entries.append(OpEntry(node.name, node.op_type, kernel, reason, runs_as))
    for name, (op_type, why) in (inserted or {}).items():
        kernel, reason, runs_as = _entry(name, op_type, decisions.get(name), executed.get(name))
        entries.append(OpEntry(name, op_type, kernel, f"{why}; {reason}", runs_as, inserted=True))
    return OpList(entries, executed_counts(executed))


def write_oplist(oplist: OpList, path: Path) -> None:
    text = json.dumps(oplist.to_json(), indent=1, sort_keys=False) + "\n"
    write_bytes(path, text.encode())
