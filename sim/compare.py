"""Compare per-layer outputs of a hardware run with the golden integer executor, value by value."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LayerMismatch", "Comparison", "compare_outputs"]


@dataclass
class LayerMismatch:
    """First differing value of a layer: where, what the golden model says, what the RTL gave."""

    layer: str
    sample: int
    index: int
    expected: int
    got: int

    def __str__(self) -> str:
        return (f"layer {self.layer}, sample {self.sample}, output {self.index}: "
                f"expected {self.expected}, RTL gave {self.got}")


@dataclass
class Comparison:
    """Outcome of :func:`compare_outputs`. ``ok`` only if every value of every layer matches."""

    samples: int
    values: int
    mismatches: int
    per_layer: dict = field(default_factory=dict)
    prediction_mismatches: int = 0
    first: list = field(default_factory=list)
    not_read: list = field(default_factory=list)   #: layers whose activation region was reused

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.prediction_mismatches == 0

    def summary(self) -> str:
        if self.ok:
            return f"{self.samples} samples, {self.values} values: all equal"
        lines = [f"{self.mismatches} of {self.values} values differ "
                 f"({self.prediction_mismatches} predictions) over {self.samples} samples"]
        lines += [f"  {name}: {n} mismatches" for name, n in self.per_layer.items() if n]
        lines += [f"  first: {m}" for m in self.first]
        return "\n".join(lines)


def compare_outputs(expected: list, got: list, layer_names: list[str]) -> Comparison:
    """Compare ``expected[l]`` (``[B, n_l]`` golden arrays per layer) with ``got[s][l]`` (RTL per sample).

    The last layer holds logits; predictions (first index of the maximum) are compared too. A layer
    whose RTL outputs are None (its activation region was reused, ``Program.kept``) is listed in
    ``not_read`` instead.
    """
    n_samples = len(got)
    if n_samples == 0:
        raise ValueError("nothing to compare: the RTL run returned no samples")
    if len(expected) != len(layer_names):
        raise ValueError(f"{len(expected)} golden layers but {len(layer_names)} layer names")
    per_layer, first, total, values = {}, [], 0, 0
    not_read = []
    for l, name in enumerate(layer_names):
        if any(s[l] is None for s in got):        # the engine reused its region: not read back
            not_read.append(name)
            continue
        exp = np.asarray(expected[l])[:n_samples]
        rtl = np.stack([np.asarray(s[l], dtype=np.int64) for s in got])
        if rtl.shape != exp.shape:
            raise ValueError(f"layer {name}: RTL output shape {rtl.shape} != golden {exp.shape}")
        diff = rtl != exp
        per_layer[name] = int(diff.sum())
        total += per_layer[name]
        values += exp.size
        if diff.any() and len(first) < 5:
            s, i = np.argwhere(diff)[0]
            first.append(LayerMismatch(name, int(s), int(i), int(exp[s, i]), int(rtl[s, i])))
    exp_pred = np.argmax(np.asarray(expected[-1])[:n_samples], axis=1)
    rtl_pred = np.array([int(np.argmax(s[-1])) for s in got])
    return Comparison(samples=n_samples, values=values, mismatches=total, per_layer=per_layer,
                      prediction_mismatches=int((exp_pred != rtl_pred).sum()), first=first, not_read=not_read)
