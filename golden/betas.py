"""Which ASQ factor ``beta`` each ASQ quantizer of an integer graph picks over a set of inputs (NumPy only).

An ASQ adapter maps every sample to one ``beta`` from the hardware's table (``z`` on the
``2**-ASQ_Z_FRAC`` grid, ``beta = factor(z)`` in units ``2**-ASQ_BETA_FRAC``). A quantizer that
"adapts" picks several; one that picks a single ``beta`` for every sample is LSQ with a rescaled
step. :func:`beta_report` counts them per quantizer from a :class:`~golden.intgraph.GraphRun`
(the integer executor's per-stage input betas), so it reports exactly what the RTL is fed.
"""

from __future__ import annotations

import numpy as np

from . import arith

__all__ = ["beta_report"]


def beta_report(stage_names, betas) -> list[dict]:
    """Per ASQ quantizer: the distribution of its fixed-point ``beta`` over the samples.

    Parameters
    ----------
    stage_names : sequence of str
        The stage whose input each entry of ``betas`` is (``graph.stages[i].name``).
    betas : sequence of (array [N] or None)
        ``GraphRun.betas``: the per-sample fixed-point ``beta`` of stage ``i``'s input, None when
        that input is not ASQ-quantized.

    Returns
    -------
    list of dict
        One per ASQ-quantized stage input, in stage order: ``stage``, ``samples``, ``distinct``
        (how many different betas), ``histogram`` (list of ``{"beta", "fixed", "count"}``, ascending
        beta; ``beta = fixed / 2**ASQ_BETA_FRAC``), ``min``, ``max``, ``mean`` (real betas) and
        ``top_share`` (fraction of the samples that pick the most common beta).
    """
    names = list(stage_names)
    if len(names) != len(betas):
        raise ValueError(f"{len(names)} stage names for {len(betas)} beta entries")
    one = float(1 << arith.ASQ_BETA_FRAC)
    out = []
    for name, b in zip(names, betas):
        if b is None:
            continue
        b = np.asarray(b, dtype=np.int64).ravel()
        if b.size == 0:
            raise ValueError(f"{name}: no samples")
        vals, counts = np.unique(b, return_counts=True)
        out.append({"stage": name, "samples": int(b.size), "distinct": int(vals.size),
                    "histogram": [{"beta": float(v) / one, "fixed": int(v), "count": int(c)}
                                  for v, c in zip(vals, counts)],
                    "min": float(vals[0]) / one, "max": float(vals[-1]) / one,
                    "mean": float(b.mean()) / one, "top_share": float(counts.max()) / b.size})
    return out
