"""Parameter and compute overhead of the ASQ adapters (ASQ paper, Sec. 3.2.2, Eq. 10-16, Table 1).

The paper's definitions, applied to the layer shapes of :func:`golden.zoo.layer_shapes`:

* Eq. 10 ``P_conv = C_in * C_out * K_w * K_h`` (a grouped conv has ``C_in / groups`` inputs per
  filter; the paper's networks have none except MobileNetV2's depthwise convs);
* Eq. 11 ``P_linear = N_in * N_out`` (biases and BN are not counted);
* Eq. 12 ``OPS_conv = C_in * C_out * K_w * K_h * H_out * W_out`` (multiplications);
* Eq. 13 ``OPS_linear = 2 * N_in * N_out`` ("multiplications and additions");
* Eq. 14 storage ``S_B = B * P`` bits;
* Eq. 15/16 equivalent compute at ``B`` bits ``OPS_B = OPS * B / 32`` (the float model is 32 bits).

An adapter is ``GAP -> Linear(C, C/r) -> ReLU -> Linear(C/r, 1)`` on the ``C``-channel input of
every layer whose activation ASQ quantizes (all but the first and the last layer, which are 8-bit
LSQ/float in the paper); it stays in 32-bit float. Its parameters and operations come from
Eq. 11/13; the table reports ``adapter storage / network storage at B bits`` and ``adapter ops /
OPS_B`` in percent. The global average pool is not in the paper's equations: its ``C*H*W``
additions are reported separately (``gap_ops``, ``compute_with_gap_pct``).

``docs/overhead.md`` compares the figures with the paper's Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

__all__ = ["FLOAT_BITS", "PAPER_TABLE1", "AdapterSpec", "layer_params", "layer_ops", "adapter_dims",
           "adapter_params", "adapter_ops", "overhead", "format_table"]

#: Bits of the full-precision reference (Eq. 15-16) and of the float adapter.
FLOAT_BITS = 32

#: The paper's Table 1 (ResNet-18): bits -> (param %, compute %).
PAPER_TABLE1 = {8: (2.67, 0.04), 4: (5.34, 0.07), 3: (7.11, 0.10), 2: (10.67, 0.14)}


@dataclass(frozen=True)
class AdapterSpec:
    """Shape of one adapter: ``ratio`` r, ``layers`` (2: C -> C/r -> 1, 1: C -> 1), storage ``bits``.

    The hidden width of the 2-layer adapter is ``max(1, C // ratio)``.
    """

    ratio: int = 16
    layers: int = 2
    bits: int = FLOAT_BITS

    def __post_init__(self):
        for name, v, lo in (("ratio", self.ratio, 1), ("bits", self.bits, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"adapter {name} must be an integer >= {lo}, got {v!r}")
        if self.layers not in (1, 2):
            raise InputError(f"adapter layers must be 1 or 2, got {self.layers!r}")


def layer_params(shape) -> int:
    """Eq. 10 / 11: weights of one conv (``C_in/groups * C_out * K_w * K_h``) or linear layer."""
    return shape.in_ch // shape.groups * shape.out_ch * shape.kernel[0] * shape.kernel[1]


def layer_ops(shape) -> int:
    """Eq. 12 (conv: ``P * H_out * W_out``) / Eq. 13 (linear: ``2 * N_in * N_out``)."""
    if shape.kind == "linear":
        return 2 * shape.in_ch * shape.out_ch
    return layer_params(shape) * shape.out_hw[0] * shape.out_hw[1]


def adapter_dims(channels: int, spec: AdapterSpec) -> list[tuple[int, int]]:
    """``(N_in, N_out)`` of each linear layer of the adapter for a ``channels``-channel input."""
    if spec.layers == 1:
        return [(channels, 1)]
    hidden = max(1, channels // spec.ratio)
    return [(channels, hidden), (hidden, 1)]


def adapter_params(channels: int, spec: AdapterSpec) -> int:
    """Eq. 11 summed over the adapter's linear layers."""
    return sum(a * b for a, b in adapter_dims(channels, spec))


def adapter_ops(channels: int, spec: AdapterSpec) -> int:
    """Eq. 13 summed over the adapter's linear layers (the pooling is not included)."""
    return sum(2 * a * b for a, b in adapter_dims(channels, spec))


def _check_bits(bits_list):
    if not bits_list:
        raise InputError("give at least one bit-width")
    out = []
    for b in bits_list:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= FLOAT_BITS:
            raise InputError(f"bit-widths must be integers in 1..{FLOAT_BITS}, got {b!r}")
        out.append(int(b))
    return out


def overhead(shapes, bits_list, spec: AdapterSpec | None = None, edge_bits: int | None = None,
             adapt_edges: bool = False) -> dict:
    """Adapter overhead of a network with layer ``shapes`` at each bit-width of ``bits_list``.

    Parameters
    ----------
    shapes : list of golden.zoo.LayerShape
        Every conv/linear of one forward pass (first = first layer, last = classifier).
    bits_list : list of int
        Bit-widths ``B`` of the table rows.
    spec : AdapterSpec
        Adapter shape and storage bits (default: r = 16, 2 layers, 32-bit float).
    edge_bits : int or None
        None (the paper's Table 1): every layer of the network at ``B`` bits. An integer: the
        first and the last layer at ``edge_bits`` (the models of :mod:`golden.zoo` use 8), the
        others at ``B``.
    adapt_edges : bool
        Also put adapters on the first and the last layer (default False: they are not ASQ).

    Returns
    -------
    dict
        ``network`` (``params``, ``ops``, ``layers``), ``adapter`` (``params``, ``ops``,
        ``gap_ops``, ``layers``, ``ratio``, ``depth``, ``bits``) and ``rows``: one dict per ``B``
        with ``bits``, ``param_pct``, ``compute_pct``, ``compute_with_gap_pct``,
        ``network_storage_bits``, ``adapter_storage_bits``, ``network_ops_eq``, ``adapter_ops_eq``.
    """
    spec = AdapterSpec() if spec is None else spec
    bits_list = _check_bits(list(bits_list))
    if edge_bits is not None:
        _check_bits([edge_bits])
    shapes = list(shapes)
    if len(shapes) < 1:
        raise InputError("the network has no conv/linear layers")
    last = len(shapes) - 1
    edge = [i in (0, last) for i in range(len(shapes))]
    adapted = [s for s, e in zip(shapes, edge) if adapt_edges or not e]
    p_net = [layer_params(s) for s in shapes]
    o_net = [layer_ops(s) for s in shapes]
    p_ad = sum(adapter_params(s.in_ch, spec) for s in adapted)
    o_ad = sum(adapter_ops(s.in_ch, spec) for s in adapted)
    gap = sum(s.in_ch * s.in_hw[0] * s.in_hw[1] for s in adapted)
    rows = []
    for b in bits_list:
        lbits = [edge_bits if (e and edge_bits is not None) else b for e in edge]
        s_net = sum(lb * p for lb, p in zip(lbits, p_net))                       # Eq. 14
        o_net_eq = sum(o * lb / FLOAT_BITS for lb, o in zip(lbits, o_net))         # Eq. 15-16
        s_ad = spec.bits * p_ad
        o_ad_eq = o_ad * spec.bits / FLOAT_BITS
        gap_eq = gap * spec.bits / FLOAT_BITS
        rows.append({
            "bits": b,
            "param_pct": 100.0 * s_ad / s_net,
            "compute_pct": 100.0 * o_ad_eq / o_net_eq,
            "compute_with_gap_pct": 100.0 * (o_ad_eq + gap_eq) / o_net_eq,
            "network_storage_bits": s_net,
            "adapter_storage_bits": s_ad,
            "network_ops_eq": o_net_eq,
            "adapter_ops_eq": o_ad_eq,
        })
    return {
        "network": {"params": sum(p_net), "ops": sum(o_net), "layers": len(shapes)},
        "adapter": {"params": p_ad, "ops": o_ad, "gap_ops": gap, "layers": len(adapted),
                    "ratio": spec.ratio, "depth": spec.layers, "bits": spec.bits},
        "edge_bits": edge_bits,
        "adapt_edges": bool(adapt_edges),
        "rows": rows,
    }


def format_table(result: dict, name: str = "", paper: dict | None = None) -> str:
    """Text table like the paper's Table 1 (with the paper's figures beside ours when given)."""
    head = f"{'Network':<12} {'Precision':>9} {'Param(%)':>9} {'Compute(%)':>11} {'+GAP(%)':>8}"
    if paper:
        head += f"   {'paper Param(%)':>14} {'paper Compute(%)':>16}"
    lines = [head, "-" * len(head)]
    for i, r in enumerate(result["rows"]):
        line = (f"{name if i == 0 else '':<12} {r['bits']:>9d} {r['param_pct']:>9.2f} "
                f"{r['compute_pct']:>11.3f} {r['compute_with_gap_pct']:>8.3f}")
        if paper:
            p = paper.get(r["bits"])
            line += f"   {p[0]:>14.2f} {p[1]:>16.2f}" if p else f"   {'-':>14} {'-':>16}"
        lines.append(line)
    net, ad = result["network"], result["adapter"]
    edge = ("all layers at B bits" if result["edge_bits"] is None
            else f"first/last layers at {result['edge_bits']} bits")
    lines.append(f"network: {net['layers']} conv/linear layers, {net['params']:,} weights (Eq. 10-11), "
                 f"{net['ops']:,} ops (Eq. 12-13); {edge}")
    lines.append(f"adapters: {ad['layers']} x Linear(C, C/{ad['ratio']})->ReLU->Linear(C/{ad['ratio']}, 1)"
                 if ad["depth"] == 2 else f"adapters: {ad['layers']} x Linear(C, 1)")
    lines[-1] += (f", {ad['params']:,} weights, {ad['ops']:,} ops at {ad['bits']} bits "
                  f"(+{ad['gap_ops']:,} pooling additions, only in +GAP)")
    return "\n".join(lines)
