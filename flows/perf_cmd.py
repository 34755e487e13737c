"""``post-accel perf``: predicted cycles, utilisation and memory traffic of a model on the engine."""

from __future__ import annotations

import json
import os

from flows.cliutil import UserError

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="cycle model: per-layer and total cycles, utilisation, latency")
    p.add_argument("--model", required=True,
                   help="a zoo model (mlp, cnn, resnet8, resnet18, resnet34, resnet20, mobilenetv2) or an exported "
                        "model file (`post-accel export`)")
    p.add_argument("--rows", type=int, default=4, help="array rows R (default 4)")
    p.add_argument("--cols", type=int, default=4, help="array columns C (default 4)")
    p.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the latency figure (default 100)")
    p.add_argument("--input-size", type=int, default=None, help="input height = width (default: the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="(no progress bar to hide; accepted for symmetry)")
    p.set_defaults(func=run)


def run(args) -> int:
    from sim.cycle_model import model_perf, shapes_for_model, shapes_from_file

    if args.rows < 1 or args.cols < 1:
        raise UserError(f"--rows and --cols must be >= 1, got {args.rows}x{args.cols}")
    if args.input_size is not None and args.input_size < 1:
        raise UserError(f"--input-size must be >= 1, got {args.input_size}")
    if os.path.exists(args.model) or os.sep in args.model or args.model.endswith(".safetensors"):
        shapes, unmodelled = shapes_from_file(args.model)
    else:
        try:
            shapes, unmodelled = shapes_for_model(args.model, args.input_size)
        except ValueError as exc:                     # an unknown model name: a user error, not a bug
            if isinstance(exc, UserError):
                raise
            raise UserError(f"--model {str(exc).splitlines()[0]}") from None
    result = model_perf(shapes, args.rows, args.cols, args.clock_mhz, unmodelled)
    result["model"] = args.model
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{args.model} on a {args.rows}x{args.cols} POST array at {args.clock_mhz:g} MHz")
    print(f"{'layer':<28} {'kind':<6} {'cycles':>12} {'util':>6} {'n_it':>6} {'n_ot':>5} {'pixels':>7}")
    for l in result["layers"]:
        mark = "" if l["rtl_checked"] else " *"
        print(f"{l['name'][:28]:<28} {l['kind']:<6} {l['cycles']:>12,} {l['utilisation']:>6.1%} "
              f"{l['n_it']:>6} {l['n_ot']:>5} {l['n_pix']:>7}{mark}")
    print(f"total {result['total_cycles']:,} cycles, utilisation {result['utilisation']:.1%} of the "
          f"{args.rows * args.cols} MAC/cycle peak, latency {result['latency_us']:,.1f} us")
    if any(not l["rtl_checked"] for l in result["layers"]):
        print("* grouped (depthwise) convolution: modelled group by group, a schedule the engine does not "
              "run yet (docs/cycle_model.md)")
    if unmodelled:
        print("not counted: " + ", ".join(f"{k} x{v}" for k, v in sorted(unmodelled.items())))
    return 0
