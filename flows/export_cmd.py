"""``post-accel export``: a trained checkpoint -> the integer model file (the one format)."""

from __future__ import annotations


from flows.cliutil import DEFAULT_OUT, UserError, add_common_flags, emit, metadata_keys
from golden.safeio import check_input_file, check_output_path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    export_help = ("trained checkpoint (`post-accel train`) -> integer model file: the integer graph of every "
                   "digits model (mlp, cnn, resnet8; safetensors + JSON header, format tag post-accel-intgraph v4, "
                   "docs/export.md)")
    p = sub.add_parser("export", help=export_help, description=export_help)
    p.add_argument("checkpoint", help="checkpoint written by `post-accel train`")
    p.add_argument("--out", default=str(DEFAULT_OUT / "model.safetensors"))
    add_common_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from golden.data import load_dataset
    from golden.graphfile import save_graph
    from golden.intdag import export_dag, predict
    from golden.intgraph import ExportError
    from golden.modelfile import MODEL_FORMAT, MODEL_VERSION
    from golden.train_zoo import CHECKPOINT_KEY, load_checkpoint

    out = check_output_path(args.out, "--out")           # before any loading or exporting
    check_input_file(args.checkpoint, "checkpoint")
    keys = metadata_keys(args.checkpoint)
    if "post_accel" in keys:
        raise UserError(f"{args.checkpoint}: this is an exported model file, not a training checkpoint; "
                        f"simulate it with `post-accel simulate {args.checkpoint}`")
    if "post_accel_checkpoint" in keys and CHECKPOINT_KEY not in keys:
        raise UserError(f"{args.checkpoint}: a training checkpoint of an earlier post-accel (the version-1 MLP "
                        f"trainer); retrain it with `post-accel train`")
    model, spec, metrics = load_checkpoint(args.checkpoint)      # ZooCheckpointError: its own reason, exit 2
    try:
        graph = export_dag(model)
    except ExportError as exc:
        raise UserError(f"{args.checkpoint}: cannot export {spec.model!r} ({spec.weight_quant} weights, "
                        f"{spec.act_quant} activations) to an integer graph: {exc}") from None
    save_graph(graph, out, provenance={"spec": spec.to_dict(), "metrics": metrics, "data": spec.data}, what="--out")
    _, _, x_test, y_test = load_dataset(spec.data).split()
    int_acc = float((predict(graph, x_test) == y_test).mean())
    float_acc = metrics.get("float_test_accuracy")
    result = {"model": str(out), "format": MODEL_FORMAT, "version": MODEL_VERSION,
              "layers": [st.name for st in graph.stages], "output": graph.output, "test_samples": int(len(y_test)),
              "float_test_accuracy": float_acc, "integer_test_accuracy": int_acc, "data": spec.data}
    emit(args, result, f"exported {len(graph.stages)} stages ({MODEL_FORMAT} v{MODEL_VERSION}, output "
          f"{graph.output}) -> {out}\n"
          f"test accuracy: float QAT {float_acc:.4f}, integer executor {int_acc:.4f} ({len(y_test)} {spec.data} "
          f"samples)")
    return 0
