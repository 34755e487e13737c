"""Run a program on the Verilated ``post_engine`` at native speed: a C++ driver, no cocotb in the loop.

Python prepares a *host job* once (:func:`write_job`: the configuration writes, every sample's input
writes, each pass's writes, the output reads, in the binary format documented at the top of
``driver.cpp``); the driver (``driver.cpp``, compiled by Verilator together with the engine's Verilog
into one executable, :func:`build_native`) replays it cycle by cycle on the host ports with the
protocol of :mod:`sim.cocotb_engine_tb` and writes the raw results (``cycles.npy``, ``reads.npy``,
``stats.json``); Python decodes them (:func:`run_job`, :func:`run_native`).

Weight words are stored into the weight memory directly (Verilator's root access to the memory
array, made public by a ``public_flat_rw`` configuration) instead of through the host port, so a
program in passes does not spend a host-port cycle per weight word for every sample; the engine's
own ``cycles`` count (``start`` to ``done``) does not include host traffic and stays
:func:`hw.program.predicted_cycles`. ``direct_weights=False`` writes them through the port as the
cocotb testbench does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.build import engine_ports, engine_verilog
from hw.program import Program, Sel, predicted_cycles
from sim.toolchain import (RtlRun, SimulationError, cached_build, check_backend, run_folder, simulator_env,
                           verilator_root)

__all__ = ["DRIVER_SOURCE", "NATIVE_ARGS", "JobResult", "native_wrapper", "build_native", "write_job", "run_job", "run_native",
           "run_native_chunks"]

DRIVER_SOURCE = Path(__file__).resolve().with_name("driver.cpp")
EXE_NAME = "post_engine_driver"
#: Verilator flags of the native build: -O2 model code (the generated Makefile's default is -Os), fast
#: X modes (Amaranth's Verilog assigns no X; every register has a reset value), no --timing (the
#: driver toggles the clock).
NATIVE_ARGS = ["-O3", "-CFLAGS", "-O2", "--x-assign", "fast", "--x-initial", "fast",
               "-Wno-fatal", "-Wno-WIDTHTRUNC", "-Wno-WIDTHEXPAND"]
#: The memories the driver writes directly (kept as named, writable arrays by Verilator).
PUBLIC_VLT = '`verilator_config\npublic_flat_rw -module "post_engine" -var "weight"\n'
MAGIC = int.from_bytes(b"PAJOB001", "little")
END = int.from_bytes(b"PAJOBEND", "little")
FLAG_DIRECT = 1


@dataclass
class JobResult:
    """Raw results of one driver run: ``cycles[s, p]`` the engine's ``cycles`` output after pass ``p``
    of sample ``s``; ``reads[s]`` the read values (Python ints, in job order); ``sim_cycles`` the
    clock cycles driven after reset (host I/O included) in ``seconds`` of wall time."""

    cycles: np.ndarray
    reads: list
    sim_cycles: int
    seconds: float


def _limbs(data_bits: int) -> int:
    return -(-data_bits // 64)


def native_wrapper(ports: list[dict]) -> str:
    """Verilog of ``native_top``, the top module of the native build: the engine (``dut``) with the
    same ports, its inputs latched on the falling edge (``rst`` on the rising edge, high from time 0).

    The driver sets the inputs before a falling edge, as the cocotb testbench does after one, so the
    engine sees the same values at the same rising edges. Latching them costs no cycle and keeps
    Verilator from re-evaluating every input's combinational cone (``rst`` reaches every register's
    next state) at each of the two ``eval`` calls of a clock cycle (measured on the demo CNN, 180 samples:
    4.1-4.7 s of CPU instead of 7.9-10.1 s for the same 8.78 M cycles)."""
    lines, conns, latched = [], [], []
    for port in ports:
        name, width = port["name"], int(port["width"])
        rng = f"[{width - 1}:0] " if width > 1 else ""
        lines.append(f"  {port['direction']} {rng}{name};")
        if name == "clk" or port["direction"] == "output":
            conns.append(f".{name}({name})")
            continue
        lines.append(f"  reg {rng}{name}_q = {width}'d{1 if name == 'rst' else 0};")
        conns.append(f".{name}({name}_q)")
        if name != "rst":
            latched.append(f"    {name}_q <= {name};")
    names = ", ".join(port["name"] for port in ports)
    return "\n".join([f"module native_top({names});", *lines,
                      "  always @(posedge clk) rst_q <= rst;",
                      "  always @(negedge clk) begin", *latched, "  end",
                      "  post_engine dut (" + ", ".join(conns) + ");", "endmodule"]) + "\n"


def build_native(verilog: str, ports: list[dict], cache_dir: Path | None = None) -> tuple[Path, float]:
    """The driver executable for the engine ``verilog`` with ``ports`` (:func:`hw.build.engine_ports`),
    built once per Verilog text and driver source (cached); returns ``(executable, build seconds)``
    (0 when cached)."""
    check_backend("verilator")
    driver = DRIVER_SOURCE.read_text()
    wrapper = native_wrapper(ports)
    key = hashlib.sha256("\0".join(["native", verilog, wrapper, driver, PUBLIC_VLT, " ".join(NATIVE_ARGS)]).encode()
                         ).hexdigest()[:16]

    def build(folder: Path) -> None:
        (folder / "post_engine.v").write_text(verilog)
        (folder / "native_top.v").write_text(wrapper)
        (folder / "public.vlt").write_text(PUBLIC_VLT)
        (folder / "driver.cpp").write_text(driver)
        cmd = [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build", "--top-module", "native_top",
               "-Mdir", "obj_dir", "-o", EXE_NAME, *NATIVE_ARGS, "public.vlt", "post_engine.v", "native_top.v",
               "driver.cpp"]
        proc = subprocess.run(cmd, cwd=folder, env=simulator_env(), capture_output=True, text=True)
        (folder / "build.log").write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise SimulationError(f"Verilator build of the native driver failed (exit {proc.returncode}); "
                                  f"log {folder / 'build.log'}, tail:\n{tail}")

    folder, seconds = cached_build(cache_dir, f"verilator-native-{key}", build)
    return folder / "obj_dir" / EXE_NAME, seconds


def _records(writes, limbs: int, data_bits: int, direct_sel: int | None = None) -> np.ndarray:
    """``[n, 2 + limbs]`` uint64 records of ``(sel, addr, data)`` writes (see driver.cpp)."""
    mask, m64 = (1 << data_bits) - 1, (1 << 64) - 1
    rows = []
    for sel, addr, value in writes:
        head = int(sel) | (FLAG_DIRECT << 8 if direct_sel is not None and int(sel) == direct_sel else 0)
        value = int(value) & mask
        rows.append([head, int(addr)] + [(value >> (64 * k)) & m64 for k in range(limbs)])
    return np.array(rows, dtype=np.uint64).reshape(len(rows), 2 + limbs)


def write_job(path: Path, program: Program, samples, betas=None, direct_weights: bool = True,
              max_cycles: int | None = None) -> int:
    """Write the host job of ``program`` on ``samples`` (``[B, input_size]`` codes; ``betas`` per
    sample when the input is ASQ) to ``path``; returns the number of samples. ``max_cycles``: how
    long the driver waits for ``done`` (default 4x the predicted cycles + 1000)."""
    p = program.params
    limbs = _limbs(p.data_bits)
    samples = np.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must be a [batch, features] array, got shape {samples.shape}")
    if betas is not None and len(betas) != len(samples):
        raise ValueError(f"got {len(betas)} betas for {len(samples)} samples")
    direct = int(Sel.WEIGHT) if direct_weights else None
    if max_cycles is None:
        max_cycles = 4 * predicted_cycles(p, program) + 1000
    parts = [np.array([MAGIC, limbs, 3, p.addr_bits, p.data_bits, p.weight_word_bits, max_cycles], dtype=np.uint64)]

    def section(writes, sel=None):
        rec = _records(writes, limbs, p.data_bits, sel)
        parts.append(np.array([len(rec)], dtype=np.uint64))
        parts.append(rec.ravel())

    section(program.config_writes, direct)
    passes = [ps.writes for ps in program.passes] or [[]]
    parts.append(np.array([len(passes)], dtype=np.uint64))
    for writes in passes:
        section(writes, direct)
    parts.append(np.array([len(samples)], dtype=np.uint64))
    for i, x in enumerate(samples):
        section(program.input_writes(x, None if betas is None else int(betas[i])))
    reads = np.array(program.output_reads(), dtype=np.uint64).reshape(-1, 2)
    parts += [np.array([len(reads)], dtype=np.uint64), reads.ravel(), np.array([END], dtype=np.uint64)]
    np.concatenate(parts).astype("<u8").tofile(path)
    return len(samples)


def _collect(out_dir: Path, returncode: int, stderr: str) -> JobResult:
    if returncode != 0:
        msg = stderr.strip().splitlines()[-1] if stderr.strip() else f"native driver exit status {returncode}"
        raise SimulationError(msg)
    cycles = np.load(out_dir / "cycles.npy")
    raw = np.load(out_dir / "reads.npy")
    stats = json.loads((out_dir / "stats.json").read_text())
    if raw.shape[2] == 1:
        reads = [row[:, 0].tolist() for row in raw]
    else:
        vals = raw[..., 0].astype(object)
        for k in range(1, raw.shape[2]):
            vals = vals | (raw[..., k].astype(object) << (64 * k))
        reads = [list(row) for row in vals]
    return JobResult(cycles=cycles, reads=reads, sim_cycles=int(stats["sim_cycles"]), seconds=float(stats["seconds"]))


def run_job(exe: Path, job: Path, out_dir: Path, timeout: float | None = None) -> JobResult:
    """Run the driver ``exe`` on the job file ``job``, its results written to ``out_dir``; raises
    :class:`SimulationError` with the driver's one-line message when it fails."""
    try:
        proc = subprocess.run([str(exe), str(job), str(out_dir)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SimulationError(f"native driver did not finish within {timeout} s ({job})") from None
    return _collect(out_dir, proc.returncode, proc.stderr)


def run_native_chunks(program: Program, chunks: list, betas: list | None = None, jobs: int = 1,
                      cache_dir: Path | None = None, verilog: str | None = None, direct_weights: bool = True,
                      on_done=None) -> list[RtlRun]:
    """Every chunk of samples (``chunks[i]``: ``[B_i, input_size]`` codes, ``betas[i]`` their betas or
    None) through its own driver process, ``jobs`` processes at a time (no Python in between: the
    jobs are written here, the drivers run as plain subprocesses). ``on_done(n)`` is called with the
    sample count of each chunk as it finishes. One :class:`RtlRun` per chunk, in order."""
    verilog = engine_verilog(program.params) if verilog is None else verilog
    exe, build_seconds = build_native(verilog, engine_ports(program.params), cache_dir)
    betas = betas if betas is not None else [None] * len(chunks)
    if len(betas) != len(chunks):
        raise ValueError(f"got {len(betas)} beta lists for {len(chunks)} chunks")
    results: list = [None] * len(chunks)
    with run_folder(cache_dir) as folder:
        pending, active = list(range(len(chunks))), {}
        try:
            while pending or active:
                while pending and len(active) < max(1, jobs):
                    i = pending.pop(0)
                    out = folder / f"chunk{i}"
                    out.mkdir()
                    write_job(out / "job.bin", program, chunks[i], betas[i], direct_weights)
                    err = open(out / "stderr.txt", "w")
                    active[i] = (subprocess.Popen([str(exe), str(out / "job.bin"), str(out)], stdout=subprocess.DEVNULL,
                                                  stderr=err), err, out)
                finished = [i for i, (proc, _, _) in active.items() if proc.poll() is not None]
                if not finished:
                    time.sleep(0.02)
                for i in finished:
                    proc, err, out = active.pop(i)
                    err.close()
                    res = _collect(out, proc.returncode, (out / "stderr.txt").read_text())
                    results[i] = RtlRun(backend="verilator", outputs=[program.decode_outputs(r) for r in res.reads],
                                        cycles=[int(c) for c in res.cycles.sum(axis=1)], seconds=res.seconds,
                                        build_seconds=build_seconds if i == 0 else 0.0, sim_cycles=res.sim_cycles,
                                        driver="native")
                    if on_done is not None:
                        on_done(len(chunks[i]))
        finally:
            for proc, err, _ in active.values():        # an error or Ctrl-C: stop the other drivers
                proc.kill()
                proc.wait()
                err.close()
    return results


def run_native(program: Program, samples, betas=None, cache_dir: Path | None = None, verilog: str | None = None,
               direct_weights: bool = True) -> RtlRun:
    """Every sample of ``program`` through the Verilated engine driven by the native driver; the same
    result as :func:`sim.rtl.run_rtl` (decoded per-layer outputs, engine cycles per sample)."""
    return run_native_chunks(program, [samples], None if betas is None else [betas], 1, cache_dir, verilog,
                             direct_weights)[0]
