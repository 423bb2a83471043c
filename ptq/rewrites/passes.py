"""The float rewrites in the order they run: one plain list.

Each entry is a module with ``NAME``, ``OPTION`` (the switch), ``enabled(config)``,
``settings(config)`` (numeric parameters a ranges file must match) and ``run(model, config, progress, fit) ->
RewriteResult`` (``fit``: the positions of the calibration samples the data-driven passes measure,
the fitting part of the validation split) (see ``ptq.rewrites``). Order matters where passes meet the same sites: cross-layer
equalization is data-free and runs first; the data-driven passes measure the model as the passes
before them left it. The float cleanup onnxruntime misses (``fuse_hardswish``, ``fold_affine``)
runs before them all, always (``OPTION`` None: no switch): HardSwish chains first, so that
fold_affine does not fold their Div by 6 into the next Conv and break the pattern; equalization
then sees the Convs with their affine ops folded in.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx

from ptq.config import Config
from ptq.progress import Progress
from ptq.recipe import Recipe
from ptq.rewrites import RewriteResult
from ptq.rewrites import equalize, equalize_activations, fold_affine, fuse_hardswish, smoothquant

PASSES = (
    fuse_hardswish,
    fold_affine,
    equalize,
    equalize_activations,
    smoothquant,
)


def asked(config: Config) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """The passes ``config`` switches on, each with the settings it will record (passes without
    a switch run in every conversion and are not compared)."""
    return tuple((p.NAME, p.settings(config)) for p in PASSES if p.OPTION and p.enabled(config))


def recorded(recipe: Recipe, replayed_too: bool = False) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """The passes ``recipe`` applied that a rerun must ask for, with their settings (comparable
    with ``asked``): a scored choice that recorded its measurements is repeated without asking
    (listed too with ``replayed_too``, to name everything the ranges were calibrated with)."""
    switched = {p.NAME for p in PASSES if p.OPTION}
    return tuple((r.name, r.settings) for r in recipe.rewrites if r.name in switched and (replayed_too or not replayed(r)))


def replayed(result: RewriteResult) -> bool:
    """A rewrite ptq chose by its scoring (not by an option) whose measurements were saved: a
    ranges file that holds it repeats it as recorded."""
    return SCORED in result.settings and bool(result.measured)


# The setting a rewrite ptq chose by its scoring records (no option repeats it).
SCORED = ("scored", 1.0)


def describe(passes: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]) -> str:
    """Passes as the options that switch them on, e.g. "--smoothquant 0.5 --equalize"."""
    options = {p.NAME: p.OPTION for p in PASSES if p.OPTION}
    if not passes:
        names = list(options.values())
        return "no " + ", ".join(names[:-1]) + " or " + names[-1]
    # A rewrite ptq chose by its scoring records SCORED: no option repeats it (calibrate anew).
    return " ".join(
        " ".join([options.get(name, name)] + [f"{v:g}" for k, v in settings if k != SCORED[0]])
        + (" (chosen by ptq's scoring)" if SCORED in settings else "")
        for name, settings in passes
    )


def removed(recipe: Recipe) -> dict[str, str]:
    """Nodes the cleanup passes removed (their ``applied`` sites) -> what the pass did, for the
    op list."""
    described = {p.NAME: p.DESCRIPTION for p in PASSES if getattr(p, "DESCRIPTION", None)}
    return {site: described[r.name] for r in recipe.rewrites if r.name in described for site in r.applied}


def inserted(recipe: Recipe) -> dict[str, str]:
    """Nodes the rewrites added (no source node of their own) -> what added them, for the op list."""
    described = {p.NAME: p.INSERTED for p in PASSES if getattr(p, "INSERTED", None)}
    return {node: described.get(r.name, f"inserted by ptq's {r.name}") for r in recipe.rewrites for node in r.inserted}


def apply(model: onnx.ModelProto, config: Config, recipe: Recipe, progress: Progress,
          fit: Collection[int] | None = None, saved: Recipe | None = None) -> Recipe:  # fmt: skip
    """Run the passes ``config`` switches on, in order, in place; the recipe with their results
    (an always-on pass only when it changed the model). The data-driven passes measure the
    calibration samples at ``fit`` (all when None), or repeat what ``saved`` (a ranges file's
    recipe) recorded they measured."""
    recorded = {r.name: r for r in saved.rewrites} if saved is not None else {}
    for rewrite in PASSES:
        repeat = recorded.get(rewrite.NAME)
        if rewrite.enabled(config) or (repeat is not None and replayed(repeat)):
            if repeat is not None and repeat.measured:  # repeated from what the saved run measured
                result = rewrite.run(model, config, progress, fit, repeat)
            else:
                result = rewrite.run(model, config, progress, fit)
            if rewrite.OPTION or result.changed:
                recipe = recipe.rewritten(result)
    return recipe
