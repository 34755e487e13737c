"""Run a program on :class:`hw.engine.PostEngine` in the Amaranth simulator (pure Python).

The testbench knows only the host-port protocol of ``docs/engine.md``: it writes the
configuration through ``host_wr``, then for each sample writes the inputs, pulses ``start``,
waits for ``done``, reads ``cycles`` and reads back every layer's outputs through
``rd_req``/``rd_resp``. Decoding and comparison happen outside (:class:`hw.program.Program`).
"""

from __future__ import annotations

import time

import numpy as np
from amaranth.sim import Simulator

from hw.engine import PostEngine
from hw.program import Program

__all__ = ["run_amaranth", "pack_fields", "host_write", "host_read", "run_engine", "stream_put", "stream_get"]

CLOCK_PERIOD = 1e-6


def pack_fields(widths, values) -> int:
    """Pack ``values`` LSB first into fields of ``widths`` bits (a StructLayout's bit order)."""
    word, offset = 0, 0
    for width, value in zip(widths, values):
        word |= (int(value) & ((1 << width) - 1)) << offset
        offset += width
    return word


async def stream_put(ctx, port, payload) -> None:
    """Offer ``payload`` on stream ``port`` until it is taken (returns after the transfer edge)."""
    ctx.set(port.valid, 1)
    ctx.set(port.payload, payload)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port):
    """Take one payload from stream ``port`` (returns the value sampled at the transfer edge)."""
    ctx.set(port.ready, 1)
    payload, = await ctx.tick().sample(port.payload).until(port.valid)
    ctx.set(port.ready, 0)
    return payload


async def host_write(ctx, dut: PostEngine, writes) -> int:
    """Write ``(sel, addr, data)`` tuples through ``host_wr``; returns the cycles taken."""
    p = dut.params
    widths = (3, p.addr_bits, p.data_bits)
    payload = dut.host_wr.payload.as_value()
    ticks = 0
    ctx.set(dut.host_wr.valid, 1)
    for write in writes:
        ctx.set(payload, pack_fields(widths, write))
        while True:
            ready = ctx.get(dut.host_wr.ready)
            await ctx.tick()
            ticks += 1
            if ready:
                break
    ctx.set(dut.host_wr.valid, 0)
    return ticks


async def host_read(ctx, dut: PostEngine, reads) -> tuple[list[int], int]:
    """Issue ``(sel, addr)`` reads through ``rd_req``, collect ``rd_resp``; returns (values, cycles)."""
    p = dut.params
    widths = (3, p.addr_bits)
    payload = dut.rd_req.payload.as_value()
    values, issued, ticks = [], 0, 0
    ctx.set(dut.rd_resp.ready, 1)
    while len(values) < len(reads):
        accepted = False
        if issued < len(reads):
            ctx.set(payload, pack_fields(widths, reads[issued]))
            ctx.set(dut.rd_req.valid, 1)
            accepted = bool(ctx.get(dut.rd_req.ready))
        else:
            ctx.set(dut.rd_req.valid, 0)
        await ctx.tick()
        ticks += 1
        issued += accepted
        if ctx.get(dut.rd_resp.valid):
            values.append(ctx.get(dut.rd_resp.payload))
        if ticks > 4 * len(reads) + 16:
            raise RuntimeError("engine stopped answering reads")
    ctx.set(dut.rd_req.valid, 0)
    ctx.set(dut.rd_resp.ready, 0)
    return values, ticks


async def run_engine(ctx, dut: PostEngine, max_cycles: int) -> tuple[int, int]:
    """Pulse ``start``, wait for ``done``; returns (``cycles`` output, cycles waited)."""
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    if ctx.get(dut.done):
        raise RuntimeError("protocol violation: done still high the cycle after start")
    waited = 1
    while not ctx.get(dut.done):
        await ctx.tick()
        waited += 1
        if waited > max_cycles:
            raise RuntimeError(f"engine did not finish within {max_cycles} cycles")
    return ctx.get(dut.cycles), waited


def run_amaranth(program: Program, samples: np.ndarray, waves: str | None = None, betas=None) -> dict:
    """Run every sample (``[B, fan_in]`` activation codes) of ``program`` on the engine.

    Returns ``dict(outputs=[per sample: [per layer: np.ndarray]], cycles=[per sample],
    seconds=wall time, sim_cycles=simulated clock cycles including host I/O)``. ``waves``: optional
    VCD file path. ``betas``: per-sample fixed-point ASQ factors of the input (when
    ``program.needs_beta``).
    """
    from hw.program import predicted_cycles

    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be a [batch, features] array, got shape {samples.shape}")
    if betas is not None and len(betas) != len(samples):
        raise ValueError(f"got {len(betas)} betas for {len(samples)} samples")
    input_writes = [program.input_writes(s, None if betas is None else int(betas[i]))   # checks every sample first
                    for i, s in enumerate(samples)]
    dut = PostEngine(program.params)
    reads = program.output_reads()
    passes = [ps.writes for ps in program.passes] or [[]]
    max_cycles = 4 * predicted_cycles(program.params, program) + 1000
    result = {"outputs": [], "cycles": [], "sim_cycles": 0}

    async def tb(ctx):
        ticks = await host_write(ctx, dut, program.config_writes)
        for writes in input_writes:
            ticks += await host_write(ctx, dut, writes)
            cycles = 0
            for pass_writes in passes:             # a program in passes: weights reloaded between runs
                ticks += await host_write(ctx, dut, pass_writes)
                run_cycles, waited = await run_engine(ctx, dut, max_cycles)
                cycles += run_cycles
                ticks += waited
            values, read_ticks = await host_read(ctx, dut, reads)
            ticks += read_ticks
            result["cycles"].append(int(cycles))
            result["outputs"].append(program.decode_outputs(values))
        result["sim_cycles"] = ticks

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(tb)
    started = time.perf_counter()
    if waves:
        with sim.write_vcd(waves):
            sim.run()
    else:
        sim.run()
    result["seconds"] = time.perf_counter() - started
    return result
