"""``post-accel betas``: the distribution of the ASQ factor ``beta`` per ASQ quantizer of a trained model
over a test set (from the integer executor, i.e. the betas the RTL is fed)."""

from __future__ import annotations

import os

from flows.cliutil import UserError, add_common_flags, emit, load_engine_model, positive_int

__all__ = ["add_parser", "run", "load_graph_any", "betas_of"]


def add_parser(sub) -> None:
    p = sub.add_parser("betas", help="distribution of the ASQ factor beta per ASQ quantizer over a test set")
    p.add_argument("model", help="a training checkpoint (`post-accel train`) or an exported model file (`post-accel export`)")
    p.add_argument("--data", default=None, choices=("digits", "fashion-mnist"),
                   help="test set (default: the one the model was trained on; another is refused)")
    p.add_argument("--samples", type=positive_int, default=None, help="first N test samples (default: all)")
    add_common_flags(p)
    p.set_defaults(func=run)


def load_graph_any(path):
    """``(integer graph, data set name or None)`` of a zoo checkpoint (exported here) or an exported model file."""
    from golden.data import model_dataset
    from golden.intdag import export_dag
    from golden.intgraph import ExportError
    from golden.train_zoo import CHECKPOINT_KEY, ZooCheckpointError, load_checkpoint

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise UserError(f"{p}: no such file; pass a checkpoint (post-accel train) or a model (post-accel export)")
    if _has_metadata_key(p, CHECKPOINT_KEY):
        try:
            model, spec, _ = load_checkpoint(p)
        except ZooCheckpointError as exc:
            raise UserError(str(exc)) from None
        try:
            graph = export_dag(model)
        except ExportError as exc:
            raise UserError(f"{p}: cannot export {spec.model!r} to an integer graph: {exc}") from None
        return graph, spec.data
    graph = load_engine_model(p)
    return graph, model_dataset(graph.provenance, graph.input_shape)


def _has_metadata_key(path: str, key: str) -> bool:
    from safetensors import safe_open
    try:
        with safe_open(path, framework="np") as f:
            return key in (f.metadata() or {})
    except Exception:           # noqa: BLE001 - not a safetensors file: the model loader reports it
        return False


def betas_of(graph, X) -> list[dict]:
    """:func:`golden.betas.beta_report` of ``graph`` run on the inputs ``X``."""
    from golden.betas import beta_report
    from golden.intdag import run_graph

    run = run_graph(graph, X)
    return beta_report([st.name for st in graph.stages], run.betas)


def run(args) -> int:
    from golden.data import check_model_dataset, load_dataset

    graph, model_data = load_graph_any(args.model)
    data = check_model_dataset(model_data, args.data, args.model)
    _, _, x_test, _ = load_dataset(data, test_samples=args.samples).split()
    report = betas_of(graph, x_test)
    if not report:
        raise UserError(f"{args.model}: the model has no ASQ activation quantizer (train it with --act-quant asq)")
    result = {"model": args.model, "data": data, "samples": int(len(x_test)), "quantizers": report}
    lines = [f"ASQ factor beta per quantizer over {len(x_test)} {data} test samples ({args.model}):"]
    for q in report:
        hist = ", ".join(f"{h['beta']:.4f} x{h['count']}" for h in q["histogram"])
        lines.append(f"  {q['stage']:<16} {q['distinct']:>3} distinct (most common {100 * q['top_share']:.1f} %): "
                     f"{hist}")
    emit(args, result, "\n".join(lines))
    return 0
