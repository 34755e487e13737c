"""Compile an exported integer model into an engine program (layer descriptors + memory images).

The engine is sized for the model: PE widths are the widest layer's (narrower POST codes are
re-encoded exactly with :func:`golden.arith.widen_post_code`, narrower activations zero-extend),
memories are rounded up to powers of two, and :func:`hw.program.build_program` checks that every
layer fits before anything is simulated.
"""

from __future__ import annotations

import math

import numpy as np

from golden import arith
from golden.errors import InputError
from golden.dagplan import copy_plan
from hw.program import EngineParams, LayerSpec, Program, build_program

__all__ = ["CompileError", "engine_params_for_graph", "graph_layer_specs", "compile_graph", "expected_outputs"]


class CompileError(InputError):
    """The model does not fit the engine (or uses an op it does not run); the message names the layer and
    the flag or export option that fixes it."""


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def engine_params_for_graph(graph, rows: int = 4, cols: int = 4) -> EngineParams:
    """Smallest power-of-two-sized engine of ``rows`` × ``cols`` PEs that runs the integer graph."""
    if not (isinstance(rows, int) and rows >= 1 and isinstance(cols, int) and cols >= 1):
        raise CompileError(f"rows and cols must be integers >= 1, got rows={rows!r} cols={cols!r}")
    return _engine_params_for_dag(graph, rows, cols)


def graph_layer_specs(graph, params: EngineParams) -> list[LayerSpec]:
    """The graph's stages as engine layers (codes widened to ``params.wbits``); errors name the stage.

    A graph may give more engine layers than stages: one per quantized copy of a stage's value
    (:func:`golden.dagplan.copy_plan`)."""
    return _dag_layer_specs(graph, params)


def compile_graph(graph, params: EngineParams | None = None, rows: int = 4, cols: int = 4) -> Program:
    """Program for an integer graph (:func:`golden.intdag.export_dag`) on ``params`` (default: :func:`engine_params_for_graph`).

    Raises ``ValueError`` naming the stage and what to change (weights that are not POST, grouped
    convolutions, a layer that does not fit the buffers) before anything is simulated.
    """
    params = params or engine_params_for_graph(graph, rows, cols)
    return build_program(params, graph_layer_specs(graph, params))


# --- the lowering: integer DAG stages (chains, residual adds, branches, global average pooling) ---

def _dag_layer_specs(graph, params: EngineParams) -> list[LayerSpec]:
    """Engine layers of a DAG graph: one per quantized copy of a stage's value
    (:func:`golden.dagplan.copy_plan`), in its order."""
    from hw.program import AdapterSpec

    specs, shapes = [], {"input": tuple(int(v) for v in graph.input_shape)}
    for st, consumer, ename, src_name in copy_plan(graph):
        where = f"stage {st.name}"
        _check_stage_fits(st, params, where, st.in_quant.bits)
        in_chw = shapes[src_name]
        if st.kind == "conv" and len(in_chw) != 3:
            raise CompileError(f"{where}: a convolution needs a C x H x W input, got {in_chw}")
        if st.groups != 1 and not (st.kind == "conv" and st.weights.shape[1] == 1
                                   and st.groups == st.weights.shape[0] == in_chw[0]):
            raise CompileError(f"{where}: grouped convolution (groups={st.groups}) is not an engine op; the engine "
                             f"runs dense and depthwise (groups = C_in = C_out) convolutions")
        codes = arith.widen_post_code(np.asarray(st.weights, dtype=np.int64), st.wbits, params.wbits)
        pool, pool_mode = None, "max"
        spec = LayerSpec(codes=codes if st.kind == "conv" else codes.reshape(codes.shape[0], -1), name=ename,
                         final=st.name == graph.output,
                         in_shape=(in_chw if len(in_chw) == 3 else None) if st.kind == "conv" else None,
                         stride=int(st.stride), pad=int(st.padding), groups=int(st.groups),
                         chan_mult=np.asarray(st.mult, dtype=np.int64),
                         chan_shift=np.asarray(st.shift, dtype=np.int64),
                         chan_bias=np.asarray(st.bias, dtype=np.int64), acc_shift=int(st.acc_shift),
                         input_beta=bool(st.input_beta),
                         relu=bool(st.relu), relu_floor=int(st.relu_floor),
                         input_from=src_name, out_lo=0, out_hi=0)
        for op in st.post_ops:
            if op[0] in ("maxpool", "sumpool") and pool is not None:
                raise CompileError(f"{where}: two poolings after one layer; the engine pools once")
            if op[0] == "maxpool":
                pool = tuple(int(v) for v in op[1:4])
            elif op[0] == "sumpool":
                _, h, w = spec.conv_chw
                if h != w:
                    raise CompileError(f"{where}: global average pooling of a {h} x {w} map; the engine's pooling "
                                     f"window is square")
                pool, pool_mode = (h, h, 0), "sum"             # golden.arith.sum_pool
        spec.pool, spec.pool_mode = pool, pool_mode
        if st.residual is not None:
            rname, rm, rs = st.residual
            spec.residual = (rname, int(rm), int(rs))             # a stage's first copy has its name
        if consumer is not None:
            q = consumer.in_quant
            if int(consumer.in_offset) != 1 << (int(consumer.in_shift) - 1):
                raise CompileError(f"stage {consumer.name}: its {q.kind} input quantizer has a zero point "
                                 f"(offset {consumer.in_offset}); the engine's quantizer has none -- train with "
                                 f"--act-quant lsq or asq for models with residual adds")
            spec.out_lo, spec.out_hi, spec.value_frac = int(q.lo), int(q.hi), int(q.value_frac)
            if q.kind == "asq":
                a = q.adapter
                spec.adapter = AdapterSpec(w1=a.w1, b1=a.b1, w2=a.w2, b2=a.b2, z_frac=int(a.z_frac), factor=a.factor,
                                           h_shift=int(a.h_shift))
                spec.pre_mult, spec.pre_shift = int(consumer.in_mult), int(consumer.in_shift)
            else:
                spec.q_mult, spec.q_shift = int(consumer.in_mult), int(consumer.in_shift)
        elif not spec.final:                                # only a residual source: codes unused
            spec.q_mult, spec.q_shift = 1, 63
        shapes[ename] = spec.out_chw
        specs.append(spec)
    return specs


def _check_post_weights(st, where: str) -> None:
    if st.weight_format != "post":
        raise CompileError(f"{where}: {st.wbits}-bit {st.weight_format!r} weights (uniform/POT/APoT levels) do not "
                         f"run on the POST engine; train with --edge-weight-quant post (and a POST --weight-quant) "
                         f"so that every layer has POST weights")


def _check_stage_fits(st, params: EngineParams, where: str, in_bits: int) -> None:
    """A stage's widths against the engine's."""
    _check_post_weights(st, where)
    if st.wbits > params.wbits:
        raise CompileError(f"{where}: {st.wbits}-bit weights do not fit the engine's {params.wbits}-bit PEs; "
                         f"regenerate with --wbits {st.wbits}")
    if in_bits > params.abits:
        raise CompileError(f"{where}: {in_bits}-bit input codes do not fit the engine's {params.abits}-bit "
                         f"activations; regenerate with --abits {in_bits}")
    if st.in_quant is not None and st.in_quant.lo < 0:
        raise CompileError(f"{where}: signed input codes; the engine's activations are unsigned")
    if st.frac_bits != params.frac_bits:
        raise CompileError(f"{where}: exported with {st.frac_bits} product fraction bits, the engine has "
                         f"{params.frac_bits}; regenerate with --frac-bits {st.frac_bits}")


def _engine_params_for_dag(graph, rows: int, cols: int) -> EngineParams:
    """Smallest power-of-two-sized engine that runs the DAG graph: sized from its engine layers."""
    from hw.program import _engine_codes

    wbits = max(st.wbits for st in graph.stages)
    abits = max(st.in_quant.bits for st in graph.stages)
    fracs = {st.frac_bits for st in graph.stages}
    if len(fracs) != 1:
        raise CompileError(f"stages use different product fraction bits {sorted(fracs)}; export with one frac_bits")
    probe = EngineParams(rows=rows, cols=cols, wbits=wbits, abits=abits, frac_bits=fracs.pop())   # widths only
    specs = _dag_layer_specs(graph, probe)
    index = {s.name: i for i, s in enumerate(specs)}
    shape = tuple(graph.input_shape)
    c0, h0, w0 = shape if len(shape) == 3 else (shape[0], 1, 1)
    act = h0 * w0 * math.ceil(c0 / rows)
    weights = chans = values = adapters = max_ch = fan_in = res = result = 0
    for s in specs:
        src = index.get(s.input_from, -1)
        codes = _engine_codes(s, specs[src] if src >= 0 else None, rows)
        cin, k = codes.shape[1], codes.shape[2]
        ct = cols // rows if (s.depthwise and cols % rows == 0 and s.fan_out % cols == 0) else math.ceil(cin / rows)
        weights += math.ceil(s.fan_out / cols) * k * k * ct
        chans += s.fan_out
        fan_in = max(fan_in, s.fan_in)
        n_out, ch, cw = s.conv_chw
        if s.final:
            result = ch * cw * n_out
        else:
            _, ph, pw = s.out_chw
            act += ph * pw * math.ceil(n_out / rows)
            values = max(values, ch * cw * n_out)
        if s.adapter is not None:
            adapters += s.adapter.hidden * (n_out + 2) + 1
            max_ch = max(max_ch, n_out)
        if s.residual is not None:
            res = max(res, specs[index[s.residual[0]]].out_size)
    params = EngineParams(rows=rows, cols=cols, wbits=wbits, abits=abits, frac_bits=probe.frac_bits,
                          max_fan_in=_pow2(fan_in), act_words=_pow2(act), weight_words=_pow2(weights),
                          chan_words=_pow2(chans), result_words=_pow2(result), max_layers=_pow2(len(specs)),
                          value_words=_pow2(max(values, 1)), adapter_words=_pow2(max(adapters, 1)),
                          max_channels=_pow2(max(max_ch, 1)), res_words=_pow2(max(res, 1)))
    return params


def expected_outputs(graph, program: Program, run) -> list[np.ndarray]:
    """What every engine layer of ``program`` (``compile_graph(graph)``) must output, ``[N, size]``
    per layer (CHW-flattened like the engine's), from the integer executor's run
    (:func:`golden.intdag.run_graph`) of the same N samples: the copy of stage S made for reader T
    outputs T's input codes; the output stage's layer the logits; a copy no stage quantizes (a shortcut
    that is only added) all zeros.
    """
    n = len(run.logits)
    index = {st.name: i for i, st in enumerate(graph.stages)}
    plan = copy_plan(graph)
    if [copy for _, _, copy, _ in plan] != [layer.name for layer in program.layers]:
        raise ValueError("the program was not compiled from this graph (its layers are not the graph's copies)")
    out = []
    for (st, reader, _, _), layer in zip(plan, program.layers):
        if st.name == graph.output:
            out.append(np.asarray(run.logits).reshape(n, -1))
        elif reader is None:
            out.append(np.zeros((n, layer.out_size), dtype=np.int64))
        else:
            out.append(np.asarray(run.codes[index[reader.name]]).reshape(n, -1))
    return out
