"""PostArray in the Amaranth simulator against a golden.arith reference, with back-pressure."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.array import PostArray
from sim.amaranth_sim import stream_get, stream_put


def ref_tiles(tiles, rows, cols, wbits, abits, frac_bits=arith.DEFAULT_FRAC_BITS):
    """Accumulators of each tile: ``init[c] + sum over steps and rows of post_product``."""
    table = arith.product_table(wbits, abits, frac_bits)
    out = []
    for init, steps in tiles:
        acc = np.array(init, dtype=np.int64)
        for x, w in steps:
            w = np.asarray(w).reshape(rows, cols)
            acc = acc + table[np.asarray(x)[:, None], w].sum(axis=0)
        out.append(acc)
    return out


def rtl_tiles(tiles, rows, cols, wbits, abits, acc_bits, frac_bits=arith.DEFAULT_FRAC_BITS,
              seed=0, in_gaps=0.0, out_stalls=0.0):
    """Stream ``tiles`` (``(init, [(x, w), ...])``) through the array; random input gaps and
    output stalls with the given probabilities. Returns the accumulators in order."""
    dut = PostArray(rows, cols, wbits, abits, frac_bits, acc_bits)
    rng = np.random.default_rng(seed)
    got = []

    async def producer(ctx):
        for init, steps in tiles:
            for s, (x, w) in enumerate(steps):
                while rng.random() < in_gaps:
                    await ctx.tick()
                await stream_put(ctx, dut.i, {"x": list(map(int, x)), "w": list(map(int, w)),
                                              "first": int(s == 0), "last": int(s == len(steps) - 1),
                                              "init": list(map(int, init))})

    async def consumer(ctx):
        for _ in tiles:
            while rng.random() < out_stalls:
                await ctx.tick()
            value = await stream_get(ctx, dut.o)
            got.append(np.array([int(value[c]) for c in range(cols)], dtype=np.int64))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


def random_tiles(rng, n_tiles, rows, cols, wbits, abits, acc_bits, max_steps=5):
    tiles = []
    lim = 2 ** (acc_bits - 3)
    for _ in range(n_tiles):
        steps = []
        for _ in range(int(rng.integers(1, max_steps + 1))):
            x = rng.integers(0, 2 ** abits, rows)
            w = rng.integers(0, 2 ** wbits, rows * cols)
            w[rng.random(rows * cols) < 0.2] = 0
            steps.append((x, w))
        tiles.append((rng.integers(-lim, lim, cols), steps))
    return tiles


@pytest.mark.parametrize("rows,cols,wbits,abits", [(2, 2, 4, 4), (3, 2, 4, 4), (1, 1, 2, 2), (4, 3, 8, 8)])
def test_array_random(rows, cols, wbits, abits):
    rng = np.random.default_rng(rows * 100 + cols * 10 + wbits)
    acc_bits = arith.accumulator_bits(16 * rows, abits)
    tiles = random_tiles(rng, 12, rows, cols, wbits, abits, acc_bits)
    got = rtl_tiles(tiles, rows, cols, wbits, abits, acc_bits)
    expected = ref_tiles(tiles, rows, cols, wbits, abits)
    assert len(got) == len(expected)
    for t, (g, e) in enumerate(zip(got, expected)):
        assert np.array_equal(g, e), f"tile {t}: RTL {g} != reference {e}"


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.4, 0.6)])
def test_array_back_pressure(in_gaps, out_stalls):
    rows, cols, wbits, abits = 3, 2, 4, 4
    rng = np.random.default_rng(7)
    acc_bits = arith.accumulator_bits(32, abits)
    tiles = random_tiles(rng, 15, rows, cols, wbits, abits, acc_bits, max_steps=3)
    tiles += [(np.zeros(cols, dtype=np.int64), [(rng.integers(0, 16, rows), rng.integers(0, 16, rows * cols))])
              for _ in range(3)]                       # one-step tiles back to back
    got = rtl_tiles(tiles, rows, cols, wbits, abits, acc_bits, seed=3, in_gaps=in_gaps, out_stalls=out_stalls)
    expected = ref_tiles(tiles, rows, cols, wbits, abits)
    assert [list(g) for g in got] == [list(e) for e in expected]


def test_array_corner_cases():
    rows, cols, wbits, abits = 2, 2, 4, 4
    acc_bits = arith.accumulator_bits(8, abits)
    top = 2 ** abits - 1
    plus_max, minus_max = arith.post_code(0, 0, wbits), arith.post_code(1, 0, wbits)
    kmax = arith.post_max_exponent(wbits)
    amax, amin = 2 ** (acc_bits - 1) - 1, -2 ** (acc_bits - 1)
    big = arith.max_product_magnitude(abits, arith.DEFAULT_FRAC_BITS)
    tiles = [
        ([5, -5], [([top, top], [0] * 4)]),                                   # zero weights: bias only
        ([0, 0], [([top, top], [plus_max, minus_max] * 2)] * 4),             # largest codes, both signs
        ([amax - 8 * big, amin + 8 * big], [([top, top], [plus_max, minus_max] * 2)] * 4),  # to the edges
        ([0, 0], [([0, 0], [plus_max, minus_max] * 2)]),                      # zero activations
        ([1, -1], [([top, 1], [arith.post_code(1, kmax, wbits), arith.post_code(0, kmax, wbits),
                               arith.post_code(0, 1, wbits), arith.post_code(1, 1, wbits)])]),
        ([0, 0], [([top, top], [1 << (wbits - 1)] * 4)]),                    # m = 0 with sign set
    ]
    got = rtl_tiles(tiles, rows, cols, wbits, abits, acc_bits)
    expected = ref_tiles(tiles, rows, cols, wbits, abits)
    assert [list(g) for g in got] == [list(e) for e in expected]
    assert list(got[2]) == [amax, amin]
    assert list(got[1]) == [8 * big, -8 * big]


def test_array_latency_and_ready():
    """One-step tile: result offered 2 cycles after acceptance; held while ``o.ready`` is low."""
    dut = PostArray(2, 2, 4, 4, acc_bits=20)
    seen = {}

    async def tb(ctx):
        assert ctx.get(dut.i.ready)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"x": [3, 1], "w": [1, 9, 1, 9], "first": 1, "last": 1, "init": [10, -10]})
        await ctx.tick()                        # accepted at this edge
        ctx.set(dut.i.valid, 0)
        assert not ctx.get(dut.o.valid)
        await ctx.tick()
        assert ctx.get(dut.o.valid)             # 2 edges after acceptance
        for _ in range(3):                      # blocked: held, input stalled
            await ctx.tick()
            assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
        seen["value"] = [int(v) for v in ctx.get(dut.o.payload)]
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    unit = 1 << arith.DEFAULT_FRAC_BITS
    assert seen["value"] == [10 + 4 * unit, -10 - 4 * unit]


@pytest.mark.parametrize("wbits,abits", [(4, 4), (3, 8)])
def test_array_every_pair(wbits, abits):
    """Every (activation, code) pair as a one-step tile at row 0 / column 0 (row 1 and column 1
    carry other pairs, including the opposite sign): the signs riding on the carry-ins of the
    column trees and the accumulators add up for every product of the format."""
    rows, cols = 2, 2
    acc_bits = arith.accumulator_bits(rows, abits)
    rng = np.random.default_rng(wbits * 10 + abits)
    half = 1 << (wbits - 1)
    tiles = []
    for x in range(2 ** abits):
        for code in range(2 ** wbits):
            xs = [x, int(rng.integers(0, 2 ** abits))]
            w = [code, code ^ half, int(rng.integers(0, 2 ** wbits)), code]
            tiles.append(([int(rng.integers(-9, 10)), 0], [(xs, w)]))
    got = rtl_tiles(tiles, rows, cols, wbits, abits, acc_bits)
    expected = ref_tiles(tiles, rows, cols, wbits, abits)
    assert [list(g) for g in got] == [list(e) for e in expected]
