"""``post-accel generate``: the engine's Verilog and its JSON manifest."""

from __future__ import annotations

from pathlib import Path

from flows.cliutil import (
    DEFAULT_OUT,
    add_common_flags,
    add_engine_flags,
    check_buildable,
    emit,
    engine_params,
    load_engine_model,
)
from golden.safeio import check_output_dir

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="write the engine's Verilog and a JSON manifest")
    p.add_argument("--model", help="size the engine for this exported model")
    add_engine_flags(p, with_defaults=False)
    p.add_argument("--out", default=str(DEFAULT_OUT / "rtl"), help="output directory")
    p.add_argument("--bus", choices=("native", "axi"), default="native",
                   help="host interface: native (the engine's ports, post_engine.v) or axi (AXI4-Lite control "
                        "and memories, AXI4-Stream loads and results, irq: post_engine_axi.v; docs/engine.md)")
    add_common_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from flows.generate import generate

    check_output_dir(args.out, "--out")                 # before loading, sizing or building anything
    check_buildable(args.rows, args.cols)
    model = None
    if args.model:
        model = load_engine_model(args.model)
    params = engine_params(args, model)
    if model is not None:                      # the model must fit before any Verilog is written
        from flows.compile import compile_graph
        compile_graph(model, params)
    manifest = generate(params, Path(args.out), model_path=args.model, bus=args.bus)
    result = {"verilog": manifest["verilog"], "top": manifest["top"], "manifest": manifest["manifest"], "rows": params.rows,
              "cols": params.cols, "wbits": params.wbits, "abits": params.abits,
              "acc_bits": params.acc_bits, "lut": manifest["lut"], "sha256": manifest["sha256"]}
    emit(args, result, f"wrote {manifest['verilog']} ({params.rows}x{params.cols} POST array, "
          f"W{params.wbits}A{params.abits}, {params.acc_bits}-bit accumulators) and {manifest['manifest']}")
    return 0
