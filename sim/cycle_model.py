"""Analytic cycle model of the layer engine: cycles, utilisation and memory traffic per layer.

The engine's schedule (``docs/engine.md``, ``hw/engine.py``) does not depend on the data, so its
cycle count is a closed formula of the layer shape and the array size. For a fully-connected
layer it is :func:`hw.program.layer_cycles` (the same constants), which the tests check against
the RTL's measured ``cycles`` on many shapes and array configurations.

Convolutions run as the engine runs them: the input in HWC order with channels in
``ceil(C_in / R)`` tiles, one output pixel at a time, and for every pixel the fully-connected
schedule over the ``k*k*ceil(C_in/R)`` input tiles of its receptive field (``n_it``) and the
``ceil(C_out/C)`` output tiles; the tests check these against the RTL too. Depthwise convolutions
use the engine's depthwise mode (each output tile reads only its own ``C/R`` channel tiles);
other grouped convolutions are modelled group by group, a schedule the engine does not run
(``rtl_checked = False``). A layer's pooling walk and ASQ adapter are counted when its
:class:`Shape` says so (``pool``, ``asq_hidden``); the zoo shapes carry neither, and residual adds
and global pooling are listed under ``unmodelled``.

Pure Python; ResNet-18 at 224x224 takes well under a second (``bench/perf_speed.py``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

from golden.errors import InputError
from hw.program import RUN_OVERHEAD, EngineParams, layer_cycles

__all__ = ["Shape", "LayerPerf", "layer_perf", "model_perf", "shapes_for_model", "shapes_from_file",
           "program_shapes", "layer_spec_shapes", "dag_engine_plan", "write_shapes_file", "SHAPES_FILE"]


@dataclass(frozen=True)
class Shape:
    """One conv/linear layer: ``linear`` has ``k = 1`` and ``out_hw = (1, 1)``.

    A linear layer that reads a flattened ``C x H x W`` feature map may say so with ``in_ch = C`` and
    ``in_hw = (H, W)``: the engine then reads it where the convolution wrote it, ``ceil(C/R)`` words
    per pixel, so ``n_it = H*W*ceil(C/R)``; with ``in_hw = (1, 1)`` it is ``ceil(in_ch/R)``.
    """

    name: str
    kind: str
    in_ch: int
    out_ch: int
    k: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    in_hw: tuple = (1, 1)
    out_hw: tuple = (1, 1)
    pool: tuple = (1, 1, 0)     #: max pooling (k, stride, pad) after the layer; (1, 1, 0): none
    asq_hidden: int = 0         #: > 0: the output quantizer is ASQ with this many adapter hidden units

    @property
    def pooled_pixels(self) -> int:
        k, s, p = self.pool
        return (((self.out_hw[0] + 2 * p - k) // s + 1) * ((self.out_hw[1] + 2 * p - k) // s + 1))

    @property
    def macs(self) -> int:
        if self.kind == "linear":
            return self.in_ch * self.in_hw[0] * self.in_hw[1] * self.out_ch
        return self.in_ch // self.groups * self.out_ch * self.k * self.k * self.out_hw[0] * self.out_hw[1]


@dataclass(frozen=True)
class LayerPerf:
    """Predicted behaviour of one layer on an R x C engine."""

    name: str
    kind: str
    cycles: int
    array_steps: int            # cycles in which the array takes a step
    useful_macs: int
    utilisation: float          # useful MACs / (R * C * cycles)
    step_utilisation: float     # useful MACs / (R * C * array_steps): padding waste only
    n_it: int
    n_ot: int
    n_pix: int
    groups: int
    weight_words_read: int      # R*C*W-bit words
    act_words_read: int         # R-wide activation words (one per bank)
    chan_reads: int             # CHAN entries read (one per output value)
    outputs_written: int
    rtl_checked: bool

    def to_dict(self) -> dict:
        return asdict(self)


def layer_perf(shape: Shape, rows: int, cols: int, final: bool = False) -> LayerPerf:
    """Cycles, utilisation and traffic of ``shape`` on an ``rows x cols`` engine (``final``: the
    model's last layer, whose values go to RESULT without the quantizing walk)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows}x{cols}")
    g = shape.groups
    if shape.in_ch % g or shape.out_ch % g:
        raise ValueError(f"layer {shape.name}: channels {shape.in_ch}->{shape.out_ch} not divisible by groups {g}")
    cin_g, cout_g = shape.in_ch // g, shape.out_ch // g
    depthwise = g > 1 and g == shape.in_ch == shape.out_ch and shape.kind == "conv"
    n_pix = shape.out_hw[0] * shape.out_hw[1]
    pk = shape.pool[0]
    taps = shape.out_ch * shape.pooled_pixels * pk * pk
    if depthwise:
        # the engine's depthwise mode (hw.program.build_program): an output tile reads only its own C/R
        # channel tiles when C is a multiple of R and of the channels; otherwise the layer runs as a
        # block-diagonal dense convolution
        fast = cols % rows == 0 and shape.out_ch % cols == 0
        n_it = shape.k * shape.k * (cols // rows if fast else math.ceil(shape.in_ch / rows))
        n_ot = math.ceil(shape.out_ch / cols)
        tiles = n_pix * n_ot
        cycles = layer_cycles(EngineParams(rows=rows, cols=cols), n_it, n_ot, shape.out_ch, n_pix=n_pix,
                              final=final, pool_taps=taps, hidden=shape.asq_hidden)
    else:
        if shape.kind == "linear":
            n_it = shape.in_hw[0] * shape.in_hw[1] * math.ceil(cin_g / rows)
        else:
            n_it = shape.k * shape.k * math.ceil(cin_g / rows)
        n_ot = math.ceil(cout_g / cols)
        tiles = g * n_pix * n_ot
        # the engine's own formula (one definition); other grouped convolutions (not an engine op)
        # are modelled as groups running one after another like extra pixels
        cycles = layer_cycles(EngineParams(rows=rows, cols=cols), n_it, n_ot, cout_g, n_pix=g * n_pix, final=final,
                              pool_taps=taps, hidden=shape.asq_hidden)
    steps = tiles * n_it
    macs = shape.macs
    return LayerPerf(name=shape.name, kind=shape.kind, cycles=cycles, array_steps=steps, useful_macs=macs,
                     utilisation=macs / (rows * cols * cycles), step_utilisation=macs / (rows * cols * steps),
                     n_it=n_it, n_ot=n_ot, n_pix=n_pix, groups=g, weight_words_read=steps, act_words_read=steps,
                     chan_reads=shape.out_ch * n_pix, outputs_written=shape.out_ch * shape.pooled_pixels,
                     rtl_checked=g == 1 or depthwise)


def model_perf(shapes, rows: int, cols: int, clock_mhz: float = 100.0, unmodelled: dict | None = None) -> dict:
    """Per-layer and total figures for a list of :class:`Shape` (one sample, one run)."""
    if not (isinstance(clock_mhz, (int, float)) and math.isfinite(clock_mhz) and clock_mhz > 0):
        raise ValueError(f"clock must be a positive number of MHz, got {clock_mhz!r}")
    shapes = list(shapes)
    layers = [layer_perf(s, rows, cols, final=i == len(shapes) - 1) for i, s in enumerate(shapes)]
    if not layers:
        raise ValueError("the model has no conv or linear layer")
    cycles = RUN_OVERHEAD + sum(l.cycles for l in layers)
    macs = sum(l.useful_macs for l in layers)
    return {
        "rows": rows, "cols": cols, "clock_mhz": clock_mhz, "layers": [l.to_dict() for l in layers],
        "total_cycles": cycles, "useful_macs": macs, "peak_macs_per_cycle": rows * cols,
        "utilisation": macs / (rows * cols * cycles), "latency_us": cycles / clock_mhz,
        "weight_words_read": sum(l.weight_words_read for l in layers),
        "act_words_read": sum(l.act_words_read for l in layers),
        "outputs_written": sum(l.outputs_written for l in layers),
        "rtl_checked_layers": sum(l.rtl_checked for l in layers),
        "unmodelled": unmodelled or {},
    }


SHAPES_FILE = os.path.join(os.path.dirname(__file__), "model_shapes.json")


def shapes_for_model(name: str, input_hw: int | None = None, cached: bool = True) -> tuple[list[Shape], dict]:
    """Layer shapes of a zoo model and counts of unmodelled ops.

    At the model's own input size the shapes come from ``sim/model_shapes.json`` (no torch import,
    so ``post-accel perf`` answers at once; ``write_shapes_file`` regenerates it and a test checks it
    against the zoo); otherwise from ``golden.zoo.layer_shapes`` on the meta device.
    """
    if cached and input_hw is None and os.path.exists(SHAPES_FILE):
        with open(SHAPES_FILE) as f:
            table = json.load(f)
        if name in table:
            entry = table[name]
            return [Shape(**{**d, "in_hw": tuple(d["in_hw"]), "out_hw": tuple(d["out_hw"])})
                    for d in entry["layers"]], entry["unmodelled"]
    import torch

    from golden.zoo import MODEL_INPUT_SHAPES, build_model, layer_shapes

    if name not in MODEL_INPUT_SHAPES:
        raise InputError(f"unknown model {name!r}; valid: {', '.join(MODEL_INPUT_SHAPES)}, or a model file")
    shape = MODEL_INPUT_SHAPES[name]
    if input_hw is not None and len(shape) == 3:
        shape = (shape[0], input_hw, input_hw)
    with torch.device("meta"):          # shapes only: no weights are initialised, nothing is computed
        model = build_model(name, 4, 4, weight_quant="fp", act_quant="fp")
        recs = layer_shapes(model, shape)
    shapes = [Shape(r.name, r.kind, r.in_ch, r.out_ch, r.kernel[0], r.stride[0], r.padding[0], r.groups,
                    tuple(r.in_hw), tuple(r.out_hw)) for r in recs]
    unmodelled = {}
    for m in model.modules():
        kind = type(m).__name__
        if kind in ("MaxPool2d", "AdaptiveAvgPool2d"):
            unmodelled[kind] = unmodelled.get(kind, 0) + 1
    blocks = sum(type(m).__name__ in ("BasicBlock", "InvertedResidual") and getattr(m, "use_res", True)
                 for m in model.modules())
    if blocks:
        unmodelled["residual_add"] = blocks
    return shapes, unmodelled


def write_shapes_file(path: str = SHAPES_FILE) -> dict:
    """Regenerate ``sim/model_shapes.json`` from the zoo (every model at its own input size)."""
    from golden.zoo import MODEL_NAMES

    table = {}
    for name in MODEL_NAMES:
        shapes, unmodelled = shapes_for_model(name, cached=False)
        table[name] = {"layers": [{**asdict(s), "in_hw": list(s.in_hw), "out_hw": list(s.out_hw)} for s in shapes],
                       "unmodelled": unmodelled}
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    return table


def program_shapes(program) -> list[Shape]:
    """Shapes of a compiled engine program (its :class:`hw.program.LayerSpec` layers)."""
    return layer_spec_shapes(program.layers)


def layer_spec_shapes(layers) -> list[Shape]:
    """Shapes of :class:`hw.program.LayerSpec` layers (convolutions, pooling, ASQ quantizers included).

    A fully-connected layer reading a ``C x H x W`` map reads it where its source wrote it: the
    layer named by its ``input_from`` (a DAG program), else the layer before it."""
    out, by_name = [], {}
    for i, l in enumerate(layers):
        extra = dict(pool=l.pool_kspd, asq_hidden=l.adapter.hidden if l.adapter is not None else 0)
        frm = getattr(l, "input_from", None)
        src = (layers[i - 1] if i else None) if frm is None else by_name.get(frm)
        if l.is_conv:
            c, h, w = l.in_chw
            _, oh, ow = l.conv_chw
            out.append(Shape(l.name, "conv", c, l.fan_out, l.k, l.stride, l.pad, int(l.groups), (h, w), (oh, ow),
                             **extra))
        elif src is not None and src.out_chw[1] * src.out_chw[2] > 1:     # reads a flattened C x H x W map
            c, h, w = src.out_chw
            out.append(Shape(l.name, "linear", c, l.fan_out, in_hw=(h, w), **extra))
        else:
            out.append(Shape(l.name, "linear", l.fan_in, l.fan_out, **extra))
        by_name[l.name] = l
    return out


def dag_engine_plan(graph) -> list[tuple]:
    """The engine layers of an integer graph in run order, without compiling it:
    :func:`golden.dagplan.copy_plan` (one layer per quantized copy of a stage's value)."""
    from golden.dagplan import copy_plan
    return copy_plan(graph)


def _dag_shapes(graph) -> list[Shape]:
    """Shapes of the engine layers of a DAG integer graph (:func:`dag_engine_plan`): a stage's pooling
    (global average pooling: a sum window over the whole map) and its consumer's ASQ quantizer."""
    out, chw = [], {"input": tuple(int(v) for v in graph.input_shape)}
    for st, consumer, ename, src in dag_engine_plan(graph):
        q = consumer.in_quant if consumer is not None else None
        hidden = int(q.adapter.w1.shape[0]) if q is not None and q.kind == "asq" else 0
        dims = chw[src] if len(chw[src]) == 3 else (int(math.prod(chw[src])), 1, 1)
        o = int(st.weights.shape[0])
        if st.kind == "linear":
            c, h, w = dims
            if h * w > 1:
                out.append(Shape(ename, "linear", c, o, in_hw=(h, w), asq_hidden=hidden))
            else:
                out.append(Shape(ename, "linear", int(math.prod(st.weights.shape[1:])), o, asq_hidden=hidden))
            oh = ow = 1
            pool = (1, 1, 0)
        else:
            c, h, w = dims
            k = int(st.weights.shape[2])
            oh, ow = (h + 2 * st.padding - k) // st.stride + 1, (w + 2 * st.padding - k) // st.stride + 1
            pool = (1, 1, 0)
            for op in st.post_ops:
                if op[0] == "maxpool":
                    pool = tuple(int(v) for v in op[1:4])
                elif op[0] == "sumpool":
                    pool = (oh, oh, 0)
            out.append(Shape(ename, "conv", c, o, k, st.stride, st.padding, st.groups, (h, w), (oh, ow),
                             pool=pool, asq_hidden=hidden))
        pk, ps, pp = pool
        chw[ename] = (o, (oh + 2 * pp - pk) // ps + 1, (ow + 2 * pp - pk) // ps + 1)
    return out


def shapes_from_file(path) -> tuple[list[Shape], dict]:
    """Shapes of an exported model (:func:`golden.graphfile.load_graph`, which dispatches on the file's
    format tag): one shape per engine layer (:func:`dag_engine_plan`)."""
    from golden.graphfile import load_graph

    return _dag_shapes(load_graph(path)), {}
