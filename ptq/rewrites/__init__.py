"""Float-exact graph rewrites applied before quantization, one module per rewrite.

Every rewrite is a pass: it finds its sites in the float model, declines the ones it cannot
rewrite with a reason, and applies the rest in place. A rewrite is exact in float (the rewritten
model computes the same function up to float rounding; each module's tests check it through
onnxruntime); whether it helps the int8 model is measured elsewhere.

This module holds only the types the passes share; the passes themselves live beside it, and
``ptq.rewrites.passes.PASSES`` orders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Declined:
    """A site a pass found but left alone, and why (shown to the user and saved in the recipe)."""

    site: str  # a node name (or the first node of the pattern)
    reason: str


@dataclass(frozen=True)
class RewriteResult:
    """What one pass did to a model.

    Attributes:
        name: the pass's name (its module name), as recorded in the recipe.
        applied: the sites rewritten, by node name.
        declined: the sites found but left alone, with reasons.
        rescaled: tensors whose values now differ from the float model's namesakes on purpose
            (a per-channel rescaling): per-layer comparisons leave them out.
        keep_float: nodes the rewrite needs kept float (e.g. a Mul holding a per-channel
            constant that an int8 kernel would quantize away).
        notes: lines for the user.
        settings: the pass's numeric parameters, by name (e.g. SmoothQuant's alpha): a ranges
            file calibrated after the pass fits only a rerun with the same settings.
        inserted: nodes the pass added to the graph (per-channel Muls), which have no source
            node: the op list gives each a row of its own.
        measured: per tensor, the channel statistics a data-driven pass measured on the samples
            (activation equalization's channel maxima), saved with the recipe so that
            ``--load-ranges`` repeats the pass without samples.
    """

    name: str
    applied: tuple[str, ...] = ()
    declined: tuple[Declined, ...] = ()
    rescaled: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    settings: tuple[tuple[str, float], ...] = ()
    measured: tuple[tuple[str, tuple[float, ...]], ...] = ()
    inserted: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.applied)
