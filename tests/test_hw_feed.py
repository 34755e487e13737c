"""hw.feed.FeedGenerator alone (driving a hw.array.PostArray) in Amaranth's simulator.

The first convolution of random layer stacks (3x3 with padding, stride 2, 1x1, 2x2 kernels, odd
channel counts, depthwise with its own channel tiles and the block-diagonal fallback, R = 1 and
R > channels) is laid out by :func:`hw.program.build_program` (its descriptor, weight tiles and the
input's HWC activation words are the contract); the generator walks it and the array's
accumulators must equal a direct NumPy convolution with :func:`golden.arith.post_product`, zero
codes for padding taps. The walk must take exactly ``N_PIX * N_OT * N_SPAN - (N_SPAN - N_IT)``
cycles (the schedule of :func:`hw.program.layer_cycles`).
"""

import zlib

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, unsigned
from amaranth.lib.memory import Memory

from golden import arith
from hw.array import PostArray
from hw.feed import FeedGenerator
from hw.program import EngineParams, Sel, build_program
from hw.sequencer import desc_const
from test_hw_conv import CASES, SMALL, conv_stack
from test_hw_rescale import run_sim


class FeedHarness(Elaboratable):
    """Generator -> array, with the activation banks and the weight memory loaded from a program."""

    def __init__(self, params, act_init, weight_init):
        self.params = params
        self.feed = FeedGenerator(params)
        self.array = PostArray(params.rows, params.cols, params.wbits, params.abits, params.frac_bits,
                               params.acc_bits)
        self.act_init, self.weight_init = act_init, weight_init

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.feed = feed = self.feed
        m.submodules.array = array = self.array
        m.d.comb += [array.i.valid.eq(feed.o.valid), array.i.payload.eq(feed.o.payload),
                     feed.o.ready.eq(array.i.ready)]
        for r in range(p.rows):
            m.submodules[f"act{r}"] = mem = Memory(shape=unsigned(p.abits), depth=p.act_words, init=self.act_init[r])
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(feed.act_addr), rd.en.eq(feed.act_en), feed.act_data[r].eq(rd.data)]
        m.submodules.weight = wmem = Memory(shape=unsigned(p.weight_word_bits), depth=p.weight_words,
                                            init=self.weight_init)
        rd = wmem.read_port()
        m.d.comb += [rd.addr.eq(feed.weight_addr), feed.weight_data.eq(rd.data)]
        return m


def memory_images(program, x):
    p = program.params
    act = [[0] * p.act_words for _ in range(p.rows)]
    weight = [0] * p.weight_words
    for sel, addr, value in program.config_writes + program.input_writes(x):
        if sel == Sel.ACT:
            act[addr & ((1 << p.bank_bits) - 1)][addr >> p.bank_bits] = value
        elif sel == Sel.WEIGHT:
            weight[addr] = value
    return act, weight


def run_feed(program, x):
    p = program.params
    act, weight = memory_images(program, x)
    top = FeedHarness(p, act, weight)
    feed, array = top.feed, top.array
    lay = program.layouts[0]
    out = {"tiles": []}

    async def tb(ctx):
        ctx.set(feed.desc.as_value(), desc_const(lay.fields()))
        ctx.set(array.o.ready, 1)
        ctx.set(feed.start, 1)
        await ctx.tick()
        ctx.set(feed.start, 0)
        ctx.set(feed.active, 1)
        cycles, quiet = 0, 0
        while quiet < 4:
            if ctx.get(feed.active):
                cycles += 1
                end = ctx.get(feed.end)
            if ctx.get(array.o.valid):
                out["tiles"].append([int(v) for v in ctx.get(array.o.payload)])
            await ctx.tick()
            if ctx.get(feed.active):
                if end:
                    ctx.set(feed.active, 0)
            else:
                quiet += 1
            assert cycles < 200000
        out["cycles"] = cycles

    run_sim(top, tb, max_cycles=400000)
    return out


def reference_accs(layer, x, params):
    c_in, h, w = layer.in_chw
    codes = layer.dense_codes()                                   # [out, C_in, K, K]
    k, s, pad = layer.k, layer.stride, layer.pad
    xp = np.pad(np.asarray(x).reshape(c_in, h, w), [(0, 0), (pad, pad), (pad, pad)])
    n_out, oh, ow = layer.conv_chw
    prod = lambda a, wc: arith.post_product(a, wc, params.wbits, params.abits, params.frac_bits)  # noqa: E731
    acc = np.zeros((n_out, oh, ow), dtype=np.int64)
    for o in range(n_out):
        for y in range(oh):
            for xx in range(ow):
                win = xp[:, y * s:y * s + k, xx * s:xx * s + k]
                acc[o, y, xx] = int(np.sum(prod(win, codes[o])))
    return acc


@pytest.mark.parametrize("case", ["3x3_pad1_2x2", "3x3_stride2", "1x1_conv", "odd_channels_no_pad",
                                  "single_channel_w8a8", "wide_array_narrow_layer", "2x2_kernel_pad1",
                                  "depthwise_stride2_2x4", "depthwise_fallback_3x2"])
def test_feed_generator_conv(case):
    rows, cols, w, a, in_shape, convs, fc_out = CASES[case]
    params = EngineParams(rows=rows, cols=cols, wbits=w, abits=a, **SMALL)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    layers = conv_stack(rng, params, in_shape, convs[:1], fc_out)
    program = build_program(params, layers)
    n_in, top_code = int(np.prod(in_shape)), 2 ** a - 1
    x = rng.integers(0, top_code + 1, n_in)
    x[rng.random(n_in) < 0.2] = top_code                          # the largest code
    got = run_feed(program, x)
    lay, layer = program.layouts[0], layers[0]
    assert got["cycles"] == lay.n_pix * lay.n_ot * lay.n_span - (lay.n_span - lay.n_it)
    exp = reference_accs(layer, x, params)
    n_out, oh, ow = layer.conv_chw
    assert len(got["tiles"]) == oh * ow * lay.n_ot
    accs = np.array(got["tiles"]).reshape(oh * ow, lay.n_ot * cols)[:, :n_out]     # [pixel, channel]
    assert np.array_equal(accs.T.reshape(n_out, oh, ow), exp), f"{case}: accumulators differ"
    assert (exp != 0).any()
