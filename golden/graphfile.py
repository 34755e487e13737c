"""The exported-model file: an integer DAG (:class:`golden.intgraph.IntGraph`, :func:`golden.intdag.export_dag`)
in one safetensors file, format tag ``post-accel-intgraph`` version 4 (:mod:`golden.modelfile`).

``docs/export.md`` describes it. Tensors hold every integer (weights, per-channel
``mult``/``shift``/``bias``, fixed-point adapter weights); the JSON header under the
``post_accel`` metadata key holds the structure. Read with ``safetensors`` only (never pickle);
:func:`load_graph` checks everything and raises :class:`golden.modelfile.ModelFileError` with one
line naming the file, the problem and the fix; files of earlier generations (v1 MLP, v2 chain) get
:class:`golden.modelfile.OldModelFileError`, which names the re-export command.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from . import arith
from .intgraph import ActQuant, Adapter, IntGraph, Stage, stage_bound
from .modelfile import (METADATA_KEY, MODEL_FORMAT, MODEL_VERSION, ModelFileError, _Checker, _reject_constant,
                        check_format_tag, read_model_file)
from .safeio import atomic_output

__all__ = ["GRAPH_FORMAT", "DAG_VERSION", "save_graph", "load_graph"]

GRAPH_FORMAT = MODEL_FORMAT
DAG_VERSION = MODEL_VERSION   #: the integer DAG (golden.intdag.export_dag); chains are DAGs
_DAG_STAGE_KEYS = ("input_from", "in_quant", "in_mult", "in_shift", "in_offset", "residual", "value_unit")
_FIX = "re-export the model (`post-accel export`)"
_STAGE_KEYS = ("name", "kind", "weight_format", "wbits", "frac_bits", "stride", "padding", "groups",
               "input_beta", "relu", "relu_floor", "post_ops", "value_frac", "out", "weight_shape", "acc_shift")
_ACT_KEYS = ("kind", "bits", "lo", "hi", "scale", "zero", "value_step", "value_frac", "adapter")
_ADAPTER_KEYS = ("e1", "e2", "h_shift", "layers", "factor")
#: Largest JSON header (characters) and nesting depth :func:`load_graph` reads (a real header is a few kB
#: deep 6); anything larger is refused before (depth: instead of) a RecursionError or a memory blow-up.
MAX_HEADER_CHARS = 1 << 22
MAX_HEADER_DEPTH = 32
#: ``value_frac`` range the engine implements: its quantizer shift ``value_frac + ASQ_BETA_FRAC`` is 1..63.
VALUE_FRAC_MAX = 63 - arith.ASQ_BETA_FRAC


def _depth(obj) -> int:
    """Nesting depth of parsed JSON ``obj`` (iterative: no recursion on hostile input)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if deepest > MAX_HEADER_DEPTH:
                return deepest
            todo.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _act_header(q: ActQuant, prefix: str, tensors: dict, float_adapter=None) -> dict:
    h = {"kind": q.kind, "bits": q.bits, "lo": q.lo, "hi": q.hi, "scale": q.scale, "zero": q.zero,
         "value_step": q.value_step, "value_frac": q.value_frac, "adapter": None}
    ad = q.adapter
    if isinstance(ad, Adapter):
        h["adapter"] = {"e1": ad.e1, "e2": ad.e2, "h_shift": ad.h_shift, "layers": 1 if ad.w2 is None else 2,
                        "factor": ad.factor}
        tensors[f"{prefix}.adapter.w1"], tensors[f"{prefix}.adapter.b1"] = ad.w1, ad.b1
        if ad.w2 is not None:
            tensors[f"{prefix}.adapter.w2"], tensors[f"{prefix}.adapter.b2"] = ad.w2, ad.b2
    elif ad is not None:                                   # float input adapter (host side)
        fa = ad.adapter
        h["adapter"] = {"e1": None, "e2": None, "h_shift": None, "layers": fa.layers, "factor": fa.factor}
        first = fa.hidden if fa.hidden is not None else fa.out
        tensors[f"{prefix}.adapter.fw1"] = first.weight.detach().double().numpy()
        tensors[f"{prefix}.adapter.fb1"] = first.bias.detach().double().numpy()
        if fa.hidden is not None:
            tensors[f"{prefix}.adapter.fw2"] = fa.out.weight.detach().double().numpy()
            tensors[f"{prefix}.adapter.fb2"] = fa.out.bias.detach().double().numpy()
    return h


def save_graph(graph: IntGraph, path, provenance: dict | None = None, what: str = "model file") -> None:
    """Write ``graph`` (an integer DAG) to ``path`` (safetensors + JSON header, ``docs/export.md``)
    atomically (:func:`golden.safeio.atomic_output`; ``what`` names the path in errors, e.g. ``"--out"``)."""
    from safetensors.numpy import save_file

    if graph.kind != "dag":
        raise ModelFileError(f"{os.fspath(path)} (not written): only integer DAGs (golden.intdag.export_dag) "
                             f"are written")

    tensors: dict = {}
    stages = []
    for i, st in enumerate(graph.stages):
        p = f"stage{i}"
        tensors[f"{p}.weights"] = np.ascontiguousarray(st.weights, dtype=np.int32)
        tensors[f"{p}.mult"], tensors[f"{p}.shift"], tensors[f"{p}.bias"] = st.mult, st.shift, st.bias
        stages.append({"name": st.name, "kind": st.kind, "weight_format": st.weight_format, "wbits": st.wbits,
                       "frac_bits": st.frac_bits, "stride": st.stride, "padding": st.padding,
                       "groups": st.groups, "input_beta": st.input_beta, "relu": st.relu,
                       "relu_floor": st.relu_floor, "post_ops": [list(op) for op in st.post_ops],
                       "value_frac": st.value_frac, "weight_shape": list(st.weights.shape),
                       "acc_shift": int(st.acc_shift),
                       "out": None if st.out is None else _act_header(st.out, f"{p}.out", tensors)})
        if graph.kind == "dag":
            stages[-1].update({
                "input_from": st.input_from,
                "in_quant": None if st.input_from == "input" else _act_header(st.in_quant, f"{p}.in", tensors),
                "in_mult": int(st.in_mult), "in_shift": int(st.in_shift), "in_offset": int(st.in_offset),
                "residual": None if st.residual is None else [str(st.residual[0]), int(st.residual[1]),
                                                               int(st.residual[2])],
                "value_unit": float(st.value_unit)})
    header = {"format": GRAPH_FORMAT, "version": DAG_VERSION,
              "input_shape": list(graph.input_shape),
              "input": _act_header(graph.input_quant, "input", tensors), "stages": stages,
              "meta": graph.meta, "provenance": provenance or {}}
    if graph.kind == "dag":
        header["output"] = graph.output
    for k, v in tensors.items():
        if not np.all(np.isfinite(v)):
            raise ModelFileError(f"{os.fspath(path)} (not written): tensor {k} has NaN or inf")
    with atomic_output(path, what) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.fspath(tmp),
                  metadata={METADATA_KEY: json.dumps(header, allow_nan=False)})


def _tensor(tensors, name, c: _Checker, shape=None, integer=True):
    if name not in tensors:
        c.fail(f"tensor {name!r} is missing")
    t = tensors[name]
    if integer and not np.issubdtype(t.dtype, np.integer):
        c.fail(f"tensor {name!r} must be integer, got {t.dtype}")
    if not integer and not np.issubdtype(t.dtype, np.floating):
        c.fail(f"tensor {name!r} must be floating point, got {t.dtype}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        c.fail(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if integer and t.dtype == np.uint64 and t.size and int(t.max()) >= 2 ** 63:
        c.fail(f"tensor {name!r} has values beyond int64")
    if not integer and not np.all(np.isfinite(t)):
        c.fail(f"tensor {name!r} has NaN or inf")
    return t.astype(np.int64) if integer else t.astype(np.float64)


def _num(v, what, c: _Checker, positive=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        c.fail(f"{what} must be a finite number, got {v!r}")
    if positive and not float(v) > 0:
        c.fail(f"{what} must be > 0, got {v!r}")
    return float(v)


def _load_act(h, prefix, tensors, c: _Checker, channels=None) -> ActQuant:
    c.keys(h, _ACT_KEYS, prefix)
    if h["kind"] not in ("lsq", "qil", "asq"):
        c.fail(f"{prefix}.kind {h['kind']!r} is not one of lsq, qil, asq")
    bits = c.arith_(arith.check_abits, h["bits"], f"{prefix}.bits")
    lo, hi = c.int_(h["lo"], f"{prefix}.lo"), c.int_(h["hi"], f"{prefix}.hi")
    if not (-2 ** bits <= lo < hi < 2 ** bits):
        c.fail(f"{prefix}: code range [{lo}, {hi}] does not fit {bits} bits")
    if h["kind"] == "asq" and lo != 0:            # golden.arith.asq_quantize clips to 0..hi; the RTL to lo..hi
        c.fail(f"{prefix}.lo is {lo}: ASQ codes are clip(., 0, hi), so an ASQ quantizer's lo must be 0")
    vf = c.int_(h["value_frac"], f"{prefix}.value_frac", 0)
    if vf > VALUE_FRAC_MAX:
        c.fail(f"{prefix}.value_frac {vf} outside 0..{VALUE_FRAC_MAX} (the quantizer's 6-bit shift)")
    q = ActQuant(h["kind"], bits, lo, hi, _num(h["scale"], f"{prefix}.scale", c, True),
                 _num(h["zero"], f"{prefix}.zero", c), _num(h["value_step"], f"{prefix}.value_step", c, True), vf)
    ad = h["adapter"]
    if (q.kind == "asq") != (ad is not None):
        c.fail(f"{prefix}: an ASQ quantizer needs an adapter and only ASQ has one")
    if ad is None:
        return q
    c.keys(ad, _ADAPTER_KEYS, f"{prefix}.adapter")
    if ad["factor"] not in arith.ASQ_FACTORS:
        c.fail(f"{prefix}.adapter.factor {ad['factor']!r} is not one of {arith.ASQ_FACTORS}")
    if ad["layers"] not in (1, 2):
        c.fail(f"{prefix}.adapter.layers must be 1 or 2, got {ad['layers']!r}")
    if ad["e1"] is None:                                  # float input adapter
        import torch

        from .quant.asq import ASQAdapter
        fw1 = _tensor(tensors, f"{prefix}.adapter.fw1", c, integer=False)
        fa = ASQAdapter(fw1.shape[1], layers=ad["layers"], factor=ad["factor"])
        if ad["layers"] == 2:
            fa.hidden_units = fw1.shape[0]
            fa.hidden = torch.nn.Linear(fw1.shape[1], fw1.shape[0])
            fa.out = torch.nn.Linear(fw1.shape[0], 1)
        first = fa.hidden if fa.hidden is not None else fa.out
        with torch.no_grad():
            first.weight.copy_(torch.from_numpy(fw1))
            first.bias.copy_(torch.from_numpy(_tensor(tensors, f"{prefix}.adapter.fb1", c, (fw1.shape[0],),
                                                      integer=False)))
            if ad["layers"] == 2:
                fa.out.weight.copy_(torch.from_numpy(_tensor(tensors, f"{prefix}.adapter.fw2", c,
                                                             (1, fw1.shape[0]), integer=False)))
                fa.out.bias.copy_(torch.from_numpy(_tensor(tensors, f"{prefix}.adapter.fb2", c, (1,),
                                                           integer=False)))

        class _Holder:
            adapter = fa
        q.adapter = _Holder()
        return q
    w1 = _tensor(tensors, f"{prefix}.adapter.w1", c)
    if w1.ndim != 2 or (channels is not None and w1.shape[1] != channels):
        c.fail(f"{prefix}.adapter.w1 has shape {w1.shape}, expected [hidden, {channels}]")
    if np.abs(w1).max(initial=0) >= 2 ** (arith.ADAPTER_WEIGHT_BITS - 1):
        c.fail(f"{prefix}.adapter.w1 exceeds {arith.ADAPTER_WEIGHT_BITS}-bit fixed point")
    b1 = _tensor(tensors, f"{prefix}.adapter.b1", c, (w1.shape[0],))
    w2 = b2 = None
    if ad["layers"] == 2:
        w2 = _tensor(tensors, f"{prefix}.adapter.w2", c, (1, w1.shape[0]))
        b2 = _tensor(tensors, f"{prefix}.adapter.b2", c, (1,))
    q.adapter = Adapter(w1, b1, c.int_(ad["e1"], f"{prefix}.adapter.e1"), w2, b2,
                        c.int_(ad["e2"], f"{prefix}.adapter.e2"), ad["factor"],
                        c.int_(ad["h_shift"], f"{prefix}.adapter.h_shift", 0))
    _check_adapter(q.adapter, prefix, c)
    return q


def _check_adapter(a: Adapter, prefix: str, c: _Checker) -> None:
    """The adapter's 32-bit accumulators and 16-bit multiplier operands hold for every input
    (golden.arith.adapter_z on saturated 16-bit inputs), as export guarantees."""
    acc_top = 1 << (arith.ADAPTER_ACC_BITS - 1)
    op_top = 1 << (arith.ADAPTER_WEIGHT_BITS - 1)
    w1, b1 = a.w1.astype(np.int64), a.b1.astype(np.int64)
    h_bound = int(np.max(np.abs(w1).sum(axis=1) * (1 << (arith.VALUE_BITS - 1)) + np.abs(b1), initial=0))
    if h_bound >= acc_top:
        c.fail(f"{prefix}.adapter: layer 1 can leave its {arith.ADAPTER_ACC_BITS}-bit accumulator")
    if h_bound >> a.h_shift >= op_top:
        c.fail(f"{prefix}.adapter.h_shift {a.h_shift} leaves hidden units wider than {arith.ADAPTER_WEIGHT_BITS} bits")
    if a.w2 is not None:
        w2, b2 = a.w2.astype(np.int64), a.b2.astype(np.int64)
        if np.abs(w2).max(initial=0) >= op_top:
            c.fail(f"{prefix}.adapter.w2 exceeds {arith.ADAPTER_WEIGHT_BITS}-bit fixed point")
        if int(np.abs(w2).sum()) * (h_bound >> a.h_shift) + int(np.abs(b2).max(initial=0)) >= acc_top:
            c.fail(f"{prefix}.adapter: layer 2 can leave its {arith.ADAPTER_ACC_BITS}-bit accumulator")


def load_graph(path) -> IntGraph:
    """Read and check a file written by :func:`save_graph` (format tag ``post-accel-intgraph`` v4)."""
    c, meta, tensors = read_model_file(path)            # refuses FIFOs and devices before opening
    if METADATA_KEY not in meta:
        c.fail(f"safetensors metadata has no {METADATA_KEY!r} entry",
               "it is a training checkpoint: export it first (`post-accel export CHECKPOINT`)"
               if "post_accel_zoo_checkpoint" in meta or "post_accel_checkpoint" in meta
               else "this is not a post-accel model")
    if len(meta[METADATA_KEY]) > MAX_HEADER_CHARS:
        c.fail(f"{METADATA_KEY!r} metadata is {len(meta[METADATA_KEY])} characters, more than the "
               f"{MAX_HEADER_CHARS} a model header may have")
    try:
        h = json.loads(meta[METADATA_KEY], parse_constant=_reject_constant)
    except RecursionError:
        c.fail(f"{METADATA_KEY!r} metadata is nested deeper than {MAX_HEADER_DEPTH} levels")
    except ValueError as exc:
        c.fail(f"{METADATA_KEY!r} metadata is not valid JSON ({str(exc).splitlines()[0]})")
    if _depth(h) > MAX_HEADER_DEPTH:
        c.fail(f"{METADATA_KEY!r} metadata is nested deeper than {MAX_HEADER_DEPTH} levels")
    check_format_tag(h, c)                                # dispatch on the tag: old generations refused
    dag = True
    c.keys(h, ("format", "version", "input_shape", "input", "stages", "meta", "provenance")
           + (("output",) if dag else ()), "header")
    for key in ("meta", "provenance"):
        if not isinstance(h[key], dict):
            c.fail(f"header.{key} must be a JSON object, got {type(h[key]).__name__}")
    shape = h["input_shape"]
    if not isinstance(shape, list) or not shape or not all(isinstance(v, int) and v > 0 for v in shape):
        c.fail(f"input_shape must be a list of positive integers, got {shape!r}")
    if not isinstance(h["provenance"], dict):
        c.fail(f"provenance must be a JSON object, got {type(h['provenance']).__name__}")
    prov = h["provenance"]
    in_q = _load_act(h["input"], "input", tensors, c)
    if not isinstance(h["stages"], list) or not h["stages"]:
        c.fail("stages must be a non-empty list")
    stages = []
    for i, sh in enumerate(h["stages"]):
        w = f"stage{i}"
        c.keys(sh, _STAGE_KEYS + (_DAG_STAGE_KEYS if dag else ()), w)
        if sh["kind"] not in ("conv", "linear") or sh["weight_format"] not in ("post", "table"):
            c.fail(f"{w}: kind {sh['kind']!r} / weight_format {sh['weight_format']!r} unknown")
        wbits = c.arith_(arith.check_wbits, sh["wbits"], f"{w}.wbits")
        ws, rank = sh["weight_shape"], 4 if sh["kind"] == "conv" else 2
        if not (isinstance(ws, list) and len(ws) == rank
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ws)):
            c.fail(f"{w}.weight_shape must be a list of {rank} positive integers for a {sh['kind']} stage, "
                   f"got {ws!r}")
        if not isinstance(sh["name"], str) or not sh["name"]:
            c.fail(f"{w}.name must be a non-empty string, got {sh['name']!r}")
        for key in ("relu", "input_beta"):
            if not isinstance(sh[key], bool):
                c.fail(f"{w}.{key} must be true or false, got {sh[key]!r}")
        if not isinstance(sh["post_ops"], list):
            c.fail(f"{w}.post_ops must be a list, got {sh['post_ops']!r}")
        weights = _tensor(tensors, f"{w}.weights", c, ws)
        if sh["weight_format"] == "post":
            c.arith_(arith.check_frac_bits, sh["frac_bits"], f"{w}.frac_bits")
            if weights.min(initial=0) < 0 or weights.max(initial=0) >= 2 ** wbits:
                c.fail(f"{w}: POST code outside 0..{2 ** wbits - 1}")
        out_ch = weights.shape[0]
        mult = _tensor(tensors, f"{w}.mult", c, (out_ch,))
        shift = _tensor(tensors, f"{w}.shift", c, (out_ch,))
        bias = _tensor(tensors, f"{w}.bias", c, (out_ch,))
        if np.abs(mult).max() >= 2 ** arith.MULT_BITS or shift.min() < arith.SHIFT_RANGE.start \
                or shift.max() >= arith.SHIFT_RANGE.stop:
            c.fail(f"{w}: mult or shift outside the rescale unit's range")
        if np.abs(bias).max() >= 2 ** (arith.BIAS_BITS - 1):
            c.fail(f"{w}: bias outside the rescale unit's {arith.BIAS_BITS}-bit range")
        ops = []
        for op in sh["post_ops"]:
            if op == ["flatten"]:
                ops.append(("flatten",))
            elif op == ["sumpool"] and dag:
                ops.append(("sumpool",))
            elif isinstance(op, list) and len(op) == 4 and op[0] == "maxpool" \
                    and all(isinstance(v, int) and v >= 0 for v in op[1:]) and op[1] > 0 and op[2] > 0:
                ops.append(tuple(op))
            else:
                c.fail(f"{w}: unknown post op {op!r}")
        st = Stage(name=str(sh["name"]), kind=sh["kind"], weight_format=sh["weight_format"], weights=weights,
                   wbits=wbits, frac_bits=c.int_(sh["frac_bits"], f"{w}.frac_bits", 0),
                   stride=c.int_(sh["stride"], f"{w}.stride", 1), padding=c.int_(sh["padding"], f"{w}.padding", 0),
                   groups=c.int_(sh["groups"], f"{w}.groups", 1), input_beta=bool(sh["input_beta"]),
                   mult=mult, shift=shift, bias=bias, relu=bool(sh["relu"]),
                   acc_shift=c.int_(sh["acc_shift"], f"{w}.acc_shift", 0),
                   relu_floor=c.int_(sh["relu_floor"], f"{w}.relu_floor"), post_ops=ops,
                   value_frac=c.int_(sh["value_frac"], f"{w}.value_frac", 0))
        if st.value_frac > VALUE_FRAC_MAX:
            c.fail(f"{w}.value_frac {st.value_frac} outside 0..{VALUE_FRAC_MAX} (the quantizer's 6-bit shift)")
        if dag:
            _load_dag_stage(st, sh, w, stages, in_q, tensors, c)
            stages.append(st)
            continue
        if sh["out"] is not None:
            st.out = _load_act(sh["out"], f"{w}.out", tensors, c)
        elif i != len(h["stages"]) - 1:
            c.fail(f"{w}: only the last stage may be final (no output quantizer)")
        stages.append(st)
    if dag:
        names = [st.name for st in stages]
        if len(set(names)) != len(names):
            c.fail("stage names are not unique")
        if h["output"] not in names:
            c.fail(f"output {h['output']!r} names no stage")
        if sum(st.input_from == "input" for st in stages) != 1:
            c.fail("exactly one stage must read the network input")
        return IntGraph(input_quant=in_q, input_shape=tuple(shape), stages=stages, meta=h["meta"], kind="dag",
                        provenance=prov,
                        output=h["output"])
    if stages[-1].out is not None:
        c.fail("the last stage must be final (it outputs the logits)")
    return IntGraph(input_quant=in_q, input_shape=tuple(shape), stages=stages, meta=h["meta"], provenance=prov)


def _load_dag_stage(st: Stage, sh: dict, w: str, earlier: list, in_q: ActQuant, tensors, c: _Checker) -> None:
    """The DAG keys of stage ``w`` (file version 4): sources must name earlier stages."""
    names = {e.name for e in earlier}
    frm = sh["input_from"]
    if frm != "input" and frm not in names:
        c.fail(f"{w}.input_from {frm!r} names no earlier stage (or 'input')")
    st.input_from = frm
    if sh["out"] is not None:
        c.fail(f"{w}: DAG stages quantize their input (in_quant), not their output")
    if frm == "input":
        if sh["in_quant"] is not None:
            c.fail(f"{w}: reads the network input, which the header's 'input' quantizer quantizes")
        st.in_quant = in_q
    else:
        st.in_quant = _load_act(sh["in_quant"], f"{w}.in", tensors, c)
        st.in_mult = c.int_(sh["in_mult"], f"{w}.in_mult")
        st.in_shift = c.int_(sh["in_shift"], f"{w}.in_shift")
        st.in_offset = c.int_(sh["in_offset"], f"{w}.in_offset")
        if abs(st.in_mult) >= 2 ** arith.MULT_BITS or st.in_shift not in arith.SHIFT_RANGE:
            c.fail(f"{w}: in_mult or in_shift outside the rescale unit's range")
    if st.input_beta != (st.in_quant.kind == "asq"):
        c.fail(f"{w}: input_beta must be set exactly when the input quantizer is ASQ")
    res = sh["residual"]
    if res is not None:
        if not (isinstance(res, list) and len(res) == 3 and res[0] in names):
            c.fail(f"{w}.residual must be [earlier stage, mult, shift], got {res!r}")
        rm, rs = c.int_(res[1], f"{w}.residual mult", 1), c.int_(res[2], f"{w}.residual shift", 1)
        if rm >= 2 ** arith.MULT_BITS or rs not in arith.SHIFT_RANGE:
            c.fail(f"{w}: residual mult or shift outside the rescale unit's range")
        st.residual = (res[0], rm, rs)
    st.value_unit = _num(sh["value_unit"], f"{w}.value_unit", c, True)
    need = arith.acc_shift_for(stage_bound(st, st.in_quant))
    if st.acc_shift < need:
        c.fail(f"{w}.acc_shift {st.acc_shift}: its accumulators can leave the rescale's {arith.RESCALE_ACC_BITS}-bit "
               f"operand (needs >= {need})")
    if st.input_beta:
        ad = st.in_quant.adapter
        factor = ad.factor if isinstance(ad, Adapter) else ad.adapter.factor     # integer / host (float) adapter
        if int(st.shift.min()) + int(arith.factor_words(factor)[1].min()) - arith.FACTOR_MANT_BITS < 1:
            c.fail(f"{w}: a rescale shift {int(st.shift.min())} is too small for its input's ASQ factor")
