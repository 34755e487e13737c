"""Which quantized copies of each value a DAG integer graph needs, and an order to make them in.

A DAG stage's value (:mod:`golden.intdag`) is read by the stages named after it in ``input_from``,
each through its own input quantizer. Readers whose quantizers are equal (:func:`quant_key`) can
share one set of codes; readers with different quantizers (a ResNet block input read by conv1 and
by the 1x1 shortcut conv, each with its learned step) need their own. An accelerator that
quantizes a layer's output once therefore computes such a stage once per distinct quantizer.

:func:`copy_plan` lists those copies in a run order: depth first from the output, each copy made
right before its first reader (and after its own input and residual source). The first copy of a
stage carries the stage's name, the others ``stage~1``, ``stage~2``... NumPy only (no torch): the
compiler (``flows.compile``) and the cycle model (``sim.cycle_model``) both use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quant_key", "copy_plan"]


def quant_key(st) -> tuple:
    """What stage ``st`` asks of its source's codes: its input quantizer and the rescale into it."""
    q = st.in_quant
    ad = q.adapter
    arrays = () if q.kind != "asq" else tuple(
        None if a is None else tuple(np.asarray(a).reshape(-1).tolist()) for a in (ad.w1, ad.b1, ad.w2, ad.b2))
    return (q.kind, q.bits, q.lo, q.hi, q.value_frac, int(st.in_mult), int(st.in_shift), int(st.in_offset),
            None if q.kind != "asq" else (ad.z_frac, ad.h_shift, ad.factor), arrays)


def copy_plan(graph) -> list[tuple]:
    """``[(stage, reader or None, copy name, copy name of its source or "input")]`` in run order.

    ``reader`` is the first stage whose quantizer the copy serves (None: nothing quantizes this
    stage's value -- the output stage, or a shortcut that is only added). A residual add reads the
    stage's first copy (all copies hold the same value).
    """
    stages = {st.name: st for st in graph.stages}
    groups: dict = {name: [] for name in stages}          # stage -> [(key, first reader)]
    for st in graph.stages:
        if st.input_from != "input":
            keys = [k for k, _ in groups[st.input_from]]
            if quant_key(st) not in keys:
                groups[st.input_from].append((quant_key(st), st))
    made, plan = {}, []

    def need(name: str, gi: int) -> str:
        if (name, gi) in made:
            return made[(name, gi)]
        st = stages[name]
        src = "input"
        if st.input_from != "input":
            src = need(st.input_from, [k for k, _ in groups[st.input_from]].index(quant_key(st)))
        if st.residual is not None:
            need(st.residual[0], 0)
        reader = groups[name][gi][1] if groups[name] else None
        copy = name if gi == 0 else f"{name}~{gi}"
        made[(name, gi)] = copy
        plan.append((st, reader, copy, src))
        return copy

    need(graph.output, 0)
    for st in graph.stages:                                 # stages the output does not depend on
        for gi in range(max(1, len(groups[st.name]))):
            need(st.name, gi)
    return plan
