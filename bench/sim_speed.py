"""Benchmark: the same trained model and engine on Verilator, Icarus and Amaranth's simulator.

Prints and writes (``bench/results/sim_speed.json``) per backend: samples, engine cycles per sample,
simulated cycles (host I/O included) per wall second, wall seconds, build seconds, and whether every
layer matched the golden model. Usage::

    .venv/bin/python bench/sim_speed.py [--model out/model.safetensors] [--rows 4 --cols 4]

Without ``--model`` it trains and exports the default digits MLP first (`post-accel train` defaults: POST
weights everywhere, LSQ activations; about a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flows.compile import compile_graph, expected_outputs  # noqa: E402
from golden.data import load_digits_split  # noqa: E402
from golden.graphfile import load_graph, save_graph  # noqa: E402
from golden.intdag import export_dag, run_graph  # noqa: E402
from sim.compare import compare_outputs  # noqa: E402

SAMPLES = {"verilator": None, "icarus": 40, "amaranth": 10}


def _default_model(path: Path) -> Path:
    from golden.train_zoo import TrainSpec, train_spec

    if not path.exists():
        spec = TrainSpec(model="mlp", weight_quant="post", act_quant="lsq", edge_weight_quant="post")
        model, metrics = train_spec(spec, progress=True, integer=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_graph(export_dag(model.eval()), path, provenance={"spec": spec.to_dict(), "metrics": metrics})
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sim_speed.json")
    args = ap.parse_args()

    model = load_graph(args.model or _default_model(REPO / "build" / "bench" / "mlp.model.safetensors"))
    program = compile_graph(model, rows=args.rows, cols=args.cols)
    _, _, x_test, _ = load_digits_split()
    first = next(k for k, st in enumerate(model.stages) if st.input_from == "input")
    full = run_graph(model, x_test)
    codes = full.codes[first].reshape(len(x_test), -1)
    names = [layer.name for layer in program.layers]
    rows = []
    for backend, n in SAMPLES.items():
        n = len(codes) if n is None else n
        golden = run_graph(model, x_test[:n])
        expected = expected_outputs(model, program, golden)
        started = time.perf_counter()
        if backend == "amaranth":
            from sim.amaranth_sim import run_amaranth
            run = run_amaranth(program, codes[:n])
            outputs, cycles = run["outputs"], run["cycles"]
            seconds = time.perf_counter() - started
            sim_cycles, build = run.get("sim_cycles", sum(cycles)), 0.0
        else:
            from sim.rtl import run_rtl
            run = run_rtl(program, codes[:n], backend=backend)
            outputs, cycles, seconds, sim_cycles, build = (run.outputs, run.cycles, run.seconds,
                                                           run.sim_cycles, run.build_seconds)
        cmp = compare_outputs(expected, outputs, names)
        row = {"backend": backend, "driver": "amaranth testbench" if backend == "amaranth" else run.driver,
               "samples": n, "engine_cycles_per_sample": cycles[0],
               "engine_cycles": sum(cycles), "simulated_cycles": sim_cycles, "seconds": round(seconds, 3),
               "cycles_per_second": round(sim_cycles / seconds), "build_seconds": round(build, 2),
               "bit_exact": cmp.ok}
        rows.append(row)
        print(json.dumps(row))
    report = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.python_version()}",
              "rows": args.rows, "cols": args.cols, "wbits": program.params.wbits, "abits": program.params.abits,
              "command": "make bench  (bench/sim_speed.py)", "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
