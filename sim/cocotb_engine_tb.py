"""cocotb testbench that replays a job file on the generated ``post_engine`` Verilog.

The testbench is deliberately dumb: it knows the host-port protocol of
``docs/engine.md`` and nothing of the arithmetic. It reads a JSON job (path in
``POST_ACCEL_JOB``) made by :mod:`sim.rtl`, writes the configuration, and for
every sample writes the inputs, pulses ``start`` (once per pass of a program run in passes, after
that pass's writes), sleeps until ``done`` rises
(no Python in the loop while the engine computes; the clock runs in HDL), reads
``cycles`` and every requested output, and writes the raw values to the JSON
file named by ``POST_ACCEL_RESULT``. Comparison with the golden model happens
outside, in :mod:`sim.rtl`.

Host I/O is driven and sampled on the falling edge, when everything has settled:
a stream transfer happens on the next rising edge iff ``valid`` and ``ready``
were both high at that falling edge (``ready`` never depends on ``valid``).
"""

import json
import os
import time

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout


def _pack(fields, values):
    word, offset = 0, 0
    for (name, width), value in zip(fields, values):
        word |= (int(value) & ((1 << width) - 1)) << offset
        offset += width
    return word


async def _host_write(dut, layout, writes):
    fields = [("sel", layout["sel_bits"]), ("addr", layout["addr_bits"]), ("data", layout["data_bits"])]
    for write in writes:
        dut.host_wr__payload.value = _pack(fields, write)
        dut.host_wr__valid.value = 1
        while True:
            accepted = int(dut.host_wr__ready.value)
            await FallingEdge(dut.clk)
            if accepted:
                break
    dut.host_wr__valid.value = 0


async def _host_read(dut, layout, reads):
    fields = [("sel", layout["sel_bits"]), ("addr", layout["addr_bits"])]
    values, issued = [], 0
    dut.rd_resp__ready.value = 1
    while len(values) < len(reads):
        if int(dut.rd_resp__valid.value):
            values.append(int(dut.rd_resp__payload.value))
        accepted = False
        if issued < len(reads):
            dut.rd_req__payload.value = _pack(fields, reads[issued])
            dut.rd_req__valid.value = 1
            accepted = bool(int(dut.rd_req__ready.value))
        else:
            dut.rd_req__valid.value = 0
        await FallingEdge(dut.clk)
        if accepted:
            issued += 1
    dut.rd_req__valid.value = 0
    return values


@cocotb.test()
async def run_job(dut):
    """Configure the engine, run every sample of the job, record raw outputs and cycles."""
    with open(os.environ["POST_ACCEL_JOB"]) as f:
        job = json.load(f)
    layout = job["layout"]
    timeout_ns = 10 * int(job["max_cycles"])

    dut.host_wr__valid.value = 0
    dut.rd_req__valid.value = 0
    dut.rd_resp__ready.value = 0
    dut.start.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)

    wall = time.perf_counter()
    t0 = get_sim_time("ns")
    await _host_write(dut, layout, job["config_writes"])
    results = []
    for sample in job["samples"]:
        await _host_write(dut, layout, sample["input_writes"])
        cycles = 0
        for pass_writes in job.get("passes", [[]]):    # more than one: weights reloaded between runs
            await _host_write(dut, layout, pass_writes)
            dut.start.value = 1
            await FallingEdge(dut.clk)
            dut.start.value = 0
            assert not int(dut.done.value), "protocol violation: done still high the cycle after start"
            await with_timeout(RisingEdge(dut.done), timeout_ns, "ns")
            await FallingEdge(dut.clk)
            cycles += int(dut.cycles.value)
        reads = await _host_read(dut, layout, job["output_reads"])
        results.append({"cycles": cycles, "reads": reads})
    wall = time.perf_counter() - wall
    sim_cycles = int(round((get_sim_time("ns") - t0) / 10))   # 10 ns clock period in tb_top

    with open(os.environ["POST_ACCEL_RESULT"], "w") as f:
        json.dump({"samples": results, "seconds": wall, "sim_cycles": sim_cycles}, f)
