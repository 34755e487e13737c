"""flows.compile on a hand-built integer DAG: the v4 stage fields (``bias``, ``acc_shift``, global
``sumpool``, the adapter's ``h_shift``, the consumer's input rescale as the ASQ prescale) land in the
engine layers, the descriptor and the reference."""

import numpy as np
import pytest

from flows.cli import main
from flows.cliutil import ENGINE_FLAGS
from flows.compile import compile_graph, engine_params_for_graph
from golden import arith
from golden.intgraph import ActQuant, Adapter, IntGraph, Stage
from hw.program import Flag


def _stage(name, kind, weights, mult, shift, bias, acc_shift, **kw):
    st = Stage(name=name, kind=kind, weight_format="post", weights=weights, wbits=4,
               frac_bits=arith.DEFAULT_FRAC_BITS, mult=np.asarray(mult, np.int64), shift=np.asarray(shift, np.int64),
               **kw)
    st.bias, st.acc_shift = np.asarray(bias, np.int64), int(acc_shift)      # the v4 Stage fields
    return st


def _graph(rng):
    in_q = ActQuant("lsq", 4, 0, 15, 1.0, 0.0, 1.0, 0)
    adapter = Adapter(rng.integers(-3000, 3000, (2, 3)), rng.integers(-1000, 1000, 2), 20,
                      rng.integers(-3000, 3000, (1, 2)), np.array([77]), 12, "exp")
    adapter.h_shift = 13
    asq = ActQuant("asq", 4, 0, 15, 1.0, 0.0, 1.0, 8, adapter)
    conv = _stage("conv", "conv", rng.integers(0, 16, (3, 2, 3, 3)), rng.integers(1 << 14, 1 << 15, 3) * [1, -1, 1],
                  [12, 13, 14], [-500, 7, 3000], 1, padding=1, relu=True, relu_floor=-20,
                  post_ops=[("sumpool",), ("flatten",)], input_from="input", in_quant=in_q, value_unit=1.0)
    fc = _stage("fc", "linear", rng.integers(0, 16, (4, 3)), rng.integers(1 << 14, 1 << 15, 4), [17] * 4,
                [1, 2, 3, 4], 0, input_beta=True, input_from="conv", in_quant=asq, in_mult=20000, in_shift=15,
                in_offset=1 << 14, value_unit=1.0)
    return IntGraph(input_quant=in_q, input_shape=(2, 4, 4), stages=[conv, fc], meta={}, kind="dag", output="fc")


def test_v4_stage_fields_reach_the_program():
    rng = np.random.default_rng(0)
    graph = _graph(rng)
    params = engine_params_for_graph(graph, 2, 2)
    assert params.value_bits == arith.VALUE_BITS
    program = compile_graph(graph, params)
    conv, fc = program.layers
    st = graph.stages[0]
    assert np.array_equal(conv.chan_bias, st.bias) and conv.acc_shift == 1
    assert np.array_equal(conv.chan_mult, st.mult) and np.array_equal(conv.chan_shift, st.shift)
    assert (conv.pool, conv.pool_mode) == ((4, 4, 0), "sum")
    a = graph.stages[1].in_quant.adapter
    assert (conv.adapter.h_shift, conv.adapter.z_frac) == (13, a.z_frac)
    assert (conv.pre_mult, conv.pre_shift) == (20000, 15) and fc.input_beta and fc.final
    lay = program.layouts[0]
    assert (lay.acc_shift, lay.pool_shift, lay.sum_shift, lay.h_shift) == (1, arith.sum_pool_shift(16), 0, 13)
    assert (lay.q_mult_lo, lay.q_mult_hi, lay.q_shift) == (20000, 15, 8)
    assert lay.flags & Flag.POOL_SUM and lay.flags & Flag.PRESCALE and lay.flags & Flag.ADAPTER_RELU
    outs, betas = program.reference_run(rng.integers(0, 16, 32))
    assert betas[0] is not None and outs[1].shape == (4,)


def test_value_bits_flag_is_gone(tmp_path, capsys):
    """Values are golden.arith.VALUE_BITS: `--value-bits` is no longer an engine flag (argparse refuses it,
    exit 2, before anything is built)."""

    assert "value_bits" not in ENGINE_FLAGS
    for cmd in (["generate", "--out", str(tmp_path / "rtl")], ["synth", "--no-pnr"]):
        with pytest.raises(SystemExit) as exc:
            main(cmd + ["--value-bits", "32"])
        assert exc.value.code == 2
        assert "unrecognized arguments: --value-bits 32" in capsys.readouterr().err
    assert not (tmp_path / "rtl").exists()
