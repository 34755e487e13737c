"""``post-accel simulate``: a test set (digits, or Fashion-MNIST with ``--data``) through the generated RTL,
compared with the golden model layer by layer (exit status 1 on any mismatch)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from flows.cliutil import (
    UserError,
    add_common_flags,
    add_engine_flags,
    check_buildable,
    emit,
    engine_params,
    load_engine_model,
    positive_int,
)
from golden.safeio import check_output_path
from golden.modelfile import MODEL_FORMAT_NAME

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a test set through the RTL and compare with golden")
    p.add_argument("model", help="integer model written by `post-accel export` (the one format, docs/export.md)")
    p.add_argument("--data", default=None, choices=("digits", "fashion-mnist"),
                   help="test set to run (default: the one the model was trained on; another is refused)")
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
    p.add_argument("--build-dir", default=None, metavar="DIR",
                   help="simulator builds and run folders (default: $XDG_CACHE_HOME/post-accel/sim or "
                        "~/.cache/post-accel/sim)")
    p.add_argument("--report", action="store_true", help="print the human report (default unless --json)")
    add_common_flags(p)
    p.set_defaults(func=run)


def _check_waves(args):
    """Check ``--waves`` before simulating: its suffix, and a writable regular-file target. Returns the
    target's ``(mtime_ns, size)`` if it exists (to tell a fresh dump from a stale file), else None."""
    if args.waves is None:
        return None
    if args.backend == "amaranth" and not args.waves.endswith(".vcd"):
        raise UserError(f"--waves {args.waves}: Amaranth's simulator writes VCD only; name the file *.vcd")
    if not args.waves.endswith((".vcd", ".fst")):
        raise UserError(f"--waves {args.waves}: name the waveform file *.vcd or *.fst")
    path = check_output_path(args.waves, "--waves")
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _check_waves_written(waves: str, before) -> None:
    """The simulator reports success even when it could not open the dump file: check that it wrote one."""
    path = Path(waves)
    if not path.is_file() or path.stat().st_size == 0 or (path.stat().st_mtime_ns, path.stat().st_size) == before:
        raise UserError(f"--waves {waves}: the simulator wrote no waveform there (the results above were "
                        f"compared, but no dump exists); check the path and free space")


def _expectations(graph, program, golden, n: int):
    """What every engine layer must output, from the integer graph's run (:func:`flows.compile.expected_outputs`),
    and the input codes/betas of the stage reading the network input. Returns ``(input codes, input betas,
    expected per engine layer, engine layer names)``."""
    import numpy as np

    from flows.compile import expected_outputs

    expected = expected_outputs(graph, program, golden)
    first = next(k for k, st in enumerate(graph.stages) if st.input_from == "input")
    x_codes = np.asarray(golden.codes[first]).reshape(n, -1)
    betas = golden.betas[first] if program.needs_beta else None
    return x_codes, betas, expected, [layer.name for layer in program.layers]


def _model_summary(model, names) -> str:
    """One line of the simulate report: the model file's format and how it maps to engine layers."""
    copies = [n for n in names if "~" in n]
    extra = f" (copies for consumers with their own quantizers: {', '.join(copies)})" if copies else ""
    return (f"{MODEL_FORMAT_NAME} integer graph, {len(model.stages)} stages -> {len(names)} engine layers{extra}, "
            f"output {model.output}")


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from flows.compile import compile_graph
    from golden.data import check_model_dataset, load_dataset, model_dataset
    from golden.intdag import run_graph
    from sim.compare import compare_outputs

    check_buildable(args.rows, args.cols)
    waves_before = _check_waves(args)                    # before any simulation, not after it
    model = load_engine_model(args.model)
    data = check_model_dataset(model_dataset(model.provenance, model.input_shape), args.data, args.model)
    params = engine_params(args, model)
    _, _, x_test, y_test = load_dataset(data).split()
    n = len(y_test) if args.samples is None else args.samples
    if not 1 <= n <= len(y_test):
        raise UserError(f"--samples must be in 1..{len(y_test)} (the {data} test set), got {n}")
    labels = y_test[:n]
    program = compile_graph(model, params)               # every engine layer checked before simulating
    golden = run_graph(model, x_test[:n])
    x_codes, betas, expected, names = _expectations(model, program, golden, n)   # the golden model's values
    golden_pred = golden.predictions

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
        from sim.rtl import check_backend, engine_verilog_cached, ensure_built, run_rtl, run_rtl_chunks
        check_backend(args.backend)
        verilog = engine_verilog_cached(params, args.build_dir)   # generated once, shared by every launch
        runner = lambda chunk, b, waves=None: run_rtl(program, chunk, backend=args.backend, betas=b,  # noqa: E731
                                                      waves=waves, verilog=verilog, cache_dir=args.build_dir)

    outputs, cycles, seconds, sim_cycles, build_seconds = [], [], 0.0, 0, 0.0
    bar = tqdm(total=n, desc=f"simulate ({args.backend})", unit="sample", disable=args.json or args.quiet,
               file=sys.stderr)
    wall = time.perf_counter()
    if jobs > 1 and len(chunks) > 1:
        # one simulator process per chunk, `jobs` at a time (the build is made once, under a lock)
        build_seconds += ensure_built(params, args.backend, verilog, cache_dir=args.build_dir)
        runs = run_rtl_chunks(program, chunks, chunk_betas, backend=args.backend, jobs=jobs, verilog=verilog,
                              cache_dir=args.build_dir, on_done=bar.update)
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

    if args.waves is not None:                          # one sample with every signal dumped
        runner(x_codes[:1], None if betas is None else betas[:1], waves=args.waves)
        _check_waves_written(args.waves, waves_before)
    cmp = compare_outputs(expected, outputs, names)
    rtl_pred = np.array([int(np.argmax(o[-1])) for o in outputs])
    result = {
        "backend": args.backend, "data": data, "samples": n, "mismatches": cmp.mismatches,
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
    text = (f"post-accel simulate: {n} {data} test samples on {args.backend}, "
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
