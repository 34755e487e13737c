"""``post-accel simulate``: the digits test set through the generated RTL, compared with the golden model
layer by layer (exit status 1 on any mismatch)."""

from __future__ import annotations

import os
import sys
import time

from flows.cliutil import (
    UserError,
    add_common_flags,
    add_engine_flags,
    emit,
    engine_params,
    load_engine_model,
    positive_int,
)
from golden.modelfile import MODEL_FORMAT_NAME

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run the digits test set through the RTL and compare with golden")
    p.add_argument("model", help="integer model written by `post-accel export`")
    p.add_argument("--backend", choices=("amaranth", "icarus", "verilator"), default="verilator")
    add_engine_flags(p, with_defaults=False)
    p.add_argument("--samples", type=positive_int, default=None, help="first N test samples (default: all)")
    p.add_argument("--chunk", type=positive_int, default=None,
                   help="samples per simulator launch (default: the samples split evenly over --jobs)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="simulator processes run in parallel (Icarus/Verilator; default: the CPU count)")
    p.add_argument("--waves", default=None, metavar="FILE",
                   help="also dump every signal of one sample (the first) to FILE (.vcd, or .fst on "
                        "Icarus/Verilator)")
    p.add_argument("--report", action="store_true", help="print the human report (default unless --json)")
    add_common_flags(p)
    p.set_defaults(func=run)


def _model_summary(model, names) -> str:
    """One line of the simulate report: the model file's format and how it maps to engine layers."""
    copies = [n for n in names if "~" in n]
    extra = f" (copies for consumers with their own quantizers: {', '.join(copies)})" if copies else ""
    return (f"{MODEL_FORMAT_NAME} integer graph, {len(model.stages)} stages -> {len(names)} engine layers{extra}, "
            f"output {model.output}")


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from flows.compile import compile_graph, expected_outputs
    from golden.data import load_digits_split
    from golden.intdag import run_graph
    from sim.compare import compare_outputs

    model = load_engine_model(args.model)
    params = engine_params(args, model)
    _, _, x_test, y_test = load_digits_split()
    n = len(y_test) if args.samples is None else args.samples
    if not 1 <= n <= len(y_test):
        raise UserError(f"--samples must be in 1..{len(y_test)} (the digits test set), got {n}")
    labels = y_test[:n]
    program = compile_graph(model, params)               # every engine layer checked before simulating
    golden = run_graph(model, x_test[:n])
    expected = expected_outputs(model, program, golden)  # the golden model's value of every engine layer
    first = next(k for k, st in enumerate(model.stages) if st.input_from == "input")
    x_codes = np.asarray(golden.codes[first]).reshape(n, -1)
    betas = golden.betas[first] if program.needs_beta else None
    names = [layer.name for layer in program.layers]
    golden_pred = golden.predictions

    if args.waves and args.backend == "amaranth" and not args.waves.endswith(".vcd"):
        raise UserError(f"--waves {args.waves}: Amaranth's simulator writes VCD only; name the file *.vcd")
    if args.waves and not args.waves.endswith((".vcd", ".fst")):
        raise UserError(f"--waves {args.waves}: name the waveform file *.vcd or *.fst")
    jobs = args.jobs or os.cpu_count() or 1
    chunk_size = args.chunk or max(1, -(-n // jobs))
    starts = list(range(0, n, chunk_size))
    chunks = [x_codes[i:i + chunk_size] for i in starts]
    chunk_betas = [None if betas is None else betas[i:i + chunk_size] for i in starts]
    if args.backend == "amaranth":
        from sim.amaranth_sim import run_amaranth
        runner = lambda chunk, b, waves=None: run_amaranth(program, chunk, betas=b, waves=waves)  # noqa: E731
        jobs = 1
    else:
        from hw.build import engine_verilog
        from sim.rtl import check_backend, ensure_built, run_rtl
        check_backend(args.backend)
        verilog = engine_verilog(params)                 # generated once, shared by every launch
        runner = lambda chunk, b, waves=None: run_rtl(program, chunk, backend=args.backend, betas=b,  # noqa: E731
                                                      waves=waves, verilog=verilog)

    outputs, cycles, seconds, sim_cycles, build_seconds = [], [], 0.0, 0, 0.0
    bar = tqdm(total=n, desc=f"simulate ({args.backend})", unit="sample", disable=args.json or args.quiet,
               file=sys.stderr)
    wall = time.perf_counter()
    if jobs > 1 and len(chunks) > 1:
        # one simulator process per chunk, `jobs` at a time (the build is made once, under a lock)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        build_seconds += ensure_built(params, args.backend, verilog)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_rtl, program, c, backend=args.backend, betas=b, verilog=verilog)
                       for c, b in zip(chunks, chunk_betas)]
            runs = []
            for fut, c in zip(futures, chunks):
                runs.append(fut.result())
                bar.update(len(c))
    else:
        runs = []
        for chunk, b in zip(chunks, chunk_betas):
            runs.append(runner(chunk, b))
            bar.update(len(chunk))
    wall = time.perf_counter() - wall
    bar.close()
    for run in runs:
        if isinstance(run, dict):                       # Amaranth backend returns a dict
            outputs += run["outputs"]
            cycles += run["cycles"]
            seconds += run.get("seconds", 0.0)
            sim_cycles += run.get("sim_cycles", sum(run["cycles"]))
        else:
            outputs += run.outputs
            cycles += run.cycles
            seconds += run.seconds
            sim_cycles += run.sim_cycles
            build_seconds += run.build_seconds

    if args.waves:                                      # one sample with every signal dumped
        runner(x_codes[:1], None if betas is None else betas[:1], waves=args.waves)
    cmp = compare_outputs(expected, outputs, names)
    rtl_pred = np.array([int(np.argmax(o[-1])) for o in outputs])
    result = {
        "backend": args.backend, "samples": n, "mismatches": cmp.mismatches,
        "prediction_mismatches": cmp.prediction_mismatches, "per_layer_mismatches": cmp.per_layer,
        "layers_not_read": cmp.not_read, "passes": len(getattr(program, "passes", None) or [None]),
        "rtl_accuracy": float((rtl_pred == labels).mean()),
        "golden_accuracy": float((golden_pred == labels).mean()), "model_format": MODEL_FORMAT_NAME,
        "layers": names, "engine_layers": len(names),
        "stages": [st.name for st in model.stages], "waves": args.waves,
        "cycles": int(sum(cycles)), "cycles_per_sample": float(np.mean(cycles)),
        "seconds": round(seconds, 3), "build_seconds": round(build_seconds, 2),
        "wall_seconds": round(wall, 2), "jobs": jobs, "launches": len(chunks),
        "simulated_cycles": sim_cycles,
        "simulated_cycles_per_second": round(sim_cycles / seconds) if seconds > 0 else None,
        "rows": params.rows, "cols": params.cols, "wbits": params.wbits, "abits": params.abits,
    }
    compared = (f"every output of every layer compared: {cmp.values} values" if not cmp.not_read else
                f"{cmp.values} values compared; not read back, their activation regions reused: "
                f"{', '.join(cmp.not_read)}")
    passes = len(getattr(program, "passes", None) or [None])
    text = (f"post-accel simulate: {n} digits test samples on {args.backend}, "
            f"{params.rows}x{params.cols} POST array W{params.wbits}A{params.abits}\n"
            f"  model                    {_model_summary(model, names)}\n"
            f"  golden integer accuracy  {result['golden_accuracy']:.4f}\n"
            f"  RTL accuracy             {result['rtl_accuracy']:.4f}\n"
            f"  mismatches               {cmp.mismatches} values, {cmp.prediction_mismatches} predictions "
            f"({compared})\n"
            f"  engine cycles            {result['cycles']} ({result['cycles_per_sample']:.0f} per sample"
            + (f", {passes} passes: weights reloaded between them" if passes > 1 else "") + ")\n"
            f"  simulation               {wall:.2f} s wall ({len(chunks)} launches, {jobs} at a time), "
            f"{sim_cycles} cycles incl. host I/O, {result['simulated_cycles_per_second'] or 0:,} cycles/s "
            f"per simulator" + (f" (+{build_seconds:.1f} s build)" if build_seconds else ""))
    if not cmp.ok:
        text += "\n" + cmp.summary()
    emit(args, result, text)
    return 0 if cmp.ok else 1
