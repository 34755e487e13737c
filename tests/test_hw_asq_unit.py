"""hw.asq_unit.AsqUnit alone in Amaranth's simulator against golden.arith.

Random 16-bit pooled values are summed per channel (``S = saturate(shift_round(sum, SUM_SHIFT))``,
golden.arith.asq_sums for ``SUM_SHIFT = pool_shift(P)``), a random one- or two-layer adapter
(host-written 32-bit ADAPT words, :meth:`hw.program.AdapterSpec.words` layout) maps the sums to ``z``
(golden.arith.adapter_z with ``h_shift``), and the 42-bit factor table entry at
:func:`golden.arith.asq_z_index` must become the layer's quantizer scale ``{inv_mant,
min(inv_shift + Q_SHIFT, 62)}`` and its stored factor ``{beta_mant, beta_shift}``; ``z`` is driven off
both ends of the table, and the adapter must take exactly ``HID * (N_OUT + 2) + 1`` cycles. The factor
of a layer's input (``SRC``) and the non-ASQ scale from the descriptor are checked too.
"""

import gc
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.asq_unit import TABLE_ENTRIES, AsqUnit, table_layout
from hw.engine import PostEngine
from hw.program import ADAPT_TAIL, DescField, EngineFitError, EngineParams
from hw.sequencer import desc_const
from test_hw_rescale import run_sim

PARAMS = EngineParams(rows=4, cols=4, max_layers=4, adapter_words=128, max_channels=16)
MASK = (1 << PARAMS.data_bits) - 1
V_MIN, V_MAX = -2 ** (arith.VALUE_BITS - 1), 2 ** (arith.VALUE_BITS - 1) - 1
BETA_IN = {"mant": 23456, "shift": 17}


def adapter_words(w1, b1, w2, b2):
    """ADAPT image (hw.program.AdapterSpec.words): per hidden unit b1[j], w1[j, :], w2[j]; then b2."""
    out = []
    for j in range(w1.shape[0]):
        out += [int(b1[j])] + [int(v) for v in w1[j]] + [int(w2[j])]
    return out + [int(b2)]


def table_word(entry):
    """A TABLE word from (beta_mant, beta_shift, inv_mant, inv_shift)."""
    bm, bs, im, ish = entry
    return table_layout().const({"beta": {"mant": bm, "shift": bs}, "inv": {"mant": im, "shift": ish}}).as_value().value


def run_asq(case, table, layer=2, a_base=5, gaps=0.0, seed=0):
    """Sums -> adapter -> table -> commit on the RTL; returns the quantizer scale, the stored factor,
    the adapter cycles and the factor read for SRC 0."""
    dut = AsqUnit(PARAMS)
    rng = np.random.default_rng(seed)
    values, n_out, pix = case["values"], case["values"].shape[0], case["values"].shape[1]
    words = adapter_words(case["w1"], case["b1"], case["w2"], case["b2"])
    desc = {DescField.N_OUT: n_out, DescField.HID: case["w1"].shape[0], DescField.A_BASE: a_base,
            DescField.Z_SHIFT: case["z_shift"], DescField.FLAGS: 16 if case["relu"] else 0, DescField.SRC: 0,
            DescField.SUM_SHIFT: case["sum_shift"], DescField.H_SHIFT: case["h_shift"],
            DescField.Q_SHIFT: case["q_shift"]}
    out = {}

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), desc_const(desc))
        ctx.set(dut.beta_in, BETA_IN)
        ctx.set(dut.layer, layer)
        ctx.set(dut.adapt_we, 1)
        for i, w in enumerate(words):
            ctx.set(dut.wr_addr, a_base + i)
            ctx.set(dut.wr_data, w & MASK)
            await ctx.tick()
        ctx.set(dut.adapt_we, 0)
        ctx.set(dut.table_we, 1)
        for i, entry in enumerate(table):
            ctx.set(dut.wr_addr, i)
            ctx.set(dut.wr_data, table_word(entry))
            await ctx.tick()
        ctx.set(dut.table_we, 0)
        b = ctx.get(dut.beta)                           # SRC 0: the host's factor
        out["beta_in"] = {"mant": b.mant, "shift": b.shift}
        for c in range(n_out):                          # the summing walk: channel-outer
            for p in range(pix):
                while rng.random() < gaps:
                    ctx.set(dut.sums.valid, 0)
                    await ctx.tick()
                ctx.set(dut.sums.valid, 1)
                ctx.set(dut.sums.payload, {"value": int(values[c, p]), "ch": c, "first_pix": p == 0,
                                           "end_ch": p == pix - 1})
                await ctx.tick()
        ctx.set(dut.sums.valid, 0)
        for _ in range(3):                              # the walk's flush
            await ctx.tick()
        ctx.set(dut.adapt_start, 1)
        await ctx.tick()
        ctx.set(dut.adapt_start, 0)
        ctx.set(dut.adapting, 1)
        cycles = 0
        while True:
            cycles += 1
            end = ctx.get(dut.adapt_end)
            await ctx.tick()
            if end:
                break
            assert cycles < 10000
        ctx.set(dut.adapting, 0)
        out["cycles"] = cycles                          # cycles in the sequencer's ADAPT state
        for _ in range(ADAPT_TAIL - 1):
            await ctx.tick()
        ctx.set(dut.table_commit, 1)
        await ctx.tick()
        ctx.set(dut.table_commit, 0)
        inv = ctx.get(dut.inv)
        out["inv"] = (inv.mant, inv.shift)
        ctx.set(dut.desc.as_value(), desc_const({**desc, DescField.SRC: layer + 1}))
        await ctx.tick()                                # the factor memory's read latency
        b = ctx.get(dut.beta)
        out["beta"] = (b.mant, b.shift)

    run_sim(dut, tb, max_cycles=50000)
    return out


def channel_sums(values, sum_shift):
    """S per channel: saturate(round_half_up(sum / 2**SUM_SHIFT)) (SUM_SHIFT 0: the saturation alone)."""
    s = values.sum(axis=1)
    return arith.saturate(arith.shift_round(s, sum_shift) if sum_shift else s)


def reference(case, table):
    sums = channel_sums(case["values"], case["sum_shift"])
    if case["relu"]:
        z = arith.adapter_z(sums[None], case["w1"], case["b1"], case["w2"][None], np.array([case["b2"]]),
                            case["h_shift"])[0]
    else:                 # one layer: the engine stores w2 = [1], b2 = 0, no ReLU
        z = arith.adapter_z(sums[None], case["w1"], case["b1"], h_shift=case["h_shift"])[0]
    idx = int(arith.asq_z_index(np.int64(z), case["z_shift"] + arith.ASQ_Z_FRAC))
    bm, bs, im, ish = table[idx]
    return (bm, bs), (im, min(ish + case["q_shift"], arith.MAX_SHIFT)), idx, sums, int(z)


def random_case(rng, n_out, pix, hid, relu, spread, sum_shift=None):
    """Values, an adapter whose H and z fit 32 bits and whose h fits 16 bits (what export proves),
    and a Z_SHIFT that puts z about ``spread`` table steps from 0."""
    values = rng.integers(V_MIN, V_MAX + 1, size=(n_out, pix))
    values[rng.random(values.shape) < 0.3] = V_MAX
    sum_shift = arith.pool_shift(pix) if sum_shift is None else sum_shift
    sums = channel_sums(values, sum_shift)
    wbits = 15 - (n_out - 1).bit_length() - 1                    # sum_c |w1| * |S| < 2**30
    w1 = rng.integers(-(1 << wbits), 1 << wbits, size=(hid, n_out))
    b1 = rng.integers(-(1 << 29), 1 << 29, size=hid)
    H = sums @ w1.T + b1
    hpos = np.maximum(H, 0) if relu else H
    h_shift = max(0, int(np.max(np.abs(hpos))).bit_length() - 15)
    w2 = rng.integers(-(1 << 13), 1 << 13, size=hid) if relu else np.ones(1, dtype=np.int64)
    b2 = int(rng.integers(-(1 << 28), 1 << 28)) if relu else 0
    h = hpos >> h_shift
    z = int(h @ w2 + b2)
    z_shift = max(0, abs(z).bit_length() - int(spread).bit_length())
    return {"values": values, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "relu": relu, "z_shift": z_shift,
            "sum_shift": sum_shift, "h_shift": h_shift, "q_shift": int(rng.integers(0, 40)), "H": H}


def random_table(rng):
    bm, im = rng.integers(1 << 14, 1 << 15, (2, TABLE_ENTRIES))
    bs, ish = rng.integers(1, 64, (2, TABLE_ENTRIES))
    return [tuple(int(x) for x in e) for e in zip(bm, bs, im, ish)]


def real_table(name):
    return [tuple(int(x) for x in e) for e in zip(*arith.factor_words(name))]


@pytest.mark.parametrize("n_out,pix,hid,relu,spread,gaps,sum_shift", [
    (1, 1, 1, False, 100, 0.0, None),   # smallest: one channel, one pooled pixel
    (3, 5, 1, False, 300, 0.3, None),   # one-layer adapter, gaps in the walk
    (4, 3, 3, True, 200, 0.0, None),    # two-layer adapter with ReLU
    (7, 2, 2, True, 5000, 0.2, 0),      # z off the table's ends (clipped); SUM_SHIFT 0: sums saturate
    (16, 4, 4, True, 0, 0.0, 1),        # max_channels channels; z_shift leaves z near 0
    (5, 9, 2, True, 50, 0.0, 70),       # SUM_SHIFT past 62 acts as 62: every S is 0
])
def test_asq_unit_random(n_out, pix, hid, relu, spread, gaps, sum_shift):
    rng = np.random.default_rng(100 * n_out + 10 * hid + pix)
    table = random_table(rng)
    case = random_case(rng, n_out, pix, hid, relu, spread, sum_shift)
    got = run_asq(case, table, gaps=gaps, seed=n_out)
    beta, inv, idx, sums, _ = reference(case, table)
    assert got["inv"] == inv and got["beta"] == beta, (got, beta, inv, idx)
    assert got["cycles"] == hid * (n_out + 2) + 1
    assert got["beta_in"] == BETA_IN
    if sum_shift == 0:
        assert np.any(sums == V_MAX)                                   # the sums saturate


def test_asq_unit_golden_asq_sums_and_relu():
    """SUM_SHIFT = pool_shift(P) is golden.arith.asq_sums; hidden units with negative H are cut by the
    ReLU (and kept without it), and H_SHIFT > 0 matters."""
    rng = np.random.default_rng(4)
    table = random_table(rng)
    for relu in (True, False):
        case = random_case(rng, 3, 6, 2 if relu else 1, relu, 400)
        assert np.array_equal(channel_sums(case["values"], case["sum_shift"]), arith.asq_sums(case["values"][None])[0])
        case["b1"] = np.array([-(1 << 29)] + [1 << 29] * (case["w1"].shape[0] - 1))   # one H < 0, one > 0
        sums = channel_sums(case["values"], case["sum_shift"])
        case["H"] = sums @ case["w1"].T + case["b1"]
        case["h_shift"] = max(1, int(np.max(np.abs(case["H"]))).bit_length() - 15)
        _, _, _, _, z = reference(case, table)
        case["z_shift"] = max(0, abs(z).bit_length() - 9)
        got = run_asq(case, table)
        beta, inv, idx, _, _ = reference(case, table)
        assert (got["inv"], got["beta"]) == (inv, beta), (relu, idx)
        assert case["H"][0] < 0


def test_asq_unit_sums_round_half_up():
    """With z = S (one channel, w1 = 1, no shifts) the table index is S + 512, so every bit of the
    channel sum's rounding and saturation shows: exact halves round up (also negative), SUM_SHIFT 0
    saturates both ways."""
    rng = np.random.default_rng(8)
    table = random_table(rng)
    seen = []
    for vals, sum_shift in [([3, 1, 0, 0], 3), ([-3, -1, 0, 0], 3), ([5, 6, 0, 1], 2), ([-5, -6, 0, -1], 2),
                            ([V_MAX] * 4, 0), ([V_MIN] * 4, 0), ([V_MAX] * 4, 9), ([1000, -1, 24, 0], 1)]:
        case = {"values": np.array([vals], dtype=np.int64), "w1": np.array([[1]]), "b1": np.array([0]),
                "w2": np.ones(1, dtype=np.int64), "b2": 0, "relu": False, "z_shift": 0, "sum_shift": sum_shift,
                "h_shift": 0, "q_shift": 3}
        got = run_asq(case, table)
        beta, inv, _, sums, _ = reference(case, table)
        assert (got["inv"], got["beta"]) == (inv, beta), (vals, sum_shift)
        seen.append(int(sums[0]))
    assert seen[:4] == [1, 0, 3, -3] and seen[4:6] == [V_MAX, V_MIN]       # 4/8 -> 1, -4/8 -> 0, 12/4, -12/4


@pytest.mark.parametrize("name", arith.ASQ_FACTORS)
def test_asq_unit_table_ends_and_real_tables(name):
    """z far below and far above the grid pick the first and the last entry of golden's tables
    (golden.arith.factor_words)."""
    table = real_table(name)
    seen = set()
    for sign in (-1, 1):
        values = np.full((2, 2), 1 << 14, dtype=np.int64)
        case = {"values": values, "w1": np.array([[sign * (1 << 14), sign * (1 << 14)]]), "b1": np.array([0]),
                "w2": np.ones(1, dtype=np.int64), "b2": 0, "relu": False, "z_shift": 0, "sum_shift": 1,
                "h_shift": 15, "q_shift": 8}
        got = run_asq(case, table, seed=1)
        beta, inv, idx, _, _ = reference(case, table)
        assert idx == (0 if sign < 0 else TABLE_ENTRIES - 1)
        assert (got["inv"], got["beta"]) == (inv, beta)
        seen.add(idx)
    assert seen == {0, TABLE_ENTRIES - 1}


def test_quantizer_scale_from_descriptor():
    """quant_from_desc: inv = {Q_MULT_LO[:15], min(Q_SHIFT, 62)}."""
    dut = AsqUnit(PARAMS)
    got = []
    cases = [(1 << 14, 16), ((1 << 15) - 1, 62), (3, 7), (0x7FFF, 63), (1 << 14, 0xFFFF)]

    async def tb(ctx):
        for lo, qs in cases:
            ctx.set(dut.desc.as_value(), desc_const({DescField.Q_MULT_LO: lo, DescField.Q_SHIFT: qs}))
            ctx.set(dut.quant_from_desc, 1)
            await ctx.tick()
            ctx.set(dut.quant_from_desc, 0)
            inv = ctx.get(dut.inv)
            got.append((inv.mant, inv.shift))

    run_sim(dut, tb)
    assert got == [(lo, min(qs, arith.MAX_SHIFT)) for lo, qs in cases]


class _NarrowHost(EngineParams):
    """Engine parameters whose host port is narrower than a TABLE word (EngineParams never is)."""

    @property
    def data_bits(self) -> int:
        return self.rows * self.cols * self.wbits


def test_asq_unit_widths_and_errors():
    """The documented shapes (42-bit table words, 21-bit factors, {15, 7} scale); every engine's host data
    width holds a TABLE word (hw.program.EngineParams.data_bits covers ASQ_TABLE_BITS), and a narrower
    one would be refused with the reason (and no unused-elaboratable warning)."""
    dut = AsqUnit(PARAMS)
    assert table_layout().size == arith.ASQ_TABLE_BITS == 42
    assert len(dut.beta.as_value()) == arith.FACTOR_BITS == 21 and len(dut.beta_in.as_value()) == 21
    assert (len(dut.inv.mant), len(dut.inv.shift)) == (15, 7)
    assert dut.sums.payload.value.shape().width == 16
    Simulator(dut)                                      # elaborates
    assert EngineParams(rows=1, cols=1, wbits=2).data_bits == arith.ASQ_TABLE_BITS
    AsqUnit(EngineParams(rows=1, cols=1, wbits=2))._MustUse__silence = True
    small = _NarrowHost(rows=2, cols=2)
    assert small.data_bits < arith.ASQ_TABLE_BITS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(EngineFitError, match="narrower than a TABLE word"):
            AsqUnit(small)
        with pytest.raises(EngineFitError, match="narrower than a TABLE word"):
            PostEngine(small)
        gc.collect()
    assert not [w for w in caught if "UnusedElaboratable" in w.category.__name__]
