"""hw.asq_unit.AsqUnit alone in Amaranth's simulator against golden.arith.

Random pooled values are summed per channel, a random one- or two-layer adapter (host-written
ADAPT words, :meth:`hw.program.AdapterSpec.words` layout) maps the sums to ``z``, and the factor
table entry at :func:`golden.arith.asq_z_index` must become the layer's quantizer multiplier and
its stored factor; ``z`` is driven off both ends of the table, and the adapter must take exactly
``HID * (N_OUT + 2) + 1`` cycles. The factor of a layer's input (``SRC``) and the non-ASQ
multiplier from the descriptor are checked too.
"""

import numpy as np
import pytest

from golden import arith
from hw.asq_unit import TABLE_ENTRIES, AsqUnit
from hw.program import ADAPT_TAIL, DescField, EngineParams
from hw.sequencer import desc_const
from test_hw_rescale import run_sim

PARAMS = EngineParams(rows=2, cols=2, max_layers=4, adapter_words=128, max_channels=16)
TB = arith.ASQ_TABLE_BITS
MASK64 = (1 << 64) - 1


def adapter_words(w1, b1, w2, b2):
    """ADAPT image (hw.program.AdapterSpec.words): per hidden unit b1[j], w1[j, :], w2[j]; then b2."""
    out = []
    for j in range(w1.shape[0]):
        out += [int(b1[j])] + [int(v) for v in w1[j]] + [int(w2[j])]
    return out + [int(b2)]


def run_asq(n_out, pix, values, w1, b1, w2, b2, relu, z_shift, table, layer=2, a_base=5, gaps=0.0, seed=0):
    """Sums -> adapter -> table -> commit on the RTL; returns (inv, stored beta, adapter cycles, beta_in read)."""
    dut = AsqUnit(PARAMS)
    rng = np.random.default_rng(seed)
    words = adapter_words(w1, b1, w2, b2)
    desc = {DescField.N_OUT: n_out, DescField.HID: w1.shape[0], DescField.A_BASE: a_base,
            DescField.Z_SHIFT: z_shift, DescField.FLAGS: 16 if relu else 0, DescField.SRC: 0}
    out = {}

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), desc_const(desc))
        ctx.set(dut.beta_in, 12345)
        ctx.set(dut.layer, layer)
        ctx.set(dut.adapt_we, 1)
        for i, w in enumerate(words):
            ctx.set(dut.wr_addr, a_base + i)
            ctx.set(dut.wr_data, w & MASK64)
            await ctx.tick()
        ctx.set(dut.adapt_we, 0)
        ctx.set(dut.table_we, 1)
        for i, (b, inv) in enumerate(table):
            ctx.set(dut.wr_addr, i)
            ctx.set(dut.wr_data, int(b) | int(inv) << TB)
            await ctx.tick()
        ctx.set(dut.table_we, 0)
        out["beta_in"] = ctx.get(dut.beta)              # SRC 0: the host's factor
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
        out["inv"] = ctx.get(dut.inv)
        ctx.set(dut.desc.as_value(), desc_const({**desc, DescField.SRC: layer + 1}))
        await ctx.tick()                                # the factor memory's read latency
        out["beta"] = ctx.get(dut.beta)

    run_sim(dut, tb, max_cycles=50000)
    return out


def reference(values, w1, b1, w2, b2, relu, z_shift, table):
    sums = values.sum(axis=1)
    if relu:
        z = arith.adapter_z(sums[None], w1, b1, w2[None], np.array([b2]))[0]
    else:                 # the engine's one-layer form: w2 = 1, b2 = 0, no ReLU (single hidden unit)
        h = sums @ w1.T + b1
        z = int(h @ w2 + b2)
    idx = int(arith.asq_z_index(np.int64(z), z_shift + arith.ASQ_Z_FRAC))
    return int(table[idx][0]), int(table[idx][1]), idx


def random_case(rng, n_out, pix, hid, relu, spread):
    values = rng.integers(-(1 << 18), 1 << 18, size=(n_out, pix))
    w1 = rng.integers(-(1 << 15), 1 << 15, size=(hid, n_out))
    b1 = rng.integers(-(1 << 30), 1 << 30, size=hid)
    w2 = rng.integers(-(1 << 15), 1 << 15, size=hid) if relu else np.ones(1, dtype=np.int64)
    b2 = int(rng.integers(-(1 << 40), 1 << 40)) if relu else 0
    sums = values.sum(axis=1)
    h = sums @ w1.T + b1
    z = int((np.maximum(h, 0) if relu else h) @ w2 + b2)
    # a z_shift that puts z about `spread` table steps from 0
    z_shift = max(0, int(abs(z)).bit_length() - int(spread).bit_length())
    return values, w1, b1, w2, b2, z_shift


def random_table(rng):
    return [(int(b), int(i)) for b, i in zip(rng.integers(1, 1 << TB, TABLE_ENTRIES),
                                             rng.integers(1, 1 << TB, TABLE_ENTRIES))]


@pytest.mark.parametrize("n_out,pix,hid,relu,spread,gaps", [
    (1, 1, 1, False, 100, 0.0),         # smallest: one channel, one pooled pixel
    (3, 5, 1, False, 300, 0.3),         # one-layer adapter, gaps in the walk
    (4, 3, 3, True, 200, 0.0),          # two-layer adapter with ReLU
    (7, 2, 2, True, 5000, 0.2),         # z off the table's ends (clipped)
    (16, 4, 4, True, 0, 0.0),           # max_channels channels; z_shift leaves z near 0
])
def test_asq_unit_random(n_out, pix, hid, relu, spread, gaps):
    rng = np.random.default_rng(100 * n_out + 10 * hid + pix)
    table = random_table(rng)
    values, w1, b1, w2, b2, z_shift = random_case(rng, n_out, pix, hid, relu, spread)
    got = run_asq(n_out, pix, values, w1, b1, w2, b2, relu, z_shift, table, gaps=gaps, seed=n_out)
    beta, inv, idx = reference(values, w1, b1, w2, b2, relu, z_shift, table)
    assert got["inv"] == inv and got["beta"] == beta, (got, beta, inv, idx)
    assert got["cycles"] == hid * (n_out + 2) + 1
    assert got["beta_in"] == 12345


def test_asq_unit_table_ends_and_real_tables():
    """z far below and far above the grid pick the first and the last entry of golden's sigmoid tables."""
    betas, invs = arith.asq_tables("sigmoid")
    table = list(zip(betas.tolist(), invs.tolist()))
    seen = set()
    for sign in (-1, 1):
        values = np.full((2, 2), 1 << 17, dtype=np.int64)
        w1 = np.array([[sign * (1 << 14), sign * (1 << 14)]])
        got = run_asq(2, 2, values, w1, np.array([0]), np.ones(1, dtype=np.int64), 0, False, 0, table, seed=1)
        beta, inv, idx = reference(values, w1, np.array([0]), np.ones(1, dtype=np.int64), 0, False, 0, table)
        assert idx == (0 if sign < 0 else TABLE_ENTRIES - 1)
        assert (got["inv"], got["beta"]) == (inv, beta)
        seen.add(idx)
    assert seen == {0, TABLE_ENTRIES - 1}


def test_quantizer_multiplier_from_descriptor():
    dut = AsqUnit(PARAMS)
    got = []

    async def tb(ctx):
        for lo, hi in ((0, 1), (0xFFFF, 0xFFF), (3, 7)):      # LSQ's 2**16, the largest, a small one
            ctx.set(dut.desc.as_value(), desc_const({DescField.Q_MULT_LO: lo, DescField.Q_MULT_HI: hi}))
            ctx.set(dut.quant_from_desc, 1)
            await ctx.tick()
            ctx.set(dut.quant_from_desc, 0)
            got.append(ctx.get(dut.inv))

    run_sim(dut, tb)
    assert got == [1 << 16, (0xFFF << 16 | 0xFFFF), 7 << 16 | 3]
