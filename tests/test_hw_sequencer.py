"""hw.sequencer.Sequencer alone in Amaranth's simulator, in a model of the components it drives.

Random descriptors (every field, signed ones negative too) are written through the DESC port; a run
over slots ``first_layer .. n_layers - 1`` of final, non-ASQ and ASQ layers, with the components
answering after random numbers of cycles, must latch each slot's descriptor bit for bit, emit the
phase pulses in the order of the schedule (``docs/engine.md``), and count exactly the cycles of
the schedule: per layer ``1 + (DESC_FIELDS + 1) + feed + tail`` and, unless final, ``walk +
WALK_FLUSH`` (ASQ: twice, with ``adapt + ADAPT_TAIL`` between), plus 1 per run.
"""

import numpy as np
import pytest

from hw.program import ADAPT_TAIL, DESC_FIELDS, SIGNED_FIELDS, WALK_FLUSH, DescField, EngineParams, Flag
from hw.sequencer import Sequencer, desc_const
from test_hw_rescale import run_sim

PARAMS = EngineParams(rows=2, cols=2, max_layers=5)


def random_desc(rng, kind):
    values = {f: int(rng.integers(-(1 << 15), 1 << 15)) if f in SIGNED_FIELDS else int(rng.integers(0, 1 << 16))
              for f in DescField}
    values[DescField.FLAGS] = {"final": int(Flag.FINAL), "plain": 0, "asq": int(Flag.ASQ)}[kind] \
        | (values[DescField.FLAGS] & 0xFFF0)
    return values


def expected(kind, t):
    """Cycles of one layer and its pulses in order; ``t`` the components' answer times."""
    cycles = 1 + DESC_FIELDS + 1 + t["feed"] + t["tail"]
    events = ["feed_start"]
    if kind == "plain":
        cycles += t["walk"] + WALK_FLUSH
        events += ["quant_from_desc", "walk_start0"]
    elif kind == "asq":
        cycles += 2 * (t["walk"] + WALK_FLUSH) + t["adapt"] + ADAPT_TAIL
        events += ["walk_start1", "adapt_start", "table_commit", "walk_start0"]
    return cycles, events


def run_seq(slots, kinds, first, n_layers, times):
    dut = Sequencer(PARAMS)
    got = {"events": [], "descs": [], "layers": []}

    async def tb(ctx):
        ctx.set(dut.desc_we, 1)                              # descriptors through the DESC port
        for slot, values in enumerate(slots):
            for f in DescField:
                ctx.set(dut.wr_addr, slot * 64 + f)
                ctx.set(dut.wr_data, values[f] & 0xFFFF | (0xABCD << 16))   # upper host bits are ignored
                await ctx.tick()
        ctx.set(dut.desc_we, 0)
        ctx.set(dut.n_layers, n_layers)
        ctx.set(dut.first_layer, first)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        phase, count, layer_t = None, 0, None
        cycle = 0
        while True:
            # the components answer after the layer's times (inputs first: some outputs depend on them)
            for name in ("feed_end", "walk_end", "adapt_end", "feed_idle", "rescale_idle"):
                ctx.set(getattr(dut, name), 0)
            nxt = phase
            if phase == "feed" and ctx.get(dut.feeding):
                count += 1
                if count == layer_t["feed"]:
                    ctx.set(dut.feed_end, 1)
                    nxt = "tail"
            elif phase == "tail":
                count += 1
                if count == layer_t["tail"]:
                    ctx.set(dut.feed_idle, 1)
                    ctx.set(dut.rescale_idle, 1)
                    nxt = None
            elif phase == "walk":
                count += 1
                if count == layer_t["walk"]:
                    ctx.set(dut.walk_end, 1)
                    nxt = "after_walk"
            elif phase == "after_walk" and ctx.get(dut.adapting):
                count += 1
                if count == layer_t["adapt"]:
                    ctx.set(dut.adapt_end, 1)
                    nxt = None
            if ctx.get(dut.done):
                break
            assert ctx.get(dut.busy)
            got["events"] += [n for n in ("feed_start", "quant_from_desc", "adapt_start", "table_commit")
                              if ctx.get(getattr(dut, n))]
            walk, feed = ctx.get(dut.walk_start), ctx.get(dut.feed_start)
            if feed:
                layer_t = times[ctx.get(dut.layer)]
            await ctx.tick()
            cycle += 1
            assert cycle < 100000
            if nxt != phase:
                phase, count = nxt, 0
            if walk:
                got["events"].append(f"walk_start{ctx.get(dut.sum_pass)}")
                phase, count = "walk", 0
            if feed:
                got["descs"].append(int(ctx.get(dut.desc.as_value())))
                got["layers"].append(int(ctx.get(dut.layer)))
                phase, count = "feed", 0
        got["cycles"] = ctx.get(dut.cycles)
        got["cycles_seen"] = cycle

    run_sim(dut, tb, max_cycles=200000)
    return got


@pytest.mark.parametrize("kinds,first,n_layers", [
    (["final"], 0, 1),
    (["plain", "final"], 0, 2),
    (["asq", "plain", "asq", "final"], 0, 4),
    (["plain", "asq", "final", "plain", "plain"], 1, 3),      # a pass of slots 1..2
    (["plain", "final"], 2, 2),                               # no layer: the run ends at once
    (["asq", "final"], 0, 2),
])
def test_sequencer_schedule(kinds, first, n_layers):
    rng = np.random.default_rng(len(kinds) * 10 + first)
    slots = [random_desc(rng, k) for k in kinds]
    times = [{"feed": int(rng.integers(1, 9)), "tail": int(rng.integers(1, 9)), "walk": int(rng.integers(1, 9)),
              "adapt": int(rng.integers(1, 9))} for _ in kinds]
    got = run_seq(slots, kinds, first, n_layers, times)
    run = range(first, n_layers)
    total, events = 1, []
    for l in run:
        c, e = expected(kinds[l], times[l])
        total += c
        events += e
    assert got["cycles"] == got["cycles_seen"] == total
    assert got["events"] == events
    assert got["layers"] == list(run)
    assert got["descs"] == [desc_const([slots[l][f] for f in DescField]) for l in run]
