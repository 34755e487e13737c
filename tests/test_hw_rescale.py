"""Requantizer in the Amaranth simulator against arith.requantize, with back-pressure."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import arith
from hw.rescale import QMAX_BITS, SHIFT_BITS, Requantizer
from sim.amaranth_sim import stream_get, stream_put


def ref_value(acc, mult, shift, out_bits, final):
    return int(acc) if final else int(arith.requantize(int(acc), int(mult), int(shift), int(out_bits)))


def rtl_values(cases, acc_bits, seed=0, in_gaps=0.0, out_stalls=0.0):
    """``cases``: (acc, mult, shift, out_bits, final); returns the outputs in order."""
    dut = Requantizer(acc_bits)
    rng = np.random.default_rng(seed)
    got = []

    async def producer(ctx):
        for acc, mult, shift, out_bits, final in cases:
            while rng.random() < in_gaps:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"acc": int(acc), "mult": int(mult), "shift": int(shift),
                                          "qmax": 2 ** int(out_bits) - 1, "final": int(final)})

    async def consumer(ctx):
        for _ in cases:
            while rng.random() < out_stalls:
                await ctx.tick()
            got.append(int(await stream_get(ctx, dut.o)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


def random_cases(rng, n, acc_bits):
    amax = 2 ** (acc_bits - 1)
    cases = []
    for _ in range(n):
        acc = int(rng.integers(-amax, amax))
        mult = int(rng.integers(2 ** (arith.MULT_BITS - 1), 2 ** arith.MULT_BITS))
        out_bits = int(rng.integers(2, 9))
        # mostly shifts that land near the output range, some anywhere
        natural = max(1, min(63, (abs(acc) * mult).bit_length() - out_bits + int(rng.integers(-2, 3))))
        shift = natural if rng.random() < 0.8 else int(rng.integers(1, 64))
        cases.append((acc, mult, shift, out_bits, bool(rng.random() < 0.1)))
    return cases


def check(cases, got):
    expected = [ref_value(*c) for c in cases]
    bad = [(c, g, e) for c, g, e in zip(cases, got, expected) if g != e]
    assert len(got) == len(cases) and not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


@pytest.mark.parametrize("acc_bits", [20, 24, 30])
def test_requantizer_random(acc_bits):
    rng = np.random.default_rng(acc_bits)
    cases = random_cases(rng, 400, acc_bits)
    check(cases, rtl_values(cases, acc_bits))


def test_requantizer_corners():
    acc_bits = 22
    amax, amin = 2 ** (acc_bits - 1) - 1, -2 ** (acc_bits - 1)
    mmax = 2 ** arith.MULT_BITS - 1
    cases = [
        (amax, mmax, 1, 8, False),          # saturates at qmax
        (amax, mmax, 63, 8, False),         # largest shift: rounds to 0
        (amin, mmax, 1, 4, False),          # most negative -> 0 (ReLU)
        (amin, mmax, 63, 4, False),         # -tiny rounds up to 0 (arithmetic shift)
        (-1, 1, 1, 4, False),               # (-1 + 1) >> 1 = 0
        (1, 1, 1, 4, False),                # (1 + 1) >> 1 = 1: half rounds up
        (3, 1, 1, 2, False),                # 2 -> in range
        (7, 1, 1, 2, False),                # 4 -> clipped to qmax 3
        (0, mmax, 17, 8, False),
        (5 << 16, 1 << 15, 16, 8, False),   # exactly 2.5 * 2**16... rounds half up
        (-5 << 16, 1 << 15, 16, 8, False),
        (amax, 1, 1, 8, True),              # final: acc passes through
        (amin, 1, 1, 8, True),
        (-12345, 40000, 20, 8, True),
    ]
    for out_bits in range(2, 9):            # qmax boundary for every width
        q = 2 ** out_bits - 1
        cases += [((q << 4) + 7, 1 << 15, 19, out_bits, False), ((q << 4) + 8, 1 << 15, 19, out_bits, False),
                  (((q + 1) << 4) - 1, 1 << 15, 19, out_bits, False)]
    got = rtl_values(cases, acc_bits)
    check(cases, got)
    assert got[0] == 255 and got[2] == 0 and got[11] == amax and got[12] == amin


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.3, 0.5)])
def test_requantizer_back_pressure(in_gaps, out_stalls):
    rng = np.random.default_rng(99)
    cases = random_cases(rng, 150, 22)
    check(cases, rtl_values(cases, 22, seed=5, in_gaps=in_gaps, out_stalls=out_stalls))


def test_requantizer_latency():
    dut = Requantizer(22)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"acc": 401, "mult": 1 << 15, "shift": 16, "qmax": 255, "final": 0})
        await ctx.tick()                     # accepted
        ctx.set(dut.i.valid, 0)
        for _ in range(2):
            assert not ctx.get(dut.o.valid)
            await ctx.tick()
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 201
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_requantizer_widths_and_errors():
    assert SHIFT_BITS == 6 and QMAX_BITS == 8
    dut = Requantizer(22)
    assert dut.prod_bits == arith.requant_product_bits(22)
    Simulator(dut)                           # elaborates
    with pytest.raises(ValueError, match="acc_bits"):
        Requantizer(8)


def test_wrong_expected_value_is_caught():
    cases = [(1000, 1 << 15, 16, 8, False), (300, 1 << 15, 16, 8, False)]
    got = rtl_values(cases, 22)
    with pytest.raises(AssertionError, match="1 mismatches"):
        check(cases, [got[0], got[1] + 1])
