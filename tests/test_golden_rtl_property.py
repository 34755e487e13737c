"""Property (issue 14): every model file the loader accepts simulates with golden == RTL.

``hypothesis`` draws small random integer graphs *within the ranges the loader accepts* (POST codes of
2..4 bits, signed per-channel rescales, ReLU with a floor, LSQ output quantizers with any ``lo < hi``,
ASQ quantizers with ``lo = 0`` and random integer adapters of one or two layers (with the ``h_shift``
their 16-bit hidden units need, or more), biases and ``acc_shift`` of the v4 arithmetic, any ``value_frac`` the
quantizer's shift holds), writes each with :func:`golden.graphfile.save_graph`, reads it back with
:func:`golden.graphfile.load_graph` (which must accept it), compiles it, and runs a few samples on the
engine in Amaranth's simulator: every output of every engine layer must equal the integer executor's
(:func:`golden.intdag.run_graph`). A graph the compiler refuses (it checks every field against its
register) must be refused with an :class:`golden.errors.InputError`; those examples are discarded.

The example count is modest (each one elaborates and simulates the engine).
"""

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from flows.compile import compile_graph, engine_params_for_graph, expected_outputs
from golden import arith
from golden.errors import InputError
from golden.graphfile import VALUE_FRAC_MAX, load_graph, save_graph
from golden.intdag import run_graph
from golden.intgraph import ActQuant, Adapter, IntGraph, Stage
from sim.amaranth_sim import run_amaranth
from sim.compare import compare_outputs

ABITS = 4


@st.composite
def graphs(draw):
    """A 2-stage integer DAG (a hidden linear layer, then a final linear layer whose LSQ or ASQ input
    quantizer reads the hidden value through a random input rescale) and its real inputs."""
    n_in, hidden, classes = draw(st.integers(2, 6)), draw(st.integers(1, 5)), draw(st.integers(2, 4))
    wbits = draw(st.integers(2, 4))
    ints = lambda lo, hi, shape: np.array(draw(st.lists(st.integers(lo, hi), min_size=int(np.prod(shape)),  # noqa: E731
                                                        max_size=int(np.prod(shape))))).reshape(shape)

    def rescale(out):
        """v4 per-channel rescale: mult, shift (>= 14: any ASQ factor keeps the combined shift >= 1),
        bias in BIAS_BITS, acc_shift 0..2 (more than these small layers need)."""
        mult = ints(-(2 ** arith.MULT_BITS - 1), 2 ** arith.MULT_BITS - 1, (out,))
        shift = ints(14, 24, (out,))
        blim = (1 << (arith.BIAS_BITS - 1)) - 1
        bias = ints(-blim, blim, (out,))
        return dict(mult=mult.astype(np.int64), shift=shift.astype(np.int64), bias=bias.astype(np.int64),
                    acc_shift=draw(st.integers(0, 2)))

    kind = draw(st.sampled_from(["lsq", "asq"]))
    hi = draw(st.integers(1, 2 ** ABITS - 1))
    lo = 0 if kind == "asq" else draw(st.integers(0, hi - 1))
    vf = draw(st.integers(0, min(VALUE_FRAC_MAX, 10)))
    out = ActQuant(kind, ABITS, lo, hi, 1.0, 0.0, 1.0, vf)
    if kind == "asq":
        # in the loader's ranges: H within 32 bits for any 16-bit channel sums, h = H >> h_shift within the
        # 16-bit operand, z within 32 bits, z_frac = e1 + e2 - h_shift >= ASQ_Z_FRAC
        h = draw(st.integers(0, 3))                      # 0: one-layer adapter
        op, acc = 1 << (arith.ADAPTER_WEIGHT_BITS - 1), 1 << (arith.ADAPTER_ACC_BITS - 1)
        s_top = 1 << (arith.VALUE_BITS - 1)
        wlim = min(op - 1, (acc - (1 << 24) - 1) // (hidden * s_top))
        w1 = ints(-wlim, wlim, (max(h, 1), hidden)).astype(np.int64)
        b1 = ints(-(1 << 24), 1 << 24, (max(h, 1),)).astype(np.int64)
        h_bound = int(np.max(np.abs(w1).sum(axis=1) * s_top + np.abs(b1)))
        h_shift = max(0, h_bound.bit_length() - (arith.ADAPTER_WEIGHT_BITS - 1)) + draw(st.integers(0, 2))
        e1 = draw(st.integers(0, 24))
        factor = draw(st.sampled_from(arith.ASQ_FACTORS))
        if h == 0:
            e1 = max(e1, arith.ASQ_Z_FRAC + h_shift)
            out.adapter = Adapter(w1, b1, e1, None, None, 0, factor, h_shift)
        else:
            w2lim = min(op - 1, (acc - (1 << 28) - 1) // (h * max(h_bound >> h_shift, 1)))
            w2 = ints(-w2lim, w2lim, (1, h)).astype(np.int64)
            b2 = ints(-(1 << 28), 1 << 28, (1,)).astype(np.int64)
            e2 = draw(st.integers(max(0, arith.ASQ_Z_FRAC + h_shift - e1), 24 + h_shift))
            out.adapter = Adapter(w1, b1, e1, w2, b2, e2, factor, h_shift)
    r0 = rescale(hidden)
    relu = draw(st.booleans())
    in_q = ActQuant("lsq", ABITS, 0, 2 ** ABITS - 1, 1.0, 0.0, 1.0, 0)
    s_hidden = Stage(name="hidden", kind="linear", weight_format="post", weights=ints(0, 2 ** wbits - 1, (hidden, n_in)),
                     wbits=wbits, frac_bits=arith.DEFAULT_FRAC_BITS, **r0, relu=relu,
                     relu_floor=draw(st.integers(-64, 64)) if relu else 0, input_from="input", in_quant=in_q,
                     value_unit=1.0)
    r1 = rescale(classes)
    # the DAG form: the consumer's quantizer reads the hidden value through its own input rescale
    in_shift = draw(st.integers(14, 16))
    s_out = Stage(name="logits", kind="linear", weight_format="post", weights=ints(0, 2 ** wbits - 1, (classes, hidden)),
                  wbits=wbits, frac_bits=arith.DEFAULT_FRAC_BITS, **r1,
                  input_beta=kind == "asq", input_from="hidden", in_quant=out,
                  in_mult=draw(st.integers(2 ** (arith.MULT_BITS - 1), 2 ** arith.MULT_BITS - 1)),
                  in_shift=in_shift, in_offset=arith.rescale_offset(0.0, in_shift), value_unit=1.0)
    graph = IntGraph(input_quant=in_q, input_shape=(n_in,), stages=[s_hidden, s_out], meta={"model": "hypothesis"},
                     kind="dag", output="logits")
    x = ints(0, 2 ** ABITS - 1, (3, n_in)).astype(np.float64)
    return graph, x


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=graphs())
def test_every_accepted_file_simulates_golden_equal_rtl(tmp_path, case):
    drawn, x = case
    path = tmp_path / "g.safetensors"
    save_graph(drawn, path)
    graph = load_graph(path)                             # in range: the loader must accept it
    try:
        program = compile_graph(graph, engine_params_for_graph(graph, 2, 2))
    except InputError as exc:                            # refused with a reason: fine, but not simulated
        assert "\n" not in str(exc)
        reject()
    golden = run_graph(graph, x)
    expected = expected_outputs(graph, program, golden)
    run = run_amaranth(program, golden.codes[0].reshape(len(x), -1), betas=golden.betas[0] if program.needs_beta else None)
    cmp = compare_outputs(expected, run["outputs"], [layer.name for layer in program.layers])
    assert cmp.ok, cmp.summary()
