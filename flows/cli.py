"""``post-accel``: train → export → generate → simulate, from the command line.

Every sub-command has ``--help`` and ``--json`` (one JSON object on stdout). Errors a user can
fix (bad widths, bad model files, missing tools) print one line ``post-accel: error: ...`` and
exit with status 2; a simulation that disagrees with the golden model exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from flows.argtypes import positive_int as _positive_int

__all__ = ["main", "build_parser"]

DEFAULT_OUT = Path("out")


class UserError(Exception):
    """An error caused by the user's input; reported in one line, no traceback."""


class _ExportFailed(UserError):
    """A zoo checkpoint that loaded but has no integer-graph form (reported as is, not as a v1 error)."""


def _emit(args, result: dict, text: str) -> None:
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(text)


# --- train -------------------------------------------------------------------

def _legacy_mlp(args) -> bool:
    """The engine-runnable path: the digits MLP with POST weights and LSQ activations (export v1)."""
    return args.model == "mlp" and args.weight_quant == "post" and args.act_quant == "lsq"


def cmd_train(args) -> int:
    if not _legacy_mlp(args):
        return _train_zoo(args)
    from golden.train import TrainConfig, save_checkpoint, train

    cfg = TrainConfig(seed=args.seed, wbits=args.wbits, abits=args.abits, hidden=tuple(args.hidden),
                      **({"epochs": args.epochs} if args.epochs is not None else {}))
    started = time.perf_counter()
    model, metrics = train(cfg, progress=not (args.json or args.quiet))
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, cfg, metrics, out)
    result = {"checkpoint": str(out), "seconds": round(seconds, 2), "wbits": cfg.wbits, "abits": cfg.abits,
              "seed": cfg.seed, "epochs": cfg.epochs, "model": "mlp", "weight_quant": "post",
              "act_quant": "lsq", **{k: v for k, v in metrics.items()}}
    _emit(args, result, f"trained W{cfg.wbits}A{cfg.abits} MLP {list(cfg.hidden)} in {seconds:.1f} s: "
          f"float QAT test accuracy {metrics['float_test_accuracy']:.4f} -> {out}")
    return 0


DIGITS_MODELS = ("mlp", "cnn", "resnet8")


def _train_zoo(args) -> int:
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    if args.model not in DIGITS_MODELS:
        raise UserError(f"train runs on the digits data set, so --model must be one of {', '.join(DIGITS_MODELS)} "
                        f"(got {args.model!r}; the ImageNet/CIFAR models are for perf and overhead)")
    kw = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.fp_epochs is not None:
        kw["fp_epochs"] = args.fp_epochs
    if args.edge_weight_quant is not None:
        kw["edge_weight_quant"] = args.edge_weight_quant
    if args.edge_act_quant is not None:
        kw["edge_act_quant"] = args.edge_act_quant
    spec = TrainSpec(model=args.model, wbits=args.wbits, abits=args.abits, weight_quant=args.weight_quant,
                     act_quant=args.act_quant, seed=args.seed, **kw)
    started = time.perf_counter()
    model, metrics = train_spec(spec, progress=not (args.json or args.quiet), integer=False)
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, spec, metrics, out)
    acc = metrics.get("float_test_accuracy")
    result = {"checkpoint": str(out), "seconds": round(seconds, 2), "model": args.model, "wbits": args.wbits,
              "abits": args.abits, "weight_quant": args.weight_quant, "act_quant": args.act_quant,
              "seed": args.seed, "epochs": spec.epochs, "float_test_accuracy": acc}
    _emit(args, result, f"trained {args.model} W{args.wbits}A{args.abits} ({args.weight_quant} weights, "
          f"{args.act_quant} activations) in {seconds:.1f} s: float QAT test accuracy {acc:.4f} -> {out}")
    return 0


# --- export ------------------------------------------------------------------

def _integer_accuracy(intmodel) -> tuple[float, int]:
    from golden import executor
    from golden.data import load_digits_split

    _, _, x_test, y_test = load_digits_split()
    run = executor.run(intmodel, executor.quantize_input(intmodel, x_test))
    return float((run.predictions == y_test).mean()), len(y_test)


def cmd_export(args) -> int:
    from golden.export import export_model
    from golden.intmodel import save_intmodel
    from golden.train import CheckpointError, load_checkpoint

    try:
        model, cfg, metrics = load_checkpoint(args.checkpoint)
    except CheckpointError as v1_error:
        if "no such file" in str(v1_error) or "not a readable" in str(v1_error):
            raise
        try:
            return _export_zoo(args)
        except _ExportFailed:
            raise
        except UserError:
            raise v1_error from None
    intmodel = export_model(model, cfg, metrics)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_intmodel(intmodel, out)
    int_acc, n = _integer_accuracy(intmodel)
    float_acc = metrics.get("float_test_accuracy")
    result = {"model": str(out), "layers": [l.name for l in intmodel.layers], "test_samples": n,
              "float_test_accuracy": float_acc, "integer_test_accuracy": int_acc}
    _emit(args, result, f"exported {len(intmodel.layers)} layers -> {out}\n"
          f"test accuracy: float QAT {float_acc:.4f}, integer executor {int_acc:.4f} ({n} samples)")
    return 0


def _export_zoo(args) -> int:
    """A zoo checkpoint (``train --model cnn/resnet8``, any quantizers) -> integer graph file: chains (the
    MLP and CNN) as export v2 (:func:`golden.intgraph.export_graph`), models with branches and residual
    adds (resnet8) as export v3 (:func:`golden.intdag.export_dag`)."""
    from golden.data import load_digits_split
    from golden.graphfile import DAG_VERSION, GRAPH_FORMAT, GRAPH_VERSION, save_graph
    from golden.intgraph import ExportError, export_graph, run_graph
    from golden.train_zoo import ZooCheckpointError, load_checkpoint
    from golden.zoo import DigitsCNN, DigitsMLP

    try:
        model, spec, metrics = load_checkpoint(args.checkpoint)
    except ZooCheckpointError as exc:
        raise UserError(str(exc)) from None
    chain = isinstance(model, (DigitsCNN, DigitsMLP))
    try:
        if chain:
            graph = export_graph(model)
        else:
            from golden.intdag import export_dag
            graph = export_dag(model)
    except ExportError as exc:
        raise _ExportFailed(f"{args.checkpoint}: cannot export {spec.model!r} ({spec.weight_quant} weights, "
                            f"{spec.act_quant} activations) to an integer graph: {exc}") from None
    version = GRAPH_VERSION if chain else DAG_VERSION
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_graph(graph, out, provenance={"spec": spec.to_dict(), "metrics": metrics})
    _, _, x_test, y_test = load_digits_split()
    int_acc = float((run_graph(graph, x_test).predictions == y_test).mean())
    float_acc = metrics.get("float_test_accuracy")
    result = {"model": str(out), "format": GRAPH_FORMAT, "version": version,
              "layers": [st.name for st in graph.stages], "test_samples": int(len(y_test)),
              "float_test_accuracy": float_acc, "integer_test_accuracy": int_acc}
    if not chain:
        result["output"] = graph.output
    kind = f"integer graph v{version}" + ("" if chain else f", a DAG with output {graph.output}")
    _emit(args, result, f"exported {len(graph.stages)} stages ({kind}) -> {out}\n"
          f"test accuracy: float QAT {float_acc:.4f}, integer executor {int_acc:.4f} ({len(y_test)} samples)")
    return 0


# --- generate ----------------------------------------------------------------

ENGINE_FLAGS = ("wbits", "abits", "frac_bits", "max_fan_in", "act_words", "weight_words", "chan_words",
                "result_words", "max_layers", "value_words", "adapter_words", "max_channels", "res_words",
                "value_bits")


def _load_engine_model(path):
    """An exported model for the engine: ``("v1", IntModel)``, ``("v2", IntGraph)`` (a chain) or
    ``("v3", IntGraph)`` (a DAG: branches, residual adds)."""
    from golden.intmodel import ModelFileError, load_intmodel

    try:
        return "v1", load_intmodel(path)
    except ModelFileError as v1_error:
        from golden.graphfile import load_graph
        try:
            graph = load_graph(path)
        except ModelFileError as v2_error:
            if "is an integer graph" in str(v1_error) or ("format" in str(v1_error)
                                                          and "format" not in str(v2_error)):
                raise v2_error from None                 # a graph file (v2/v3) that is damaged
            raise v1_error from None
        return ("v3" if getattr(graph, "kind", "chain") == "dag" else "v2"), graph


def _engine_params(args, model=None):
    from hw.program import EngineParams

    given = {k: getattr(args, k) for k in ENGINE_FLAGS if getattr(args, k, None) is not None}
    if model is not None:
        from flows.compile import engine_params_for, engine_params_for_graph
        from golden.intmodel import IntModel
        base = (engine_params_for(model, args.rows, args.cols) if isinstance(model, IntModel)
                else engine_params_for_graph(model, args.rows, args.cols))
        fields = {k: getattr(base, k) for k in ("rows", "cols") + ENGINE_FLAGS}
        fields.update(given)
        return EngineParams(**fields)
    return EngineParams(rows=args.rows, cols=args.cols, **given)


def cmd_generate(args) -> int:
    from flows.generate import generate

    model = None
    if args.model:
        _, model = _load_engine_model(args.model)
    params = _engine_params(args, model)
    if model is not None:                      # the model must fit before any Verilog is written
        from flows.compile import compile_graph, compile_model
        from golden.intmodel import IntModel
        (compile_model if isinstance(model, IntModel) else compile_graph)(model, params)
    manifest = generate(params, Path(args.out), model_path=args.model, bus=args.bus)
    result = {"verilog": manifest["verilog"], "top": manifest["top"], "manifest": manifest["manifest"], "rows": params.rows,
              "cols": params.cols, "wbits": params.wbits, "abits": params.abits,
              "acc_bits": params.acc_bits, "lut": manifest["lut"], "sha256": manifest["sha256"]}
    _emit(args, result, f"wrote {manifest['verilog']} ({params.rows}x{params.cols} POST array, "
          f"W{params.wbits}A{params.abits}, {params.acc_bits}-bit accumulators) and {manifest['manifest']}")
    return 0


# --- simulate ----------------------------------------------------------------

def _dag_expected(graph, program, golden, n: int):
    """What every engine layer of a DAG program (export v3) must output, from the integer graph's run
    (:func:`flows.compile.expected_outputs`), and the input codes/betas of the stage reading the
    network input. Returns ``(input codes, input betas, expected per engine layer, engine layer names)``."""
    import numpy as np

    from flows.compile import expected_outputs

    expected = expected_outputs(graph, program, golden)
    i = next(k for k, st in enumerate(graph.stages) if st.input_from == "input")
    x_codes = np.asarray(golden.codes[i]).reshape(n, -1)
    betas = golden.betas[i] if program.needs_beta else None
    return x_codes, betas, expected, [layer.name for layer in program.layers]


def _model_summary(version: str, model, names) -> str:
    """One line of the simulate report: the model file's format and how it maps to engine layers."""
    if version == "v1":
        return f"v1 MLP, {len(names)} engine layers"
    stages = len(model.stages)
    if version == "v2":
        return f"v2 integer graph, {stages} stages = {len(names)} engine layers"
    copies = [n for n in names if "~" in n]
    extra = f" (copies for consumers with their own quantizers: {', '.join(copies)})" if copies else ""
    return f"v3 DAG integer graph, {stages} stages -> {len(names)} engine layers{extra}, output {model.output}"


def cmd_simulate(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from flows.compile import compile_graph, compile_model, expected_outputs
    from golden.data import load_digits_split
    from sim.compare import compare_outputs

    version, model = _load_engine_model(args.model)
    params = _engine_params(args, model)
    _, _, x_test, y_test = load_digits_split()
    n = len(y_test) if args.samples is None else args.samples
    if not 1 <= n <= len(y_test):
        raise UserError(f"--samples must be in 1..{len(y_test)} (the digits test set), got {n}")
    labels = y_test[:n]
    if version == "v1":
        from golden import executor
        program = compile_model(model, params)
        x_codes = executor.quantize_input(model, x_test[:n])
        golden = executor.run(model, x_codes)
        expected = golden.activations[1:] + [golden.logits]
        golden_pred, betas, names = golden.predictions, None, [l.name for l in model.layers]
    elif version == "v2":
        from golden.intgraph import run_graph
        program = compile_graph(model, params)           # every layer checked before simulating
        golden = run_graph(model, x_test[:n])
        x_codes = golden.codes[0].reshape(n, -1)
        betas = golden.betas[0]
        expected = expected_outputs(model, program, golden)
        golden_pred, names = golden.predictions, [st.name for st in model.stages]
    else:
        from golden.intgraph import run_graph
        program = compile_graph(model, params)           # every engine layer checked before simulating
        golden = run_graph(model, x_test[:n])
        x_codes, betas, expected, names = _dag_expected(model, program, golden, n)
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
        "golden_accuracy": float((golden_pred == labels).mean()), "model_format": version,
        "layers": names, "engine_layers": len(names),
        "stages": None if version == "v1" else [st.name for st in model.stages], "waves": args.waves,
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
            f"  model                    {_model_summary(version, model, names)}\n"
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
    _emit(args, result, text)
    return 0 if cmp.ok else 1


# --- parser ------------------------------------------------------------------

def _add_engine_flags(p, with_defaults: bool) -> None:
    p.add_argument("--rows", type=_positive_int, default=4, help="array rows = input lanes (default 4)")
    p.add_argument("--cols", type=_positive_int, default=4, help="array columns = output lanes (default 4)")
    d = (lambda v: v) if with_defaults else (lambda v: None)
    p.add_argument("--wbits", type=int, default=d(4), help="POST weight code bits, 2..8")
    p.add_argument("--abits", type=int, default=d(4), help="activation code bits, 2..8")
    p.add_argument("--frac-bits", type=int, default=None, help="product fraction bits (default 8)")
    p.add_argument("--max-fan-in", type=_positive_int, default=None, help="largest fan-in (accumulator width)")
    p.add_argument("--act-words", type=_positive_int, default=None, help="depth of each activation bank")
    p.add_argument("--weight-words", type=_positive_int, default=None, help="depth of the weight memory")
    p.add_argument("--chan-words", type=_positive_int, default=None,
                   help="depth of the per-channel rescale parameter memory")
    p.add_argument("--value-words", type=_positive_int, default=None,
                   help="depth of the value buffer (one layer's pixels x channels before pooling)")
    p.add_argument("--adapter-words", type=_positive_int, default=None, help="depth of the ASQ adapter memory")
    p.add_argument("--max-channels", type=_positive_int, default=None,
                   help="largest ASQ layer width (channel-sum memory depth)")
    p.add_argument("--res-words", type=_positive_int, default=None,
                   help="depth of the residual memory (the values one layer keeps for a later residual add)")
    p.add_argument("--result-words", type=_positive_int, default=None, help="depth of the result memory")
    p.add_argument("--max-layers", type=_positive_int, default=None, help="layer descriptor slots")
    p.add_argument("--value-bits", type=_positive_int, default=None,
                   help="signed width of the pre-quantization values (value buffer, residual and result "
                        "memories), 16..48 (default: what the model needs, at least 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="post-accel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--json", action="store_true", help="print one JSON object of results")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train", help="QAT on the digits (MLP, CNN or ResNet-8, any weight/activation quantizer)")
    p.add_argument("--model", default="mlp",
                   help="digits model: mlp (default), cnn, or resnet8 (a ResNet-8 with residual adds; "
                        "`export` writes it as a v3 DAG integer graph)")
    p.add_argument("--weight-quant", default="post",
                   help="weight quantizer: post (default), pot, apot, uniform, qil, fp")
    p.add_argument("--act-quant", default="lsq", help="activation quantizer: lsq (default), asq, qil, fp")
    p.add_argument("--wbits", type=int, default=4, help="hidden-layer weight bits (default 4)")
    p.add_argument("--abits", type=int, default=4, help="hidden-layer activation bits (default 4)")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[64, 32], help="hidden layer sizes")
    p.add_argument("--epochs", type=_positive_int, default=None, help="QAT epochs (default: the config's)")
    p.add_argument("--fp-epochs", type=int, default=None,
                   help="float pre-training epochs before QAT (zoo models only; default: the spec's)")
    p.add_argument("--edge-weight-quant", default=None,
                   help="weight quantizer of the 8-bit first and last layers (zoo models; default uniform; "
                        "post makes every layer runnable on the POST engine)")
    p.add_argument("--edge-act-quant", default=None,
                   help="activation quantizer of the first and last layers (zoo models; default lsq)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT / "checkpoint.safetensors"))
    common(p)
    p.set_defaults(func=cmd_train)

    export_help = ("trained checkpoint -> integer model (safetensors + JSON metadata; v1 for the engine's MLP, "
                   "v2 integer graph for the other chains (cnn), v3 DAG integer graph for resnet8)")
    p = sub.add_parser("export", help=export_help, description=export_help)
    p.add_argument("checkpoint", help="checkpoint written by `post-accel train`")
    p.add_argument("--out", default=str(DEFAULT_OUT / "model.safetensors"))
    common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="write the engine's Verilog and a JSON manifest")
    p.add_argument("--model", help="size the engine for this exported model")
    _add_engine_flags(p, with_defaults=False)
    p.add_argument("--out", default=str(DEFAULT_OUT / "rtl"), help="output directory")
    p.add_argument("--bus", choices=("native", "axi"), default="native",
                   help="host interface: native (the engine's ports, post_engine.v) or axi (AXI4-Lite control "
                        "and memories, AXI4-Stream loads and results, irq: post_engine_axi.v; docs/engine.md)")
    common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("simulate", help="run the digits test set through the RTL and compare with golden")
    p.add_argument("model", help="integer model written by `post-accel export` (v1, v2 or v3)")
    p.add_argument("--backend", choices=("amaranth", "icarus", "verilator"), default="verilator")
    _add_engine_flags(p, with_defaults=False)
    p.add_argument("--samples", type=_positive_int, default=None, help="first N test samples (default: all)")
    p.add_argument("--chunk", type=_positive_int, default=None,
                   help="samples per simulator launch (default: the samples split evenly over --jobs)")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="simulator processes run in parallel (Icarus/Verilator; default: the CPU count)")
    p.add_argument("--waves", default=None, metavar="FILE",
                   help="also dump every signal of one sample (the first) to FILE (.vcd, or .fst on "
                        "Icarus/Verilator)")
    p.add_argument("--report", action="store_true", help="print the human report (default unless --json)")
    common(p)
    p.set_defaults(func=cmd_simulate)

    from flows import overhead_cmd
    overhead_cmd.add_parser(sub)
    from flows import levels_cmd
    levels_cmd.add_parser(sub)
    from flows import perf_cmd
    perf_cmd.add_parser(sub)
    from flows import synth
    synth.add_parser(sub)
    from flows import ablate_cmd
    ablate_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from golden.arith import ArithError
    from golden.intmodel import ModelFileError
    user_errors: tuple = (UserError, ArithError, ModelFileError, ValueError, FileNotFoundError, IsADirectoryError,
                          PermissionError)
    from flows.synth import ToolMissing as SynthToolMissing
    user_errors += (SynthToolMissing,)
    try:
        from sim.rtl import SimulationError, ToolMissing
        user_errors += (ToolMissing,)
        sim_errors: tuple = (SimulationError,)
    except ImportError:
        sim_errors = ()
    if os.environ.get("POST_ACCEL_DEBUG"):
        return args.func(args)          # full tracebacks for developers
    try:
        return args.func(args)
    except user_errors as exc:
        print(f"post-accel: error: {exc}", file=sys.stderr)
        return 2
    except sim_errors as exc:
        print(f"post-accel: simulation error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("post-accel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
