"""Run a program on the AXI-wrapped Verilog (``post_engine_axi``) with cocotb and cocotbext-axi.

The Verilog comes from :func:`hw.axi.axi_verilog`; a small ``tb_top`` instantiates it (``aclk`` at
100 MHz: in HDL on Icarus, a cocotb ``Clock`` on Verilator), and :mod:`sim.cocotb_axi_tb` drives it through
:class:`sim.axi_host.AxiEngineHost`. Simulator builds are cached like :mod:`sim.rtl`'s (by a hash of
the Verilog, the wrapper and the flags), so tests and runs share one Verilator build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.axi import AXI_TOP, axi_ports, axi_verilog
from hw.program import Program, Sel, predicted_cycles
from sim.rtl import REPO_ROOT, VERILATOR_ARGS, SimulationError, check_backend, simulator_env, testbench_wrapper
from sim.toolchain import cached_build, run_folder

__all__ = ["AxiRtlRun", "run_axi_rtl", "axi_testbench_wrapper", "ensure_axi_built"]


@dataclass
class AxiRtlRun:
    """Decoded results of a run: ``outputs[s][l]`` is layer ``l``'s output for sample ``s``; ``window``
    holds ``(sel, addr, value)`` words of the first sample read through the AXI4-Lite window and
    ``window_stream`` the same words as the result stream gave them."""

    backend: str
    outputs: list
    cycles: list
    seconds: float
    build_seconds: float
    sim_cycles: int
    window: list
    window_stream: list
    stream_words: int
    lite_accesses: int


def axi_testbench_wrapper(ports: list[dict], hdl_clock: bool = True) -> str:
    """Verilog of ``tb_top`` (:func:`sim.rtl.testbench_wrapper`): ``aclk`` (100 MHz in HDL with
    ``hdl_clock``; else the testbench starts a cocotb ``Clock``), ``aresetn`` low at time 0, regs for the
    other inputs."""
    return testbench_wrapper(ports, AXI_TOP, clock="aclk", hdl_clock=hdl_clock, reset_high=())


def _hdl_clock(backend: str) -> bool:
    # Verilator: cocotbext-axi samples handshakes at the rising edge of a clock cocotb drives (with
    # the clock in HDL it saw no run end on Verilator 5.048); Icarus runs the clock in HDL
    return backend != "verilator"


def _build(backend: str, verilog: str, ports: list[dict], cache_dir: Path | None) -> tuple[Path, float]:
    """The wrapper's simulator, built once per (backend, Verilog, wrapper, flags) in the shared cache
    (:func:`sim.toolchain.cached_build`: user cache dir or ``cache_dir``, locked, marker on success)."""
    wrapper = axi_testbench_wrapper(ports, _hdl_clock(backend))
    key = hashlib.sha256((backend + "\0" + verilog + "\0" + wrapper + "\0" + " ".join(VERILATOR_ARGS)).encode()
                         ).hexdigest()[:16]

    def build(build_dir: Path) -> None:
        from cocotb_tools.runner import get_runner

        (build_dir / f"{AXI_TOP}.v").write_text(verilog)
        (build_dir / "tb_top.v").write_text(wrapper)
        saved = dict(os.environ)
        os.environ.update(simulator_env())
        try:
            get_runner(backend).build(sources=[build_dir / f"{AXI_TOP}.v", build_dir / "tb_top.v"],
                                      hdl_toplevel="tb_top", build_dir=build_dir, always=True,
                                      timescale=("1ns", "1ps"),
                                      build_args=VERILATOR_ARGS if backend == "verilator" else [],
                                      log_file=build_dir / "build.log")
        except (SystemExit, subprocess.CalledProcessError, Exception) as exc:  # noqa: BLE001 - reported below
            log = build_dir / "build.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SimulationError(f"{backend} build of the AXI wrapper failed ({exc}); log tail:\n{tail}") from None
        finally:
            os.environ.clear()
            os.environ.update(saved)

    return cached_build(cache_dir, f"axi-{backend}-{key}", build)


def ensure_axi_built(params, backend: str = "verilator", cache_dir: Path | None = None) -> float:
    """Build (or find cached) the simulator of the wrapper for ``params``; returns the build seconds."""
    check_backend(backend)
    return _build(backend, axi_verilog(params), axi_ports(params), cache_dir)[1]


def run_axi_rtl(program: Program, samples: np.ndarray, backend: str = "verilator", betas=None,
                backpressure: float = 0.3, seed: int = 0, window_reads: int = 4,
                cache_dir: Path | None = None) -> AxiRtlRun:
    """Run every sample (``[B, features]`` input codes) of ``program`` on the AXI-wrapped Verilog.

    ``backpressure``: probability of an idle/stall cycle on every AXI channel (cocotbext-axi pause
    generators, seeded by ``seed``). ``window_reads``: how many of the first sample's final-layer
    words are also read through the AXI4-Lite memory window.
    """
    check_backend(backend)
    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be a [batch, features] array, got shape {samples.shape}")
    if betas is not None and len(betas) != len(samples):
        raise ValueError(f"got {len(betas)} betas for {len(samples)} samples")
    if not 0 <= backpressure < 1:
        raise ValueError(f"backpressure must be a probability in [0, 1), got {backpressure}")
    params = program.params
    build_dir, build_seconds = _build(backend, axi_verilog(params), axi_ports(params), cache_dir)
    reads = program.output_reads()
    window = [r for r in reads if r[0] == Sel.RESULT][:window_reads]
    job = {
        "params": dataclasses.asdict(params),
        "backpressure": backpressure, "seed": seed, "cocotb_clock": not _hdl_clock(backend),
        "max_cycles": 4 * predicted_cycles(params, program) + 1000,
        "config_writes": [list(map(int, w)) for w in program.config_writes],
        "samples": [{"input_writes": [list(map(int, w)) for w in
                                      program.input_writes(s, None if betas is None else int(betas[i]))]}
                    for i, s in enumerate(samples)],
        "output_reads": [list(map(int, r)) for r in reads],
        "passes": [[list(map(int, w)) for w in ps.writes] for ps in program.passes] or [[]],
        "window_reads": [list(map(int, r)) for r in window],
    }
    with run_folder(cache_dir) as run_dir:
        job_path, result_path = run_dir / "job.json", run_dir / "result.json"
        job_path.write_text(json.dumps(job))
        from cocotb_tools.runner import get_runner

        env = simulator_env()
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            get_runner(backend).test(test_module="sim.cocotb_axi_tb", hdl_toplevel="tb_top", hdl_toplevel_lang="verilog",
                                     build_dir=build_dir, test_dir=run_dir, results_xml=str(run_dir / "results.xml"),
                                     timescale=("1ns", "1ps"),
                                     extra_env={"POST_ACCEL_JOB": str(job_path), "POST_ACCEL_RESULT": str(result_path),
                                                "PYTHONPATH": pythonpath, "COCOTB_REDUCED_LOG_FMT": "1"},
                                     log_file=run_dir / "sim.log")
        except (SystemExit, subprocess.CalledProcessError) as exc:
            log = (run_dir / "sim.log").read_text(errors="replace")[-3000:] if (run_dir / "sim.log").exists() else ""
            raise SimulationError(f"{backend} simulation failed to run ({exc}); log tail:\n{log}") from None
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if not result_path.exists():
            log = (run_dir / "sim.log").read_text(errors="replace")[-3000:] if (run_dir / "sim.log").exists() else ""
            raise SimulationError(f"{backend} AXI testbench failed; log tail:\n{log}")
        result = json.loads(result_path.read_text())
    first = result["samples"][0]
    by_read = dict(zip(map(tuple, job["output_reads"]), first["reads"]))
    return AxiRtlRun(backend=backend, outputs=[program.decode_outputs(s["reads"]) for s in result["samples"]],
                     cycles=[int(s["cycles"]) for s in result["samples"]], seconds=float(result["seconds"]),
                     build_seconds=build_seconds, sim_cycles=int(result["sim_cycles"]),
                     window=[tuple(w) for w in first["window"]],
                     window_stream=[(s, a, by_read[(s, a)]) for s, a, _ in first["window"]],
                     stream_words=int(result["stream_words"]), lite_accesses=int(result["lite_accesses"]))
