"""``post-accel export``: a trained checkpoint -> an integer model file."""

from __future__ import annotations

from pathlib import Path

from flows.cliutil import DEFAULT_OUT, UserError, add_common_flags, emit, metadata_keys
from golden.safeio import atomic_output, check_input_file, check_output_path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    export_help = ("trained checkpoint -> integer model (safetensors + JSON metadata; v1 for the engine's MLP, "
                   "v2 integer graph for the other chains (cnn), v3 DAG integer graph for resnet8)")
    p = sub.add_parser("export", help=export_help, description=export_help)
    p.add_argument("checkpoint", help="checkpoint written by `post-accel train`")
    p.add_argument("--out", default=str(DEFAULT_OUT / "model.safetensors"))
    add_common_flags(p)
    p.set_defaults(func=run)


def _integer_accuracy(intmodel) -> tuple[float, int]:
    from golden import executor
    from golden.data import load_digits_split

    _, _, x_test, y_test = load_digits_split()
    run = executor.run(intmodel, executor.quantize_input(intmodel, x_test))
    return float((run.predictions == y_test).mean()), len(y_test)


def run(args) -> int:
    from golden.train_zoo import CHECKPOINT_KEY as ZOO_KEY

    out = check_output_path(args.out, "--out")           # before any loading or exporting
    check_input_file(args.checkpoint, "checkpoint")
    keys = metadata_keys(args.checkpoint)
    if "post_accel" in keys:
        raise UserError(f"{args.checkpoint}: this is an exported model file, not a training checkpoint; "
                        f"simulate it with `post-accel simulate {args.checkpoint}`")
    if ZOO_KEY in keys:       # a zoo checkpoint: its loader's reason, never v1's
        return _export_zoo(args)
    from golden.export import export_model
    from golden.intmodel import save_intmodel
    from golden.train import load_checkpoint

    model, cfg, metrics = load_checkpoint(args.checkpoint)
    intmodel = export_model(model, cfg, metrics)
    with atomic_output(out, "--out") as tmp:
        save_intmodel(intmodel, tmp)
    int_acc, n = _integer_accuracy(intmodel)
    float_acc = metrics.get("float_test_accuracy")
    result = {"model": str(out), "layers": [l.name for l in intmodel.layers], "test_samples": n,
              "float_test_accuracy": float_acc, "integer_test_accuracy": int_acc}
    emit(args, result, f"exported {len(intmodel.layers)} layers -> {out}\n"
          f"test accuracy: float QAT {float_acc:.4f}, integer executor {int_acc:.4f} ({n} samples)")
    return 0


def _export_zoo(args) -> int:
    """A zoo checkpoint (``train --model cnn/resnet8``, any quantizers) -> integer graph file: chains (the
    MLP and CNN) as export v2 (:func:`golden.intgraph.export_graph`), models with branches and residual
    adds (resnet8) as export v3 (:func:`golden.intdag.export_dag`)."""
    from golden.data import load_dataset
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
        raise UserError(f"{args.checkpoint}: cannot export {spec.model!r} ({spec.weight_quant} weights, "
                            f"{spec.act_quant} activations) to an integer graph: {exc}") from None
    version = GRAPH_VERSION if chain else DAG_VERSION
    out = Path(args.out)
    save_graph(graph, out, provenance={"spec": spec.to_dict(), "metrics": metrics, "data": spec.data}, what="--out")
    _, _, x_test, y_test = load_dataset(spec.data).split()
    int_acc = float((run_graph(graph, x_test).predictions == y_test).mean())
    float_acc = metrics.get("float_test_accuracy")
    result = {"model": str(out), "format": GRAPH_FORMAT, "version": version,
              "layers": [st.name for st in graph.stages], "test_samples": int(len(y_test)),
              "float_test_accuracy": float_acc, "integer_test_accuracy": int_acc, "data": spec.data}
    if not chain:
        result["output"] = graph.output
    kind = f"integer graph v{version}" + ("" if chain else f", a DAG with output {graph.output}")
    emit(args, result, f"exported {len(graph.stages)} stages ({kind}) -> {out}\n"
          f"test accuracy: float QAT {float_acc:.4f}, integer executor {int_acc:.4f} ({len(y_test)} {spec.data} "
          f"samples)")
    return 0
