"""PostEngine in the Amaranth simulator against Program.reference (golden.arith), layer by layer.

Small random multi-layer programs (zeros and largest codes included, biases, mixed weight and
activation widths, non-power-of-two array shapes) run on the engine through its host ports;
every output of every layer must equal the reference and the measured ``cycles`` must equal
:func:`hw.program.predicted_cycles`. Corrupted weights and corrupted expected values must be
reported. :func:`hw.program.build_program` must refuse programs that do not fit, naming the
layer. The Verilog must be deterministic and lint clean with the documented waivers.
"""

import dataclasses
import re
import subprocess
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.build import LINT_WAIVERS, engine_ports, engine_verilog
from hw.engine import PostEngine
from hw.program import (CHAN_BITS, DESC_STRIDE, DescField, EngineParams, Flag, LayerSpec, Sel, build_program, chan_word,
                        layer_cycles, predicted_cycles)
from sim.amaranth_sim import host_read, host_write, run_amaranth, run_engine

SMALL = dict(max_fan_in=16, act_words=16, weight_words=64, chan_words=32, result_words=8, max_layers=4)


def random_layers(rng, params, sizes, wbits=None, out_bits=None, zero_frac=0.25, max_frac=0.1):
    """Layers ``sizes[0] -> sizes[1] -> ... `` (the last final). ``wbits[l]``: the layer's own
    code width (widened exactly to the engine's); ``out_bits[l]``: non-final output widths (codes
    ``0..2**out_bits - 1``, value_frac 0, the default identity quantizer). Per-channel rescales with
    the smallest ``acc_shift`` the layer's accumulators need, multipliers of both signs, biases in
    value units; the logits reach the 16-bit saturation for the all-largest input."""
    n = len(sizes) - 1
    wbits = wbits or [params.wbits] * n
    out_bits = out_bits or [params.abits] * (n - 1)
    layers = []
    for l in range(n):
        fan_in, fan_out = sizes[l], sizes[l + 1]
        w = wbits[l]
        codes = rng.integers(0, 2 ** w, size=(fan_out, fan_in))
        codes[rng.random(codes.shape) < zero_frac] = 0
        big = rng.random(codes.shape) < max_frac                      # largest magnitude, both signs
        codes[big] = np.where(rng.random(big.sum()) < 0.5, arith.post_code(0, 0, w), arith.post_code(1, 0, w))
        codes = arith.widen_post_code(codes, w, params.wbits)
        limit = fan_in * arith.max_product_magnitude(params.abits, params.frac_bits)
        acc_shift = arith.acc_shift_for(limit)
        # typical accumulators (after acc_shift) are this large
        scale = 0.4 * np.sqrt(fan_in) * (2 ** params.abits) * (2 ** params.frac_bits) / 2 ** acc_shift
        name = f"fc{l + 1}" if l < n - 1 else "out"
        final = l == n - 1
        top = 1 << 13 if final else 2 ** out_bits[l]                  # typical |v|
        mult, shift = (np.array(a, dtype=np.int64) for a in zip(*[arith.fixed_point_multiplier(top / scale * f)
                                                                  for f in rng.uniform(0.7, 1.4, fan_out)]))
        mult = np.where(rng.random(fan_out) < 0.2, -mult, mult)
        bias = rng.integers(-top // 2, top // 2 + 1, size=fan_out)
        if final:
            bias[0] = -top                             # the all-zero sample gives a negative logit
            layers.append(LayerSpec(codes=codes, chan_mult=mult, chan_shift=shift, chan_bias=bias,
                                    acc_shift=acc_shift, final=True, name=name))
        else:
            layers.append(LayerSpec(codes=codes, chan_mult=mult, chan_shift=shift, chan_bias=bias,
                                    acc_shift=acc_shift, out_hi=2 ** out_bits[l] - 1, name=name))
    return layers


def samples_for(rng, params, fan_in, n=4):
    top = 2 ** params.abits - 1
    xs = [np.zeros(fan_in, dtype=np.int64), np.full(fan_in, top, dtype=np.int64)]
    xs += [rng.integers(0, top + 1, fan_in) for _ in range(n - 2)]
    return np.stack(xs)


def mismatches(program, samples, outputs):
    """``(layer, sample, index, expected, got)`` for every differing output value."""
    bad = []
    for s, x in enumerate(samples):
        for layer, got, exp in zip(program.layers, outputs[s], program.reference(x)):
            if got is None:                      # not read back: its activation region was reused
                continue
            assert got.shape == exp.shape, f"layer {layer.name}: shape {got.shape} != {exp.shape}"
            bad += [(layer.name, s, int(i), int(exp[i]), int(got[i])) for i in np.flatnonzero(got != exp)]
    return bad


CASES = {
    "2x2_w4a4_5-7-3": (dict(rows=2, cols=2), [5, 7, 3], None, None),
    "3x2_mixed_5-7-4-3": (dict(rows=3, cols=2), [5, 7, 4, 3], [3, 4, 2], [3, 4]),
    "2x3_w8a8_6-5-4": (dict(rows=2, cols=3, wbits=8, abits=8), [6, 5, 4], [8, 5], [6]),
    "1x1_w2a2_3-2-2": (dict(rows=1, cols=1, wbits=2, abits=2), [3, 2, 2], None, None),
    "4x3_w5a3_9-4": (dict(rows=4, cols=3, wbits=5, abits=3), [9, 4], None, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_engine_matches_reference(case):
    shape, sizes, wbits, out_bits = CASES[case]
    params = EngineParams(**shape, **SMALL)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    program = build_program(params, random_layers(rng, params, sizes, wbits, out_bits))
    samples = samples_for(rng, params, sizes[0])
    run = run_amaranth(program, samples)
    bad = mismatches(program, samples, run["outputs"])
    assert not bad, f"{len(bad)} mismatches, first {bad[:5]}"
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples)
    # the test data exercises the interesting ranges
    ref = [program.reference(x) for x in samples]
    hidden = np.concatenate([r[l] for r in ref for l in range(len(sizes) - 2)]) if len(sizes) > 2 else None
    logits = np.concatenate([r[-1] for r in ref])
    assert (logits < 0).any() and (logits > 0).any()
    if hidden is not None:
        assert (hidden == 0).any() and (hidden > 0).any()


def test_engine_last_layer_not_final_and_single_final_layer():
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(5)
    two = random_layers(rng, params, [4, 5, 3])
    hidden_only = build_program(params, [two[0]])              # every output stays in ACT
    final_only = build_program(params, [dataclasses.replace(two[1], codes=two[1].codes[:, :4])])
    for program in (hidden_only, final_only):
        samples = samples_for(rng, params, 4, n=3)
        run = run_amaranth(program, samples)
        assert mismatches(program, samples, run["outputs"]) == []
        assert run["cycles"] == [predicted_cycles(params, program)] * 3


def test_cycle_formula():
    params = EngineParams(rows=3, cols=2, **SMALL)
    rng = np.random.default_rng(0)
    program = build_program(params, random_layers(rng, params, [5, 7, 3]))
    # 5 -> 7: n_it 2, n_ot 4, last tile 1 valid; 7 -> 3: n_it 3, n_ot 2, last tile 1 valid
    # per layer: 1 + 47 descriptor fields + 1 (LAYER, DESC); per tile max(n_it, C); MAC tail 7 + last
    # valid; a non-final layer then walks its n_out values (one a cycle) and flushes 6 cycles
    assert len(DescField) == 47
    assert layer_cycles(params, 2, 4, 7, final=False) == 49 + 4 * max(2, 2) + 7 + 1 + 7 + 6
    assert layer_cycles(params, 3, 2, 3) == 49 + 2 * max(3, 2) + 7 + 1
    assert predicted_cycles(params, program) == 1 + 78 + 63
    # ASQ: a second walk (channel sums), the adapter (hidden * (n_out + 2) + 1 reads) and 3 table cycles;
    # pooling: taps = n_out * pooled pixels * k * k
    assert (layer_cycles(params, 9, 4, 8, 16, final=False, pool_taps=8 * 4 * 4, hidden=2)
            == 49 + 16 * 4 * 9 + 7 + 2 + 2 * (8 * 4 * 4 + 6) + 2 * 10 + 1 + 3)


def test_corrupted_weight_is_caught():
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(11)
    layers = random_layers(rng, params, [5, 7, 3])
    program = build_program(params, layers)
    samples = samples_for(rng, params, 5, n=3)
    # flip the sign of one nonzero code of layer fc1 in the weight image the engine gets
    codes = layers[0].codes
    o, i = map(int, np.argwhere(codes & 0b111)[0])
    R, C, W = params.rows, params.cols, params.wbits
    word, bit = (o // C) * program.layouts[0].n_it + i // R, ((i % R) * C + o % C) * W + W - 1
    writes = list(program.config_writes)
    k = writes.index(next(w for w in writes if w[0] == Sel.WEIGHT and w[1] == word))
    writes[k] = (Sel.WEIGHT, word, writes[k][2] ^ (1 << bit))
    bad_program = dataclasses.replace(program, config_writes=writes)
    run = run_amaranth(bad_program, samples)
    bad = mismatches(program, samples, run["outputs"])
    assert bad and bad[0][0] == "fc1" and bad[0][2] == o


def test_corrupted_expected_value_is_caught():
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(12)
    program = build_program(params, random_layers(rng, params, [5, 7, 3]))
    samples = samples_for(rng, params, 5, n=2)
    run = run_amaranth(program, samples)
    assert mismatches(program, samples, run["outputs"]) == []
    run["outputs"][1][1][2] += 1                       # the engine "said" something else for out[2]
    assert mismatches(program, samples, run["outputs"])[0][:3] == ("out", 1, 2)


def test_host_protocol():
    """Idle/busy/done handshake, read-back rules of the memory map, n_layers = 0."""
    params = EngineParams(rows=3, cols=2, **SMALL)
    dut = PostEngine(params)
    log = {}

    async def tb(ctx):
        assert not ctx.get(dut.done) and not ctx.get(dut.busy)
        assert ctx.get(dut.host_wr.ready) and ctx.get(dut.rd_req.ready)
        act = lambda word, bank: (word << params.bank_bits) | bank  # noqa: E731
        # CHAN {mult 2, shift 1, bias}: v = acc + bias
        await host_write(ctx, dut, [(Sel.ACT, act(3, 2), 0xFFFF), (Sel.WEIGHT, 0, 0xABC),
                                    (Sel.CHAN, 1, chan_word(2, 1, 7)), (Sel.CHAN, 0, chan_word(2, 1, -5)),
                                    (Sel.DESC, 0, 5), (Sel.CTRL, 0, 0), (Sel.RESULT, 0, 99),
                                    (Sel.ACT, act(3, 3), 0xF)])          # bank 3 of 3 does not exist
        values, _ = await host_read(ctx, dut, [(Sel.ACT, act(3, 2)), (Sel.WEIGHT, 0), (Sel.CHAN, 1),
                                               (Sel.DESC, 0), (Sel.CTRL, 0), (Sel.RESULT, 0),
                                               (Sel.ACT, act(3, 3))])
        log["values"] = values
        cycles, waited = await run_engine(ctx, dut, 100)               # n_layers = 0
        log["empty_run"] = (cycles, waited)
        # a run with one (empty-weight) layer: busy, host ports refuse, done rises once
        from hw.program import _Layout
        one = dict(N_IT=1, N_OT=1, N_OUT=2, N_SPAN=2, FLAGS=int(Flag.FINAL), K=1, CT=1, STRIDE=1, IN_H=1, IN_W=1,
                   OUT_W=1, N_PIX=1, OCT=1, KROW_JUMP=1, KX_JUMP=1, V_LAST=2, PK=1, PS=1, CONV_H=1, P_W=1,
                   P_NPIX=1, Q_SHIFT=16, RES_SHIFT=1)
        desc = _Layout(tuple(one.get(f.name, 0) for f in DescField)).fields()
        await host_write(ctx, dut, [(Sel.DESC, f, v) for f, v in enumerate(desc)] + [(Sel.CTRL, 0, 1)])
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        busy_seen = 0
        while not ctx.get(dut.done):
            assert ctx.get(dut.busy) and not ctx.get(dut.host_wr.ready) and not ctx.get(dut.rd_req.ready)
            busy_seen += 1
            await ctx.tick()
        assert not ctx.get(dut.busy) and ctx.get(dut.host_wr.ready)
        log["one_layer"] = (ctx.get(dut.cycles), busy_seen)
        values, _ = await host_read(ctx, dut, [(Sel.RESULT, 0), (Sel.RESULT, 1)])
        log["results"] = values

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # ACT zero-extended to abits; WEIGHT/CHAN/DESC/CTRL read 0; the RESULT write was ignored
    assert log["values"] == [2 ** params.abits - 1, 0, 0, 0, 0, 0, 0]
    assert log["empty_run"][0] == 1                       # the final LAYER cycle only
    assert log["one_layer"][0] == layer_cycles(params, 1, 1, 2) + 1 == log["one_layer"][1]
    # input word 0 is all zeros, so the logits are the biases; RESULT reads are sign-extended
    assert log["results"] == [(1 << params.data_bits) - 5, 7]


def _layers_ok(params):
    rng = np.random.default_rng(3)
    return random_layers(rng, params, [5, 7, 3])


@pytest.mark.parametrize("change,match", [
    (lambda L, p: [dataclasses.replace(L[0], codes=np.zeros((7, 20), dtype=np.int64)), L[1]],
     r"layer fc1: fan_in 20 exceeds max_fan_in 16 .*--max-fan-in 20"),
    (lambda L, p: [dataclasses.replace(L[0], codes=L[0].codes + 16), L[1]],
     r"layer fc1: POST code .* 4-bit"),
    (lambda L, p: [dataclasses.replace(L[0], out_hi=31), L[1]],
     r"layer fc1: output codes 0\.\.31 do not fit the engine's unsigned 4-bit activations; regenerate with a larger "
     r"--abits"),
    (lambda L, p: [dataclasses.replace(L[0], chan_mult=np.full(7, 1 << 15)), L[1]],
     r"layer fc1: output 0: rescale multiplier 32768 outside \+-32767"),
    (lambda L, p: [dataclasses.replace(L[0], chan_shift=np.full(7, 64)), L[1]],
     r"layer fc1: output 0: rescale shift 64 outside 1\.\.63"),
    (lambda L, p: [L[0], dataclasses.replace(L[1], chan_bias=np.full(3, 1 << 17))],
     r"layer out: output 0: bias 131072 does not fit the engine's 18-bit signed biases"),
    (lambda L, p: [L[0], dataclasses.replace(L[1], codes=L[1].codes[:, :6])],
     r"layer out: fan_in 6 does not match the previous layer's 7 outputs"),
    (lambda L, p: [dataclasses.replace(L[0], final=True), L[1]], r"layer fc1: only the last layer may be final"),
    (lambda L, p: [L[0], dataclasses.replace(L[1], codes=np.zeros((12, 7), dtype=np.int64),
                                             chan_mult=np.ones(12, np.int64), chan_shift=np.ones(12, np.int64),
                                             chan_bias=np.zeros(12, dtype=np.int64))],
     r"layer out: 12 outputs exceed result_words 8.*--result-words 12"),
    (lambda L, p: [L[0]] * 5, r"5 layers exceed max_layers 4 .*--max-layers 5"),
])
def test_build_program_errors(change, match):
    params = EngineParams(rows=2, cols=2, **SMALL)
    with pytest.raises(ValueError, match=match):
        build_program(params, change(_layers_ok(params), params))


def test_build_program_memory_errors():
    base = EngineParams(rows=2, cols=2, **SMALL)
    layers = _layers_ok(base)
    tight = [(dict(weight_words=7), r"layer out: its 8 weight tiles exceed weight_words 7, and it cannot run in "
                                    r"output-channel parts because it is the final layer.*--weight-words 8"),
             (dict(chan_words=9), r"layer out: channel parameters need 10 entries .*--chan-words 10"),
             (dict(value_words=1), r"layer fc1: its 7 values .* exceed value_words 1; even its smallest "
                                   r"output-channel part \(2 channels\) needs 2 values.*--value-words 2"),
             (dict(weight_words=2), r"layer fc1: its 12 weight tiles exceed weight_words 2; even its smallest "
                                    r"output-channel part \(2 channels\) needs 3 weight tiles.*--weight-words 3"),
             (dict(act_words=5), r"layer fc1: its 4-word activation region does not fit act_words 5 next to the "
                                 r"regions still to be read \(input 3 words\); regenerate with --act-words 7")]
    for change, match in tight:
        with pytest.raises(ValueError, match=match):
            build_program(dataclasses.replace(base, **change), layers)
    program = build_program(base, layers)
    with pytest.raises(ValueError, match="input codes must lie in 0..15"):
        program.input_writes(np.array([0, 1, 2, 3, 16]))
    with pytest.raises(ValueError, match="5 activation codes"):
        program.input_writes(np.array([0, 1]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(rows=0), "rows must be an integer >= 1"), (dict(cols=-1), "cols"),
    (dict(wbits=9), "weight bits"), (dict(abits=1), "activation bits"), (dict(frac_bits=17), "fraction bits"),
    (dict(act_words=0), "act_words"), (dict(max_layers=5000), "max_layers"),
    (dict(act_words=1 << 15), "act_words 32768 with 4 banks"),
])
def test_engine_params_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineParams(**kwargs)


def test_engine_params_derived():
    p = EngineParams()
    assert (p.rows, p.cols, p.wbits, p.abits, p.frac_bits, p.max_fan_in) == (4, 4, 4, 4, 8, 256)
    assert p.acc_bits == arith.accumulator_bits(256, 4, 8) and p.bank_bits == 2 and p.addr_bits == 16
    assert p.data_bits == 64 and p.lut_entries == 16 and p.lut_bits == 12
    assert EngineParams(rows=1, cols=2, wbits=2).data_bits == arith.ASQ_TABLE_BITS == 42 > CHAN_BITS == 40
    assert p.value_bits == arith.VALUE_BITS == 16
    assert EngineParams(rows=3).bank_bits == 2 and EngineParams(rows=1).bank_bits == 1
    assert [f.value for f in DescField] == list(range(47)) and DESC_STRIDE == 64
    assert [s.value for s in Sel] == list(range(8))


@pytest.fixture(scope="module")
def default_verilog():
    return engine_verilog(EngineParams())


def test_verilog_deterministic_and_ports(default_verilog):
    params = EngineParams()
    assert engine_verilog(params) == default_verilog
    assert "module post_engine(" in default_verilog
    header = re.search(r"module post_engine\((.*?)\);", default_verilog).group(1)
    names = {n.strip() for n in header.split(",")}
    ports = engine_ports(params)
    assert {p["name"] for p in ports} == names
    for port in ports:
        decl = re.search(rf"^\s*(input|output) (?:\[(\d+):0\] )?{port['name']};", default_verilog, re.M)
        assert decl, port
        assert decl.group(1) == port["direction"]
        assert (int(decl.group(2)) + 1 if decl.group(2) else 1) == port["width"]
    widths = {p["name"]: p["width"] for p in ports}
    assert widths["host_wr__payload"] == 3 + 16 + params.data_bits
    assert widths["rd_req__payload"] == 19 and widths["rd_resp__payload"] == params.data_bits
    assert widths["cycles"] == 32


def _lint(text, tmp_path, name):
    from sim.rtl import simulator_env
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", "post_engine",
                           str(path)], capture_output=True, text=True, env=simulator_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr[-3000:]


def test_verilator_lint(default_verilog, tmp_path):
    _lint(default_verilog, tmp_path, "default")
    _lint(engine_verilog(EngineParams(rows=4, cols=4, wbits=8, abits=8, max_fan_in=64)), tmp_path, "w8a8")


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 2)])
def test_trained_mlp_on_amaranth_engine(rows, cols, trained_model, digits_codes):
    """The compiled digits MLP (mixed 8/4-bit layers) is bit exact against the golden executor."""
    from flows.compile import compile_graph, expected_outputs
    from golden.data import load_digits_split
    from golden.intdag import run_graph
    from sim.compare import compare_outputs

    codes, _ = digits_codes
    n = 6
    program = compile_graph(trained_model, rows=rows, cols=cols)
    golden = run_graph(trained_model, load_digits_split()[2][:n])
    run = run_amaranth(program, codes[:n])
    cmp = compare_outputs(expected_outputs(trained_model, program, golden), run["outputs"],
                          [layer.name for layer in program.layers])
    assert cmp.ok, cmp.summary()
    assert mismatches(program, codes[:n], run["outputs"]) == []     # Program.reference agrees too
    assert run["cycles"] == [predicted_cycles(program.params, program)] * n
