"""cocotb testbench: a job file replayed on the AXI-wrapped engine through cocotbext-axi.

The job (JSON, path in ``POST_ACCEL_JOB``, made by :mod:`sim.axi_rtl`) holds the engine
parameters, the program's configuration writes, every sample's input writes, the passes and the
output reads. :class:`sim.axi_host.AxiEngineHost` loads memories through the AXI4-Stream slave,
writes the control registers and starts runs through AXI4-Lite, waits for ``irq`` and reads the
outputs back through the AXI4-Stream master, with random idle cycles and backpressure on every
channel (``backpressure`` in the job). For the first sample it also reads the final layer's
words through the AXI4-Lite memory window. Raw values go to ``POST_ACCEL_RESULT``; the comparison
with the golden model happens outside.
"""

import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time

from hw.program import EngineParams
from sim.axi_host import AxiEngineHost


@cocotb.test()
async def run_job(dut):
    """Configure through AXI, run every sample, record raw outputs, cycles and the window reads."""
    with open(os.environ["POST_ACCEL_JOB"]) as f:
        job = json.load(f)
    params = EngineParams(**job["params"])
    if job["cocotb_clock"]:
        Clock(dut.aclk, 10, unit="ns").start()
    host = AxiEngineHost(dut, params)
    host.backpressure(float(job["backpressure"]), int(job["seed"]))
    await host.reset()

    wall = time.perf_counter()
    t0 = get_sim_time("ns")
    await host.write(job["config_writes"])
    results = []
    for i, sample in enumerate(job["samples"]):
        await host.write(sample["input_writes"])
        cycles = 0
        for pass_writes in job["passes"]:
            await host.write(pass_writes)
            cycles += await host.run(timeout_cycles=int(job["max_cycles"]))
        reads = await host.read(job["output_reads"])
        entry = {"cycles": cycles, "reads": reads}
        if i == 0:
            entry["window"] = [[s, a, await host.read_word_lite(s, a)] for s, a in job["window_reads"]]
        results.append(entry)
    wall = time.perf_counter() - wall
    sim_cycles = int(round((get_sim_time("ns") - t0) / 10))
    with open(os.environ["POST_ACCEL_RESULT"], "w") as f:
        json.dump({"samples": results, "seconds": wall, "sim_cycles": sim_cycles,
                   "stream_words": host.stream_words, "lite_accesses": host.lite_accesses}, f)
