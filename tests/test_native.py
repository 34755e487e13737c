"""The native C++ driver of the Verilated engine (sim/native), its build cache and its run folders.

The trained digits CNN runs through the driver and every output of every layer must equal the
integer executor's, the engine's cycle count ``predicted_cycles`` and the cocotb path's (Icarus, the
same host protocol in Python). The driver build is shared with the other tests and the CLI through
the hash cache (the user's cache directory). Loading the weights directly must give the same
results as writing them through the host port, minus exactly one host cycle per weight word. A
corrupted job file must give a one-line error; run folders must disappear after a success, an
exception and a SIGTERM; builds and run folders must go where ``XDG_CACHE_HOME``/``--build-dir`` say.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.compile import compile_graph, expected_outputs
from golden.data import load_digits_split
from golden.intdag import run_graph
from hw.build import engine_ports
from hw.program import EngineParams, Sel, predicted_cycles
from sim.compare import compare_outputs
from sim.native import build_native, run_job, run_native, run_native_chunks, write_job
from sim.rtl import engine_verilog_cached, run_rtl
from sim.toolchain import SimulationError, cached_build, default_cache_dir, run_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cnn(trained_cnn):
    """(program, Verilog, input codes, golden run, expected per-layer outputs) of 8 test samples."""
    program = compile_graph(trained_cnn)
    _, _, x_test, _ = load_digits_split()
    golden = run_graph(trained_cnn, x_test[:8])
    codes = golden.codes[0].reshape(8, -1)
    return program, engine_verilog_cached(program.params), codes, golden, expected_outputs(trained_cnn, program, golden)


@pytest.fixture(scope="session")
def native_exe(cnn):
    """The driver executable for the CNN's engine (built once into the user cache, shared by hash)."""
    program, verilog, *_ = cnn
    return build_native(verilog, engine_ports(program.params))[0]


def _my_run_folders(cache: Path) -> list:
    return sorted((cache / "runs").glob(f"run-{os.getpid()}-*")) if (cache / "runs").exists() else []


def test_native_driver_equals_golden_and_cocotb(trained_cnn, cnn, native_exe):
    program, verilog, codes, golden, expected = cnn
    names = [st.name for st in trained_cnn.stages]
    run = run_rtl(program, codes, backend="verilator", verilog=verilog)           # the default: native
    assert run.driver == "native"
    cmp = compare_outputs(expected, run.outputs, names)
    assert cmp.ok, cmp.summary()
    assert cmp.values == len(codes) * sum(int(np.prod(layer.out_chw)) for layer in program.layers)
    assert run.cycles == [predicted_cycles(program.params, program)] * len(codes)
    assert run.sim_cycles > sum(run.cycles) and run.cycles_per_second > 0
    pred = np.array([int(np.argmax(o[-1])) for o in run.outputs])
    assert (pred == golden.predictions[:len(codes)]).all()
    # the cocotb testbench (Icarus) on the first sample: same raw outputs, same cycles
    ref = run_rtl(program, codes[:1], backend="icarus", verilog=verilog)
    assert ref.driver == "cocotb" and ref.cycles == run.cycles[:1]
    for a, b in zip(ref.outputs[0], run.outputs[0]):
        assert np.array_equal(a, b)


def test_direct_weight_loads_in_passes(trained_cnn, cnn):
    """The CNN on an engine whose weight memory holds a quarter of its weights: a program in passes
    whose weights are reloaded for every sample. Stored straight into the memory they give the same
    outputs (the golden model's) and engine cycles as through the host port, and exactly one
    simulated cycle less per weight word."""
    _, _, codes, golden, expected = cnn
    params = dataclasses.replace(compile_graph(trained_cnn).params, weight_words=512, max_layers=8)
    program = compile_graph(trained_cnn, params)
    assert len(program.passes) > 1
    verilog = engine_verilog_cached(params)
    direct = run_native(program, codes[:2], verilog=verilog)
    port = run_native(program, codes[:2], verilog=verilog, direct_weights=False)
    weight_words = sum(1 for sel, _, _ in program.config_writes if sel == Sel.WEIGHT) + \
        2 * sum(1 for ps in program.passes for sel, _, _ in ps.writes if sel == Sel.WEIGHT)
    assert weight_words > 2 * 1000
    assert direct.cycles == port.cycles == [predicted_cycles(params, program)] * 2
    assert port.sim_cycles - direct.sim_cycles == weight_words
    cmp = compare_outputs([e[:2] for e in expected], direct.outputs, [st.name for st in trained_cnn.stages])
    assert cmp.ok and cmp.values > 0, cmp.summary()
    for a, b in zip(direct.outputs, port.outputs):
        assert all((x is None and y is None) or np.array_equal(x, y) for x, y in zip(a, b))


def test_corrupted_job_file_gives_a_clear_error(cnn, native_exe, tmp_path):
    program, _, codes, *_ = cnn
    job = tmp_path / "job.bin"
    write_job(job, program, codes[:1])
    good = np.fromfile(job, dtype="<u8")
    assert run_job(native_exe, job, tmp_path).cycles.shape == (1, 1)         # the intact job runs

    def broken(data: bytes, *expect):
        job.write_bytes(data)
        with pytest.raises(SimulationError) as err:
            run_job(native_exe, job, tmp_path)
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and str(job) in msg, msg
        for word in expect:
            assert word in msg, msg

    def edited(index, value):
        words = good.copy()
        words[index] = np.uint64(value)
        return words.astype("<u8").tobytes()

    n_reads_at = len(good) - 2 - 2 * len(program.output_reads())
    assert good[n_reads_at] == len(program.output_reads())
    broken(good[:-5].astype("<u8").tobytes(), "truncated")
    broken(edited(0, int(good[0]) ^ 1), "bad magic")
    broken(edited(n_reads_at, int(good[n_reads_at]) + 1), "corrupt or truncated", "reads")
    broken(edited(n_reads_at, int(good[n_reads_at]) - 1), "corrupt", "end marker")
    broken(edited(8, (int(good[8]) & ~0xff) | 9), "sel 9")
    broken(b"\x00" * 13, "whole number of 64-bit words")


def test_run_folders_removed_after_success_and_failure(cnn, native_exe):
    program, verilog, codes, *_ = cnn
    cache = default_cache_dir()
    run_native(program, codes[:1], verilog=verilog)
    assert _my_run_folders(cache) == []

    seen = []

    def interrupt(n):                                   # Ctrl-C while a second driver still runs
        seen.extend(_my_run_folders(cache))
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_native_chunks(program, [codes[:1], codes[:8]], jobs=2, verilog=verilog, on_done=interrupt)
    assert len(seen) == 1 and not seen[0].exists()

    with pytest.raises(SimulationError, match="did not raise done"):      # the driver fails
        with run_folder(cache) as folder:
            write_job(folder / "job.bin", program, codes[:1], max_cycles=100)
            run_job(native_exe, folder / "job.bin", folder)
    assert not folder.exists()


def test_run_folder_removed_on_sigterm(trained_cnn_path, native_exe, tmp_path):
    """A simulate-like process killed by SIGTERM mid-run leaves no run folder behind."""
    script = tmp_path / "long_run.py"
    script.write_text(
        "import numpy as np\n"
        "from flows.compile import compile_graph\nfrom golden.graphfile import load_graph\n"
        "from sim.native import run_native\nfrom sim.rtl import engine_verilog_cached\n"
        f"program = compile_graph(load_graph({str(trained_cnn_path)!r}))\n"
        "codes = np.zeros((2000, program.input_size), dtype=np.int64)\n"
        "run_native(program, codes, verilog=engine_verilog_cached(program.params))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    runs = default_cache_dir() / "runs"
    deadline, folders = time.monotonic() + 300, []
    while not folders and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        folders = list(runs.glob(f"run-{proc.pid}-*")) if runs.exists() else []
    assert folders, f"no run folder appeared: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
    time.sleep(1.0)                                   # the driver is running now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert not folders[0].exists()


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "post-accel" / "sim"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")             # ignored, as the XDG spec says
    assert default_cache_dir() == Path.home() / ".cache" / "post-accel" / "sim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "post-accel" / "sim"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "made").write_text("x")
    folder, seconds = cached_build(None, "thing-0123", build)
    assert folder == tmp_path / "xdg" / "post-accel" / "sim" / "thing-0123" and (folder / "made").exists()
    assert cached_build(None, "thing-0123", build) == (folder, 0.0) and len(calls) == 1

    def failing(folder):
        raise SimulationError("no")
    with pytest.raises(SimulationError):
        cached_build(None, "other-4567", failing)
    assert cached_build(None, "other-4567", build)[0].joinpath("made").exists()     # built after the failure

    params = EngineParams(rows=2, cols=2, act_words=16, weight_words=16)
    text = engine_verilog_cached(params)
    files = list((tmp_path / "xdg" / "post-accel" / "sim" / "verilog").glob("*.v"))
    assert len(files) == 1 and files[0].read_text() == text and "module post_engine(" in text
    files[0].write_text(text + "// seen\n")                       # the second call reads the file
    assert engine_verilog_cached(params) == text + "// seen\n"


@pytest.mark.parametrize("how", ["build-dir", "xdg"])
def test_simulate_builds_outside_the_source_tree(how, trained_cnn_path, native_exe, tmp_path):
    """`simulate` puts Verilog, builds and run folders in --build-dir or $XDG_CACHE_HOME/post-accel/sim
    (the driver build seeded by a link to the shared one), removes its run folders, and writes
    nothing into the source tree."""
    cache = tmp_path / "cache" if how == "build-dir" else tmp_path / "xdg" / "post-accel" / "sim"
    cache.mkdir(parents=True)
    shared = native_exe.parent.parent
    (cache / shared.name).symlink_to(shared)
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    extra = ["--build-dir", str(cache)] if how == "build-dir" else []
    before = set(REPO.glob("build/*"))
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "simulate", str(trained_cnn_path), "--backend",
                           "verilator", "--samples", "4", "--json", *extra], capture_output=True, text=True,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mismatches"] == 0 and result["build_seconds"] == 0          # the seeded build was used
    assert len(list((cache / "verilog").glob("*.v"))) == 1
    assert (cache / "runs").is_dir() and list((cache / "runs").iterdir()) == []
    if how == "build-dir":
        assert not (tmp_path / "xdg" / "post-accel").exists()
    assert set(REPO.glob("build/*")) == before and not (REPO / "build" / "sim").exists()


def test_unwritable_build_dir_is_a_clean_error(trained_cnn_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "simulate", str(trained_cnn_path), "--samples", "1",
                           "--build-dir", str(blocker / "sim")], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert str(blocker / "sim") in lines[0] and "--build-dir" in lines[0]
